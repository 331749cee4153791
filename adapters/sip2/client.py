"""The library adapter: ``LibraryBackend`` over SIP2, a small pool of connections per library.

``Sip2Libraries`` keeps, per library of the network, up to ``pool_size`` logged-in connections
(``connection.Sip2Connection``). A connection idle longer than ``HEALTH_CHECK_AFTER_S`` is
checked with SC status (99/98) before it is used again; one that fails anything is closed and
dropped, and the next call opens a fresh one. Each call is bounded by the back end's
``timeout_s`` as a whole (waiting for a connection, connecting, logging in, the exchange).

The reader's standing comes from patron information (63/64, counts and flags); an ACS whose
ACS status says it lacks 63 is asked patron status (23/24, flags only). Every failure is named
for the shared table of ``adapters.errors``:

==============================================================  ===============
no answer in time (connect, login, exchange)                    ``TIMEOUT``
refused, reset, closed mid-message, TLS failure                 ``UNREACHABLE``
login refused (94 ok=0) or the ACS says it is offline (98)      ``REFUSED``
checksum still wrong after one resend, not SIP2, wrong answer   ``MALFORMED``
==============================================================  ===============

Events (``sip2_*``) name the library and the kind of failure, never the patron identifier,
the name, or the ACS's screen messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Mapping

import structlog

from adapters.errors import Failure, ProtocolFailures, backend_error, map_transport_errors
from adapters.sip2 import codec, messages
from adapters.sip2.connection import SessionRefused, Sip2Connection
from adapters.sip2.settings import Library
from gateway.errors import InvalidRequest
from gateway.ports import PatronStanding

_log = structlog.get_logger(__name__)
_EVENTS = "sip2"
HEALTH_CHECK_AFTER_S = 30.0

_PROTOCOL_FAILURES: ProtocolFailures = (
    (SessionRefused, Failure.REFUSED),
    (codec.CodecError, Failure.MALFORMED),
)


class _Pool:
    """Idle connections of one library; at most ``pool_size`` open at once."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._idle: list[tuple[Sip2Connection, float]] = []
        self._slots = asyncio.Semaphore(library.settings.pool_size)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Sip2Connection]:
        async with self._slots:
            connection = await self._take()
            try:
                yield connection
            except BaseException:
                await connection.close()
                raise
            self._idle.append((connection, time.monotonic()))

    async def _take(self) -> Sip2Connection:
        while self._idle:
            connection, since = self._idle.pop()
            if time.monotonic() - since < HEALTH_CHECK_AFTER_S:
                return connection
            try:
                await connection.check()
            except (OSError, EOFError, codec.CodecError, SessionRefused):
                await connection.close()
                _log.info("sip2_stale_connection_dropped", library=self.library.network_id)
                continue
            return connection
        return await Sip2Connection.open(self.library)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            await connection.close()


class Sip2Libraries:
    """Implements ``gateway.ports.LibraryBackend`` for the configured libraries."""

    def __init__(self, libraries: tuple[Library, ...]) -> None:
        self._libraries: Mapping[str, Library] = {lib.network_id: lib for lib in libraries}
        self._pools: dict[str, _Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def knows(self, library_id: str) -> bool:
        return library_id in self._libraries

    def holder_org(self, library_id: str) -> str | None:
        library = self._libraries.get(library_id)
        return library.settings.org_id if library is not None else None

    async def patron_standing(
        self, library_id: str, card_number: str, *, timeout: float
    ) -> PatronStanding:
        """The reader's standing at ``library_id`` (which the caller checked with ``knows``)."""
        library = self._libraries.get(library_id)
        if library is None:
            raise InvalidRequest(f"library_id {library_id!r} is not a library of the network")
        patron = library.patron_identifier(card_number)
        if patron is None:
            _log.info("sip2_no_barcode", library=library_id)
            return _unknown(library_id)
        log = _log.bind(library=library_id)
        display = f"library {library_id}"
        with map_transport_errors(
            display, timeout=timeout, log=log, prefix=_EVENTS, protocol=_PROTOCOL_FAILURES
        ):
            async with asyncio.timeout(timeout), self._pool(library).connection() as connection:
                answer = await _ask(connection, library, patron)
                # Inside the pool's block: a connection that answered for someone else (an
                # ACS out of step) is closed with the error, never handed to the next reader.
                if answer.get("AA") != patron:
                    log.warning("sip2_wrong_patron")
                    raise backend_error(Failure.WRONG_PERSON, display)
                standing = messages.standing(library_id, answer)
        log.info("sip2_patron_standing", command=answer.command, known=standing.known)
        return standing

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()

    def _pool(self, library: Library) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: the old one's connections are unusable
            self._pools, self._loop = {}, loop
        pool = self._pools.get(library.network_id)
        if pool is None:
            pool = self._pools[library.network_id] = _Pool(library)
        return pool


async def _ask(connection: Sip2Connection, library: Library, patron: str) -> codec.Message:
    now = dt.datetime.now(dt.UTC)
    institution = library.settings.institution_id
    if connection.supports(messages.BX_PATRON_INFORMATION):
        return await connection.exchange(
            messages.patron_information(institution, patron, now), "64"
        )
    return await connection.exchange(messages.patron_status(institution, patron, now), "24")


def _unknown(library_id: str) -> PatronStanding:
    return PatronStanding(
        library_id=library_id,
        known=False,
        valid=False,
        blocks=frozenset(),
        holds=None,
        overdue=None,
        charged=None,
        fine_items=None,
        fee_amount=None,
        currency="",
        name="",
    )
