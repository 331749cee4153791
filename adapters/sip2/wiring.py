"""How the gateway plugs in the library network: the ``library`` row's wiring function.

``wire_backend`` takes ``[backends.library]``: with ``options.libraries`` (see ``settings``),
a client of those libraries' SIP2 servers; without, the reference network first (a pysip2
server per library, in a thread of its own, on 127.0.0.1) and a client of it.
"""

from __future__ import annotations

import contextlib

from adapters.sip2.client import Sip2Libraries
from adapters.sip2.reference import start_reference_network
from adapters.sip2.settings import libraries_from
from gateway.config import BackendSettings, ConfigError
from gateway.ports import LIBRARY_BACKEND, Provided, WiredBackend

NAME = "library"


async def wire_backend(settings: BackendSettings) -> WiredBackend:
    """Start what the back end needs; on failure, stop what was started and raise."""
    if settings.url is not None:
        raise ConfigError(
            f"backends.{NAME}.url: each library has its own SIP2 server; list them under "
            f"backends.{NAME}.options.libraries (host, port, institution_id, ...)"
        )
    async with contextlib.AsyncExitStack() as started:
        if settings.options:
            libraries = libraries_from(settings, NAME)
            url = ", ".join(
                f"sip2{'s' if lib.settings.tls else ''}://{lib.settings.host}:{lib.settings.port}"
                for lib in libraries
            )
        else:
            if settings.credentials:
                raise ConfigError(
                    f"backends.{NAME}.credentials: the reference libraries take none; "
                    f"name the libraries under backends.{NAME}.options.libraries"
                )
            reference = await start_reference_network()
            started.push_async_callback(reference.close)
            libraries, url = reference.libraries(), reference.url
        client = Sip2Libraries(libraries)
        started.push_async_callback(client.close)  # closed before the reference servers
        close = started.pop_all().aclose
    return WiredBackend(provides=(Provided(LIBRARY_BACKEND, client),), close=close, url=url)
