"""Reference servers on loopback: the one way an adapter's reference server binds and closes.

The reference back ends are for development, the demo and the tests, so they bind a loopback
address (a wildcard is refused) and are closed by whoever started them.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (refused, not bound)


def refuse_wildcard(host: str, what: str) -> None:
    """Refuse to bind ``what`` to a wildcard address: reference servers stay on loopback."""
    if host in WILDCARD_HOSTS:
        raise ValueError(f"the {what} binds a loopback address, not a wildcard")


@dataclass(frozen=True, slots=True)
class Site:
    """A running aiohttp application: where it listens, and how to stop it."""

    host: str
    port: int
    _runner: web.AppRunner

    @property
    def url(self) -> str:
        """``http://host:port``, an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        await self._runner.cleanup()


async def serve(app: web.Application, host: str, port: int, what: str) -> Site:
    """Serve ``app`` on ``host:port`` (port 0: any free port); a wildcard host is refused."""
    refuse_wildcard(host, what)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return Site(host, bound_port, runner)
