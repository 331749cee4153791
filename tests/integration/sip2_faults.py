"""A SIP2 line proxy on 127.0.0.1 in front of a reference library, that misbehaves on cue.

Tests set ``fault`` (for answers of command ``on``, "64" unless told) while the gateway runs:

- ``corrupt``: the next ``count`` answers arrive with a damaged checksum;
- ``hang``: the answer never comes (the connection stays open);
- ``cut``: half the answer arrives, then the connection closes.

``requests`` counts the commands the gateway sent (e.g. "97", the resend request).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class FaultySip2:
    upstream: tuple[str, int]
    fault: str = ""
    on: str = "64"
    count: int = 1
    requests: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            while line := await reader.readuntil(b"\r"):
                self.requests[line[:2].decode("ascii", "replace")] += 1
                up_writer.write(line)
                await up_writer.drain()
                answer = await up_reader.readuntil(b"\r")
                if not await self._misbehave(answer, writer):
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            writer.close()

    async def _misbehave(self, answer: bytes, writer: asyncio.StreamWriter) -> bool:
        if not self.fault or answer[:2].decode("ascii", "replace") != self.on:
            return False
        if self.fault == "corrupt" and self.count > 0:
            self.count -= 1
            last = answer[-2:-1]
            writer.write(answer[:-2] + (b"0" if last != b"0" else b"1") + b"\r")
            await writer.drain()
            return True
        if self.fault == "hang":
            await asyncio.Event().wait()
        if self.fault == "cut":
            writer.write(answer[: len(answer) // 2])
            await writer.drain()
            writer.close()
            raise ConnectionError("cut mid-message")
        return False


@contextlib.asynccontextmanager
async def faulty_sip2(upstream: tuple[str, int]) -> AsyncIterator[FaultySip2]:
    proxy = FaultySip2(upstream)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        proxy._tasks.add(task)
        try:
            await proxy.handle(reader, writer)
        finally:
            proxy._tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await server.wait_closed()


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
