"""How the gateway plugs in the social insurance back end: its row's wiring function.

``wire_backend`` takes the ``[backends.social_insurance]`` settings group: with a ``url``, a
client of that back end; without one, the reference server first, in-process on 127.0.0.1.
The one client implements two ports, the card registry (CR01) and the insurance back end
(1101).
"""

from __future__ import annotations

import contextlib

from adapters.social_insurance.client import SocialInsuranceClient
from adapters.social_insurance.reference import start_reference_server
from gateway.config import BackendSettings, ConfigError
from gateway.ports import CARD_REGISTRY, INSURANCE_BACKEND, Provided, WiredBackend

NAME = "social_insurance"


async def wire_backend(settings: BackendSettings) -> WiredBackend:
    """Start what the back end needs; on failure, stop what was started and raise."""
    if settings.credentials:
        raise ConfigError(
            f"backends.{NAME}.credentials: this back end takes none "
            f"(given: {', '.join(sorted(settings.credentials))})"
        )
    if settings.sources or settings.options:
        raise ConfigError(
            f"backends.{NAME}: this back end takes one url, no sources or options "
            f"(given: {', '.join(sorted({*settings.sources, *settings.options}))})"
        )
    async with contextlib.AsyncExitStack() as started:
        url = settings.url
        if url is None:
            reference = await start_reference_server()
            started.push_async_callback(reference.close)
            url = reference.url
        client = SocialInsuranceClient(url)
        started.push_async_callback(client.close)  # closed before the reference server
        close = started.pop_all().aclose
    return WiredBackend(
        provides=(Provided(CARD_REGISTRY, client), Provided(INSURANCE_BACKEND, client)),
        close=close,
        url=url,
    )
