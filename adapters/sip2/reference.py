"""The reference library network: one SIP2 server per library, built on ``pysip2``.

Each library of ``seed.Network`` gets a ``pysip2.SIP2Server`` (an ACS written by others: it
frames, checks and answers SIP2 with its own typed codec, never ours) that requires a login
(93) with the library's user and password, requires error detection (``AY``/``AZ``), answers
SC status (99/98), patron status (23/24) and patron information (63/64) from the library's
patrons, in the library's encoding. The servers run on AnyIO in a thread of their own (a
blocking portal), apart from the gateway's event loop, and bind loopback only.

``ReferenceNetwork.libraries()`` is the adapter's view of them: the ``Library`` settings a
gateway needs to reach each one (what ``onecard backends`` prints as a settings file).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio.from_thread
import structlog
from pysip2 import (
    LOGIN,
    PATRON_INFORMATION,
    PATRON_STATUS,
    LoginRequest,
    LoginResponse,
    PatronInformationRequest,
    PatronInformationResponse,
    PatronStatusRequest,
    PatronStatusResponse,
    SIP2Server,
)

from adapters.loopback import refuse_wildcard
from adapters.sip2.seed import Network, PatronRecord, ReferenceLibrary
from adapters.sip2.settings import Library, LibrarySettings
from gateway.ports import PatronBlock

_log = structlog.get_logger(__name__)
CURRENCY = "CNY"


@dataclass(frozen=True, slots=True)
class ReferenceNetwork:
    """The running reference libraries: where each listens, and how to stop them all."""

    host: str
    ports: Mapping[str, int]  # network id -> bound port
    network: Network
    _stop: contextlib.ExitStack

    @property
    def url(self) -> str:
        return ", ".join(f"sip2://{self.host}:{port}" for port in self.ports.values())

    def libraries(self) -> tuple[Library, ...]:
        """Settings that reach these servers (patron id, encoding, login) as the adapter's."""
        return tuple(
            Library(
                LibrarySettings(
                    network_id=lib.network_id,
                    name=lib.name,
                    org_id=lib.org_id,
                    host=self.host,
                    port=self.ports[lib.network_id],
                    institution_id=lib.institution_id,
                    encoding=lib.encoding,
                    login_user=lib.login_user,
                    location=lib.location,
                    patron_id="barcode" if lib.uses_barcodes else "card_number",
                ),
                password=lib.password,
                barcodes=self.network.barcodes(lib.network_id) if lib.uses_barcodes else {},
            )
            for lib in self.network.libraries
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._stop.close)


async def start_reference_network(
    host: str = "127.0.0.1", ports: Mapping[str, int] | None = None, network: Network | None = None
) -> ReferenceNetwork:
    """Start a server per library on ``host`` (``ports`` by network id; default: any free)."""
    refuse_wildcard(host, "reference SIP2 library server")
    network = network if network is not None else Network.default()
    started = await asyncio.to_thread(_start, host, ports or {}, network)
    _log.info("reference_libraries_started", url=started.url, libraries=len(started.ports))
    return started


def _start(host: str, ports: Mapping[str, int], network: Network) -> ReferenceNetwork:
    with contextlib.ExitStack() as stack:
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
        bound: dict[str, int] = {}
        for library in network.libraries:
            server = build_server(library, network.patrons[library.network_id])
            serving = portal.wrap_async_context_manager(
                server.start(host, ports.get(library.network_id, 0))
            )
            bound[library.network_id] = stack.enter_context(serving)
        return ReferenceNetwork(host, bound, network, stack.pop_all())
    raise AssertionError("unreachable")  # pragma: no cover (the with block returns)


def build_server(library: ReferenceLibrary, patrons: Mapping[str, PatronRecord]) -> SIP2Server:
    """The ACS of one library: login required, checksums required, its patrons."""
    app = SIP2Server(
        institution_id=library.institution_id,
        library_name=library.name if library.encoding == "utf-8" else library.network_id,
        encoding=library.encoding,
        error_detection="required",
        login_required=True,
        offline_ok=False,
        idle_timeout=300.0,
    )

    @app.route(LOGIN)
    async def login(req: LoginRequest, ctx: Any) -> LoginResponse:
        accepted = (req.login_user_id, req.login_password) == (library.login_user, library.password)
        return LoginResponse(ok="1" if accepted else "0")

    @app.route(PATRON_INFORMATION)
    async def patron_information(
        req: PatronInformationRequest, ctx: Any
    ) -> PatronInformationResponse:
        record = patrons.get(req.patron_identifier)
        return PatronInformationResponse(
            patron_status=_status(record),
            language=req.language,
            transaction_date=ctx.now_18(),
            hold_items_count=_count(record.holds if record else 0),
            overdue_items_count=_count(record.overdue if record else 0),
            charged_items_count=_count(record.charged if record else 0),
            fine_items_count=_count(record.fine_items if record else 0),
            recall_items_count=_count(0),
            unavailable_holds_count=_count(0),
            institution_id=library.institution_id,
            patron_identifier=req.patron_identifier,
            personal_name=record.name if record else "",
            valid_patron="Y" if record else "N",
            currency_type=CURRENCY if record else None,
            fee_amount=f"{record.fee_amount:.2f}" if record else None,
            screen_message=() if record else ("Unknown patron",),
        )

    @app.route(PATRON_STATUS)
    async def patron_status(req: PatronStatusRequest, ctx: Any) -> PatronStatusResponse:
        record = patrons.get(req.patron_identifier)
        return PatronStatusResponse(
            patron_status=_status(record),
            language=req.language,
            transaction_date=ctx.now_18(),
            institution_id=library.institution_id,
            patron_identifier=req.patron_identifier,
            personal_name=record.name if record else "",
            valid_patron="Y" if record else "N",
            currency_type=CURRENCY if record else None,
            fee_amount=f"{record.fee_amount:.2f}" if record else None,
        )

    return app


def _status(record: PatronRecord | None) -> str:
    blocks = record.blocks if record is not None else frozenset()
    return "".join("Y" if block in blocks else " " for block in PatronBlock)


def _count(value: int) -> str:
    return f"{min(value, 9999):04d}"
