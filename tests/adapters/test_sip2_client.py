"""The SIP2 client against real pysip2 servers on loopback: the patron status fallback, TLS,
barcode mapping; and the settings that describe the libraries."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pysip2 import (
    LOGIN,
    PATRON_STATUS,
    LoginRequest,
    LoginResponse,
    PatronStatusRequest,
    PatronStatusResponse,
    SIP2Server,
)

from adapters.sip2 import client as sip2_client
from adapters.sip2 import codec
from adapters.sip2.client import Sip2Libraries
from adapters.sip2.reference import build_server, start_reference_network
from adapters.sip2.seed import EMPLOYEE, RETIREE, Network
from adapters.sip2.settings import Library, LibrarySettings, libraries_from
from gateway.config import BackendSettings, ConfigError
from gateway.errors import BackendUnavailable
from gateway.pki import init_pki
from gateway.ports import PatronBlock


def _library(port: int, **changes: Any) -> Library:
    password = changes.pop("password", "pw")
    barcodes = changes.pop("barcodes", {})
    settings = {
        "network_id": "test-lib",
        "host": "127.0.0.1",
        "port": port,
        "institution_id": "TEST",
        "encoding": "utf-8",
        "login_user": "onecard",
        **changes,
    }
    return Library(LibrarySettings(**settings), password=password, barcodes=barcodes)


def _patron_status_only() -> SIP2Server:
    """An older ACS: login and patron status (23/24), no patron information (63)."""
    app = SIP2Server(institution_id="TEST", encoding="utf-8", login_required=True)

    @app.route(LOGIN)
    async def login(req: LoginRequest, ctx: Any) -> LoginResponse:
        return LoginResponse(ok="1" if req.login_password == "pw" else "0")

    @app.route(PATRON_STATUS)
    async def status(req: PatronStatusRequest, ctx: Any) -> PatronStatusResponse:
        return PatronStatusResponse(
            patron_status="    Y         ",
            language="000",
            transaction_date=ctx.now_18(),
            institution_id="TEST",
            patron_identifier=req.patron_identifier,
            personal_name="王芳",
            valid_patron="Y",
        )

    return app


async def test_an_acs_without_patron_information_is_asked_patron_status() -> None:
    async with _patron_status_only().start("127.0.0.1", 0) as port:
        client = Sip2Libraries((_library(port),))
        standing = await client.patron_standing("test-lib", EMPLOYEE, timeout=2)
        await client.close()
    assert standing.known and standing.valid and standing.name == "王芳"
    assert standing.blocks == {PatronBlock.CARD_REPORTED_LOST}
    assert (standing.holds, standing.overdue, standing.charged, standing.fine_items) == (None,) * 4


@pytest.fixture
async def dongcheng() -> AsyncIterator[int]:
    network = await start_reference_network()  # its own thread: fixtures cross tasks
    yield network.ports["bj-dongcheng"]
    await network.close()


@pytest.fixture
async def tls_front(tmp_path: Path, dongcheng: int) -> AsyncIterator[tuple[int, Path]]:
    """A TLS listener (the development PKI's server certificate) in front of the library."""
    pki = init_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", dongcheng)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(4096):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1], pki.ca_cert
    server.close()


def _dongcheng(port: int, **changes: Any) -> Library:
    library = Network.default().library("bj-dongcheng")
    return _library(
        port,
        network_id="bj-dongcheng",
        institution_id=library.institution_id,
        password=library.password,
        **changes,
    )


async def test_a_library_reached_over_tls(tls_front: tuple[int, Path]) -> None:
    port, ca = tls_front
    client = Sip2Libraries((_dongcheng(port, tls=True, ca_file=ca),))
    standing = await client.patron_standing("bj-dongcheng", RETIREE, timeout=2)
    await client.close()
    assert standing.known and standing.overdue == 4


async def test_a_tls_server_our_ca_did_not_sign_is_unreachable(
    tls_front: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_front
    other_ca = init_pki(tmp_path / "other").ca_cert
    client = Sip2Libraries((_dongcheng(port, tls=True, ca_file=other_ca),))
    with pytest.raises(BackendUnavailable, match="bj-dongcheng is unreachable"):
        await client.patron_standing("bj-dongcheng", RETIREE, timeout=2)
    await client.close()


async def test_a_barcode_library_is_asked_by_barcode_and_not_at_all_without_one() -> None:
    network = Network.default()
    library = network.library("bj-xicheng")
    barcodes = network.barcodes("bj-xicheng")
    server = build_server(library, network.patrons["bj-xicheng"])
    async with server.start("127.0.0.1", 0) as port:
        client = Sip2Libraries(
            (
                _library(
                    port,
                    network_id="bj-xicheng",
                    institution_id=library.institution_id,
                    password=library.password,
                    patron_id="barcode",
                    barcodes=barcodes,
                ),
            )
        )
        fined = await client.patron_standing("bj-xicheng", EMPLOYEE, timeout=2)
        nobody = await client.patron_standing("bj-xicheng", network.unregistered, timeout=2)
        await client.close()
    assert barcodes[EMPLOYEE].startswith("XC") and network.unregistered not in barcodes
    assert fined.known and str(fined.fee_amount) == "12.50" and fined.fine_items == 2
    assert not nobody.known


# -- settings -----------------------------------------------------------------------------------


def _settings(*rows: dict[str, Any], **credentials: str) -> BackendSettings:
    return BackendSettings(
        options={"libraries": list(rows)},
        credentials={k: SecretStr(v) for k, v in credentials.items()},
    )


ROW = {"network_id": "bj-a", "host": "127.0.0.1", "port": 6001, "institution_id": "A"}


def test_settings_become_libraries_with_their_passwords_and_barcodes(tmp_path: Path) -> None:
    mapping = tmp_path / "b.csv"
    mapping.write_text("card_number,barcode\n11010519491231002x,B0001\n", encoding="utf-8")
    row_b = {**ROW, "network_id": "bj-b", "patron_id": "barcode", "barcodes_file": str(mapping)}
    a, b = libraries_from(_settings(ROW, row_b, **{"bj-a": "s3cret"}), "library")
    assert (a.password, a.settings.encoding, a.terminator) == ("s3cret", "cp850", b"\r")
    assert a.patron_identifier(RETIREE) == RETIREE
    assert b.patron_identifier(RETIREE) == "B0001" and b.patron_identifier(EMPLOYEE) is None
    assert "s3cret" not in repr(a)


@pytest.mark.parametrize(
    ("rows", "credentials", "problem"),
    [
        ([ROW, ROW], {}, "'bj-a' is listed twice"),
        ([ROW], {"bj-z": "x"}, "credentials.bj-z: no library has this network id"),
        ([{**ROW, "encoding": "klingon"}], {}, "unknown encoding"),
        ([{**ROW, "port": 0}], {}, "libraries.0.port"),
        ([{**ROW, "terminator": "LF"}], {}, "libraries.0.terminator"),
        ([{**ROW, "patron_id": "barcode"}], {}, "needs the library's mapping file"),
        ([{**ROW, "institution_id": "A|B"}], {}, "libraries.0.institution_id"),
        ([{**ROW, "colour": "red"}], {}, "libraries.0.colour"),
        ([], {}, "libraries"),
    ],
)
def test_settings_that_do_not_describe_a_library_say_where(
    rows: list[dict[str, Any]], credentials: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=r"backends\.library") as info:
        libraries_from(_settings(*rows, **credentials), "library")
    assert problem in str(info.value)


# -- a scripted ACS (a fake: one module's unit test) ------------------------------------------


class ScriptedAcs:
    """Answers 93, 99 and 63 with our codec, in ``terminator``; ``ask_resend`` 63s get a 96."""

    def __init__(self, terminator: bytes) -> None:
        self.terminator = terminator
        self.seen: list[str] = []
        self.ask_resend = 0
        self.wrong_patron = 0  # answers about someone else (an ACS out of step, or broken)
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while line := await reader.readuntil(self.terminator):
                request = codec.decode(line.removesuffix(self.terminator), encoding="utf-8")
                self.seen.append(request.message.command)
                answer = self._answer(request.message)
                sequence = None if answer.command == "96" else request.sequence
                out = codec.encode(answer, sequence=sequence or 0, encoding="utf-8")
                writer.write(out + self.terminator)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _answer(self, request: codec.Message) -> codec.Message:
        if request.command == "93":
            return codec.Message("94", {"ok": "1"})
        if request.command == "99":
            fixed = {
                "online_status": "Y", "checkin_ok": "N", "checkout_ok": "N",
                "acs_renewal_policy": "N", "status_update_ok": "N", "offline_ok": "N",
                "timeout_period": "030", "retries_allowed": "003",
                "date_time_sync": "20250101    093000", "protocol_version": "2.00",
            }  # fmt: skip
            return codec.Message("98", fixed, (("AO", "TEST"),))
        if self.ask_resend:
            self.ask_resend -= 1
            return codec.Message("96")
        counts = dict.fromkeys(
            ("hold", "overdue", "charged", "fine", "recall", "unavailable_holds"), "0000"
        )
        fixed = {
            f"{k}_items_count" if k != "unavailable_holds" else f"{k}_count": v
            for k, v in counts.items()
        }
        fixed |= {"patron_status": " " * 14, "language": "000"}
        fixed["transaction_date"] = "20250101    093000"
        patron = request.get("AA") or ""
        if self.wrong_patron:
            self.wrong_patron -= 1
            patron = "SOMEONE-ELSE"
        fields = (("AO", "TEST"), ("AA", patron), ("AE", "赵敏"), ("BL", "Y"))
        return codec.Message("64", fixed, fields)


@pytest.fixture
async def scripted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ScriptedAcs, int]]:
    acs = ScriptedAcs(getattr(request, "param", b"\r"))
    server = await asyncio.start_server(acs.serve, "127.0.0.1", 0)
    yield acs, server.sockets[0].getsockname()[1]
    server.close()
    for writer in acs.writers:
        writer.close()


@pytest.mark.parametrize("scripted", [b"\r\n"], indirect=True)
async def test_a_crlf_library_is_spoken_to_in_crlf(scripted: tuple[ScriptedAcs, int]) -> None:
    acs, port = scripted
    client = Sip2Libraries((_library(port, terminator="CRLF"),))
    standing = await client.patron_standing("test-lib", EMPLOYEE, timeout=2)
    await client.close()
    assert standing.name == "赵敏" and acs.seen == ["93", "99", "63"]


async def test_an_acs_asking_for_a_resend_gets_our_line_once_more(
    scripted: tuple[ScriptedAcs, int],
) -> None:
    acs, port = scripted
    acs.ask_resend = 1
    client = Sip2Libraries((_library(port),))
    assert (await client.patron_standing("test-lib", EMPLOYEE, timeout=2)).known
    acs.ask_resend = 2
    with pytest.raises(BackendUnavailable, match="malformed answer"):
        await client.patron_standing("test-lib", EMPLOYEE, timeout=2)
    await client.close()
    assert acs.seen == ["93", "99", "63", "63", "63", "63"]


async def test_idle_connections_are_checked_and_dead_ones_replaced(
    scripted: tuple[ScriptedAcs, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    acs, port = scripted
    client = Sip2Libraries((_library(port),))
    await client.patron_standing("test-lib", EMPLOYEE, timeout=2)
    monkeypatch.setattr(sip2_client, "HEALTH_CHECK_AFTER_S", 0.0)
    await client.patron_standing("test-lib", EMPLOYEE, timeout=2)
    assert acs.seen == ["93", "99", "63", "99", "63"]  # checked with SC status, then used
    acs.writers[0].close()  # the ACS drops the idle connection
    await asyncio.sleep(0.05)
    assert (await client.patron_standing("test-lib", EMPLOYEE, timeout=2)).known
    await client.close()
    assert acs.seen[5:] == ["93", "99", "63"]  # the check failed: a fresh login


async def test_a_connection_that_answered_for_another_patron_is_not_reused(
    scripted: tuple[ScriptedAcs, int],
) -> None:
    """An answer about someone else means the connection cannot be trusted (an ACS out of
    step answers the previous reader's request): it is closed, like any failed one."""
    acs, port = scripted
    acs.wrong_patron = 1
    client = Sip2Libraries((_library(port),))
    with pytest.raises(BackendUnavailable, match="different person"):
        await client.patron_standing("test-lib", EMPLOYEE, timeout=2)
    assert (await client.patron_standing("test-lib", EMPLOYEE, timeout=2)).known
    await client.close()
    assert acs.seen == ["93", "99", "63", "93", "99", "63"]  # a fresh login, not the old one
