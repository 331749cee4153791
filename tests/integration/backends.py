"""A back end that answers slowly: a loopback proxy in front of the reference server.

Tests set ``delay_s`` (per transaction code, ``infno``) while the gateway runs, and read
``calls`` to see which transactions the gateway made.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from adapters.social_insurance import start_reference_server, wire


class SlowBackend:
    """Forwards to the reference back end after ``delay_s[infno]`` seconds."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.delay_s: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        infno = str(json.loads(body).get("infno", ""))
        self.calls[infno] += 1
        await asyncio.sleep(self.delay_s.get(infno, 0.0))
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.upstream + wire.PATH, data=body, headers=request.headers) as answer,
        ):
            return web.Response(
                body=await answer.read(), status=answer.status, content_type="application/json"
            )


@asynccontextmanager
async def slow_backend() -> AsyncIterator[SlowBackend]:
    """A ``SlowBackend`` on 127.0.0.1 in front of a fresh reference back end."""
    reference = await start_reference_server()
    backend = SlowBackend(reference.url)
    app = web.Application()
    app.router.add_post(wire.PATH, backend.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        backend.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield backend
    finally:
        await runner.cleanup()
        await reference.close()
