"""The reference libraries answer a SIP2 client that none of our code is inside: the ``sip2``
package from PyPI (a blocking socket client). It has known defects, which this test leans on
only where they do not matter and shows where they do: it sums code points instead of bytes,
and its checksum check passes whatever it gets. It is a witness, never our codec."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from Sip2.sip2 import Sip2

from adapters.sip2 import ReferenceNetwork, start_reference_network
from adapters.sip2.seed import EMPLOYEE, RETIREE

pytestmark = pytest.mark.integration


@pytest.fixture
async def network() -> AsyncIterator[ReferenceNetwork]:
    started = await start_reference_network()
    yield started
    await started.close()


def _client(network: ReferenceNetwork, library_id: str) -> Sip2:
    library = network.network.library(library_id)
    client = Sip2()
    client.hostName, client.hostPort = "127.0.0.1", network.ports[library_id]
    client.tlsEnable = False
    client.hostEncoding = library.encoding
    client.institutionId = library.institution_id
    client.scLocation = library.location
    client.log = logging.getLogger("foreign-sip2-client")  # not its log file in the cwd
    client.connect()
    return client


def _session(network: ReferenceNetwork, library_id: str, patron: str) -> dict[str, object]:
    library = network.network.library(library_id)
    client = _client(network, library_id)
    try:
        login = client.sip_login_response(
            client.get_response(client.sip_login_request(library.login_user, library.password))
        )
        status = client.sip_sc_status_response(client.get_response(client.sip_sc_status_request()))
        client.patron = patron
        info = client.sip_patron_information_response(
            client.get_response(client.sip_patron_information_request("none"))
        )
        raw = client.last_response
    finally:
        client.disconnect()
    return {"login": login, "status": status, "info": info, "raw": raw}


async def test_a_foreign_client_logs_in_and_reads_a_blocked_reader(
    network: ReferenceNetwork,
) -> None:
    got = await asyncio.to_thread(_session, network, "bj-dongcheng", RETIREE)
    assert got["login"]["fixed"]["Ok"] == "1"  # type: ignore[index]
    assert got["status"]["fixed"]["OnlineStatus"] == "Y"  # type: ignore[index]
    info = got["info"]
    fixed = info["fixed"]  # type: ignore[index]
    assert fixed["PatronStatus"] == "YY    Y       "
    assert (fixed["OverdueItemsCount"], fixed["FineItemsCount"]) == ("0004", "0003")
    variable = info["variable"]  # type: ignore[index]
    assert variable["AA"] == [RETIREE] and variable["AE"] == ["张秀英"]
    assert variable["BV"] == ["36.80"] and variable["BL"] == ["Y"]


async def test_its_checksums_over_code_points_are_wrong_for_chinese_text(
    network: ReferenceNetwork,
) -> None:
    # The server's answer carries a Chinese name: its checksum is over UTF-8 bytes, which the
    # foreign client would compute differently; its own check waves the answer through anyway.
    got = await asyncio.to_thread(_session, network, "bj-dongcheng", EMPLOYEE)
    raw = str(got["raw"]).rstrip("\r")
    body, sent = raw[:-4], raw[-4:]
    by_bytes = f"{-sum(body.encode('utf-8')) & 0xFFFF:04X}"
    by_code_points = f"{-sum(map(ord, body)) & 0xFFFF:04X}"
    assert sent == by_bytes != by_code_points
    assert Sip2()._crc_verify("941AY1AZ0000")  # its check passes a wrong checksum too


async def test_a_wrong_password_is_refused_to_the_foreign_client(
    network: ReferenceNetwork,
) -> None:
    def attempt() -> str:
        client = _client(network, "bj-xicheng")
        try:
            answer = client.get_response(client.sip_login_request("onecard", "wrong"))
            return str(client.sip_login_response(answer)["fixed"]["Ok"])
        finally:
            client.disconnect()

    assert await asyncio.to_thread(attempt) == "0"
