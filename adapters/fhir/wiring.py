"""How the gateway plugs in health records over FHIR R4: its row's wiring function.

``wire_backend`` takes the ``[backends.fhir]`` settings group:

- ``url``: a FHIR server's base URL (e.g. ``https://exchange.example/fhir``), the source named
  ``main``; ``sources``: further servers by name (``hospital_a = "https://..."``); records from
  all of them are merged. Neither: the reference server, in-process on 127.0.0.1, as source
  ``reference``.
- ``options.identifier_system``: the identifier system under which the servers know a patient
  by resident ID number (default ``seed.IDENTIFIER_SYSTEM``); ``options.page_size`` and
  ``options.max_pages``: how the adapter pages (defaults 50 and 20).
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

from adapters.fhir.client import SOURCE_NAME, FhirClient, Source
from adapters.fhir.reference import start_reference_fhir_server
from adapters.fhir.seed import IDENTIFIER_SYSTEM
from gateway.config import BackendSettings, ConfigError
from gateway.ports import HEALTH_RECORDS, Provided, WiredBackend

NAME = "fhir"
_OPTIONS = ("identifier_system", "page_size", "max_pages")


async def wire_backend(settings: BackendSettings) -> WiredBackend:
    """Start what the back end needs; on failure, stop what was started and raise."""
    if settings.credentials:
        raise ConfigError(
            f"backends.{NAME}.credentials: this back end takes none "
            f"(given: {', '.join(sorted(settings.credentials))})"
        )
    if unknown := sorted(set(settings.options) - set(_OPTIONS)):
        raise ConfigError(
            f"backends.{NAME}.options.{unknown[0]}: no such option (known: {', '.join(_OPTIONS)})"
        )
    page_size = _positive(settings, "page_size", 50, 1000)
    max_pages = _positive(settings, "max_pages", 20, 1000)
    sources = _sources(settings)
    async with contextlib.AsyncExitStack() as started:
        if not sources:
            reference = await start_reference_fhir_server()
            started.push_async_callback(reference.close)
            sources = [Source("reference", reference.url)]
        client = FhirClient(
            sources,
            identifier_system=settings.options.get("identifier_system", IDENTIFIER_SYSTEM),
            page_size=page_size,
            max_pages=max_pages,
        )
        started.push_async_callback(client.close)  # closed before the reference server
        close = started.pop_all().aclose
    return WiredBackend(
        provides=(Provided(HEALTH_RECORDS, client),),
        close=close,
        url=" ".join(s.base_url for s in sources),
    )


def _sources(settings: BackendSettings) -> list[Source]:
    named = ({"main": settings.url} if settings.url else {}) | settings.sources
    if settings.url and "main" in settings.sources:
        raise ConfigError(
            f"backends.{NAME}.sources.main: 'main' is the name of backends.{NAME}.url"
        )
    sources = []
    for name, url in named.items():
        if not SOURCE_NAME.match(name):
            raise ConfigError(
                f"backends.{NAME}.sources.{name}: a source name is 1 to 32 of a-z, 0-9, _ and -"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError(
                f"backends.{NAME} source {name}: {url!r} is not a FHIR base URL "
                "(http or https, a host, no query), e.g. https://fhir.example.org/fhir"
            )
        sources.append(Source(name, url.rstrip("/")))
    return sources


def _positive(settings: BackendSettings, option: str, default: int, most: int) -> int:
    raw = settings.options.get(option)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ConfigError(f"backends.{NAME}.options.{option}: a whole number from 1 to {most}")
    return int(raw)
