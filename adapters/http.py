"""What the HTTP adapters share: one pooled session per client, and answers read to a cap.

A client keeps one ``aiohttp.ClientSession`` (its connection pool), made on first use in the
running event loop and bound to it: a session cannot move between loops. An answer's body is
read in chunks up to a limit; a larger one is a malformed answer (``Failure.MALFORMED``), never
read whole into memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from adapters.errors import Failure, WarningLog, backend_error


class PooledSession:
    """The connection pool of one client, made when first used and bound to that event loop."""

    def __init__(self, owner: str) -> None:
        self._owner = owner  # the client's class name, for the one error it can raise
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session, in the running loop (a new pool after ``close``)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
            )
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(f"{self._owner} is bound to the event loop that first used it")
        return self._session

    async def close(self) -> None:
        """Close the pooled connections; the client opens a new pool if used again."""
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()


async def read_capped(
    response: aiohttp.ClientResponse,
    *,
    limit: int,
    backend: str,
    log: WarningLog,
    event: str,
    chunk: int = 64 * 1024,
    **context: Any,
) -> bytes:
    """The body, at most ``limit`` bytes; past it, ``event`` is logged and the answer is
    ``backend``'s malformed one."""
    chunks: list[bytes] = []
    size = 0
    async for part in response.content.iter_chunked(chunk):
        size += len(part)
        if size > limit:
            log.warning(event, limit_bytes=limit, **context)
            raise backend_error(Failure.MALFORMED, backend)
        chunks.append(part)
    return b"".join(chunks)
