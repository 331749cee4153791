"""A reader's standing at a library of the network, through the gateway over mutual TLS, from
the reference SIP2 libraries (pysip2 servers): answers, policy, and every way the library's
system can fail, each a clear status and an audit entry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from adapters.sip2 import ReferenceNetwork, start_reference_network
from adapters.sip2.seed import EMPLOYEE, RETIREE, Network
from adapters.social_insurance import start_reference_server
from gateway.api.onecard.v1 import common_pb2
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from tests.integration.calls import issue_token, patron_status
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY
from tests.integration.sip2_faults import FaultySip2, faulty_sip2, free_port

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
RPC = "onecard.v1.LibraryService/GetPatronStatus"


@pytest.fixture
async def network() -> AsyncIterator[ReferenceNetwork]:
    started = await start_reference_network()
    yield started
    await started.close()


async def _ask(
    gateway: Gateway, pki: PkiLayout, card: str, library_id: str, org: str = LIBRARY
) -> Any:
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, card)
    async with org_channel(gateway.target, pki, org) as channel:
        return await patron_status(channel, card, token, library_id)


async def _refused(
    gateway: Gateway, pki: PkiLayout, card: str, library_id: str, org: str = LIBRARY
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _ask(gateway, pki, card, library_id, org)
    return info.value


async def _audited(gateway: Gateway, error: grpc.aio.AioRpcError) -> dict[str, Any]:
    index = int(dict(error.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record: dict[str, Any] = json.loads(entry.leaf)["r"]
    return record


# -- answers -------------------------------------------------------------------------------------


async def test_a_reader_in_good_standing_at_the_asking_library(
    gateway: Gateway, pki: PkiLayout
) -> None:
    answer = await _ask(gateway, pki, EMPLOYEE, "bj-dongcheng")
    assert (answer.library_id, answer.patron_known, answer.valid, answer.good_standing) == (
        "bj-dongcheng",
        True,
        True,
        True,
    )
    assert (answer.counts.holds, answer.counts.charged, answer.counts.overdue) == (1, 2, 0)
    assert answer.masked_name == "李*"
    assert not answer.has_fines and answer.fine_amount == ""
    assert list(answer.decision.policy_ids) == [
        "holding-library-reads-fine-amount",
        "library-reads-patron-standing",
    ]
    (entry,) = await gateway.audit_log.entries(
        answer.receipt.leaf_index, answer.receipt.leaf_index + 1
    )
    record = json.loads(entry.leaf)["r"]
    assert (record["rpc"], record["outcome"], record["backend"]) == (RPC, "OK", "library")
    assert "李" not in entry.leaf.decode() and EMPLOYEE not in entry.leaf.decode()


async def test_a_blocked_reader_and_the_fines_the_holding_library_may_see(
    gateway: Gateway, pki: PkiLayout
) -> None:
    answer = await _ask(gateway, pki, RETIREE, "bj-dongcheng")
    assert answer.patron_known and answer.valid and not answer.good_standing
    blocks = answer.blocks
    assert blocks.charge_privileges_denied and blocks.renewal_privileges_denied
    assert blocks.too_many_items_overdue and not blocks.card_reported_lost
    assert answer.counts.overdue == 4 and answer.counts.fine_items == 3
    # lib-bj-001 keeps bj-dongcheng's records: it sees its own fine's amount.
    assert (answer.has_fines, answer.fine_amount, answer.currency) == (True, "36.80", "CNY")


async def test_fines_at_another_library_are_a_flag_not_an_amount(
    gateway: Gateway, pki: PkiLayout
) -> None:
    answer = await _ask(gateway, pki, EMPLOYEE, "bj-xicheng")  # a barcode library
    assert answer.patron_known and answer.blocks.renewal_privileges_denied
    assert answer.has_fines and answer.counts.fine_items == 2
    assert (answer.fine_amount, answer.currency) == ("", "")
    assert list(answer.decision.policy_ids) == ["library-reads-patron-standing"]
    assert "fine_amount" not in answer.decision.disclosed_fields


async def test_an_unknown_patron_is_an_answer_not_an_error(
    gateway: Gateway, pki: PkiLayout
) -> None:
    unknown = Network.default().unregistered
    for library_id in ("bj-dongcheng", "bj-xicheng", "bj-haidian-uni"):
        answer = await _ask(gateway, pki, unknown, library_id)
        assert (answer.library_id, answer.patron_known, answer.valid) == (library_id, False, False)
        assert not answer.HasField("counts") and answer.masked_name == ""


async def test_only_libraries_may_ask(gateway: Gateway, pki: PkiLayout) -> None:
    error = await _refused(gateway, pki, EMPLOYEE, "bj-dongcheng", org=HOSPITAL)
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "policy_denied")
    record = await _audited(gateway, error)
    assert (record["rpc"], record["decision"], record["backend"]) == (RPC, "deny", "")


async def test_a_library_outside_the_network_is_an_invalid_argument(
    gateway: Gateway, pki: PkiLayout
) -> None:
    for library_id in ("bj-nowhere", "", "BJ-DONGCHENG", "x" * 200):
        error = await _refused(gateway, pki, EMPLOYEE, library_id)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "library_id" in (error.details() or "")


# -- the library's system failing --------------------------------------------------------------


def _one_library(
    network: ReferenceNetwork, library_id: str = "bj-dongcheng", **changes: Any
) -> dict[str, Any]:
    """``[backends.library]`` reaching one reference library, with ``changes`` to its row."""
    library = next(lib for lib in network.libraries() if lib.network_id == library_id)
    row = {
        "network_id": library.network_id,
        "org_id": library.settings.org_id,
        "host": "127.0.0.1",
        "port": library.settings.port,
        "institution_id": library.settings.institution_id,
        "encoding": library.settings.encoding,
        "login_user": library.settings.login_user,
        "location": library.settings.location,
        **changes,
    }
    password = changes.pop("password", library.password)
    row.pop("password", None)
    return {
        "timeout_s": 1.0,
        "options": {"libraries": [row]},
        "credentials": {library_id: password},
    }


@pytest.fixture
async def gateway_to(
    gateway_factory: Callable[..., Any], network: ReferenceNetwork
) -> AsyncIterator[Callable[..., Any]]:
    references: list[Any] = []

    async def start(library: dict[str, Any]) -> Gateway:
        insurance = await start_reference_server()
        references.append(insurance)
        gateway: Gateway = await gateway_factory(
            backends={"social_insurance": {"url": insurance.url}, "library": library}
        )
        return gateway

    yield start
    for reference in references:
        await reference.close()


@pytest.fixture
async def faulty(network: ReferenceNetwork) -> AsyncIterator[FaultySip2]:
    dongcheng = network.ports["bj-dongcheng"]
    async with faulty_sip2(("127.0.0.1", dongcheng)) as proxy:
        yield proxy


async def test_a_refused_login_is_a_back_end_refusal(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, password="not-the-password"))
    error = await _refused(gateway, pki, EMPLOYEE, "bj-dongcheng")
    assert (error.code(), reason(error)) == (grpc.StatusCode.UNAVAILABLE, "backend_unavailable")
    assert error.details() == "library bj-dongcheng refused the request"
    record = await _audited(gateway, error)
    assert (record["rpc"], record["reason"], record["backend"]) == (
        RPC,
        "backend_unavailable",
        "library",
    )
    assert record["released_sha256"] == ""


async def test_one_damaged_answer_is_asked_again_and_the_call_succeeds(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, faulty: FaultySip2, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=faulty.port))
    faulty.fault, faulty.count = "corrupt", 1
    answer = await _ask(gateway, pki, RETIREE, "bj-dongcheng")
    assert answer.patron_known and answer.counts.overdue == 4
    assert faulty.requests["97"] == 1  # one ACS resend request


async def test_a_checksum_still_wrong_after_the_resend_is_a_malformed_answer(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, faulty: FaultySip2, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=faulty.port))
    faulty.fault, faulty.count = "corrupt", 2
    error = await _refused(gateway, pki, RETIREE, "bj-dongcheng")
    assert (error.code(), reason(error)) == (grpc.StatusCode.UNAVAILABLE, "backend_malformed")
    assert error.details() == "library bj-dongcheng sent a malformed answer"
    assert faulty.requests["97"] == 1  # one resend, not more
    record = await _audited(gateway, error)
    assert (record["reason"], record["released_sha256"]) == ("backend_malformed", "")


async def test_a_library_that_is_down_is_unreachable(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=free_port()))
    error = await _refused(gateway, pki, EMPLOYEE, "bj-dongcheng")
    assert (error.code(), reason(error)) == (grpc.StatusCode.UNAVAILABLE, "backend_unavailable")
    assert error.details() == "library bj-dongcheng is unreachable"
    assert (await _audited(gateway, error))["reason"] == "backend_unavailable"


async def test_a_library_that_hangs_times_out(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, faulty: FaultySip2, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=faulty.port))
    faulty.fault = "hang"
    error = await _refused(gateway, pki, EMPLOYEE, "bj-dongcheng")
    assert (error.code(), reason(error)) == (grpc.StatusCode.DEADLINE_EXCEEDED, "backend_timeout")
    assert error.details() == "library bj-dongcheng did not answer within 1s"
    assert (await _audited(gateway, error))["reason"] == "backend_timeout"


async def test_a_connection_closed_mid_message_is_unreachable_and_the_next_call_reconnects(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, faulty: FaultySip2, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=faulty.port))
    faulty.fault = "cut"
    error = await _refused(gateway, pki, EMPLOYEE, "bj-dongcheng")
    assert (error.code(), reason(error)) == (grpc.StatusCode.UNAVAILABLE, "backend_unavailable")
    assert (await _audited(gateway, error))["reason"] == "backend_unavailable"
    logins_before = faulty.requests["93"]
    faulty.fault = ""
    answer = await _ask(gateway, pki, EMPLOYEE, "bj-dongcheng")
    assert answer.good_standing
    assert faulty.requests["93"] == logins_before + 1  # a fresh connection, logged in again


async def test_connections_are_pooled_and_logged_in_once(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, faulty: FaultySip2, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=faulty.port))
    for card in (EMPLOYEE, RETIREE, EMPLOYEE):
        await _ask(gateway, pki, card, "bj-dongcheng")
    assert (faulty.requests["93"], faulty.requests["63"]) == (1, 3)


async def test_an_error_carries_no_patron_data(
    gateway_to: Callable[..., Any], network: ReferenceNetwork, faulty: FaultySip2, pki: PkiLayout
) -> None:
    gateway = await gateway_to(_one_library(network, port=faulty.port))
    faulty.fault, faulty.count = "corrupt", 2
    error = await _refused(gateway, pki, RETIREE, "bj-dongcheng")
    text = json.dumps(dict(error.trailing_metadata() or ()), ensure_ascii=False)
    for secret in (RETIREE, "张秀英", "36.80"):
        assert secret not in text and secret not in (error.details() or "")


async def test_a_purpose_other_than_library_service_is_refused(
    gateway: Gateway, pki: PkiLayout
) -> None:
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, EMPLOYEE)
    async with org_channel(gateway.target, pki, LIBRARY) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await patron_status(
                channel, EMPLOYEE, token, "bj-dongcheng", purpose=common_pb2.PURPOSE_TREAT
            )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
