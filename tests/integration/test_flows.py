"""The allowed flows and every refusal of the gateway core, over gRPC with mutual TLS."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import structlog
from structlog.testing import capture_logs

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import card_pb2, card_pb2_grpc, common_pb2, insurance_pb2
from gateway.bootstrap import Gateway
from gateway.cardno import check_character
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.keys import load_or_create_secret
from gateway.ports import CardStatus
from gateway.tokens import CardTokens
from tests.integration.calls import insurance_status, issue_token, verify_card
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, REGULATOR

pytestmark = pytest.mark.integration
Channel = Callable[[str], grpc.aio.Channel]


def _insured_employee(population: Population) -> Any:
    """A normal card whose back-end record has an employer and a balance (to prove withholding)."""
    for person in population:
        if person.card_status is CardStatus.NORMAL and any(
            s.employer_name and s.balance is not None for s in person.schemes
        ):
            return person
    raise AssertionError("the reference population has no insured employee")


async def test_hospital_reads_insurance_status_with_a_card_present_token(
    channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        token = await issue_token(app, person.id_number)
        response = await insurance_status(hosp, person.id_number, token)

    assert [s.insutype for s in response.schemes] == [s.insutype for s in person.schemes]
    for got, want in zip(response.schemes, person.schemes, strict=True):
        assert got.start_date == (want.start_date.isoformat() if want.start_date else "")
        assert got.insured_district == want.insured_district
        assert got.status != insurance_pb2.SCHEME_STATUS_UNSPECIFIED
        assert got.employer_name == ""  # withheld by policy
        assert got.balance == ""  # withheld by policy
    assert list(response.decision.policy_ids) == ["hospital-reads-insurance-status"]
    assert len(response.decision.policy_set_sha256) == 64
    assert "schemes.balance" not in response.decision.disclosed_fields


async def test_library_verifies_a_card_holder_and_sees_only_a_masked_name(
    channel: Channel, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(CITIZEN_APP) as app, channel(LIBRARY) as lib:
        token = await issue_token(app, person.id_number)
        response = await verify_card(lib, person.id_number, token)
    assert response.card_holder_valid
    assert response.masked_name == person.name[0] + "*" * max(len(person.name) - 1, 1)
    assert response.issuing_district == ""  # the library's policy does not disclose it
    assert list(response.decision.policy_ids) == ["library-verifies-card-holder"]


async def test_only_the_citizen_app_issues_tokens(channel: Channel, population: Population) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(hosp, person.id_number)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "citizen_app_only"


async def test_a_library_asking_for_insurance_status_is_denied_by_policy(
    channel: Channel, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(CITIZEN_APP) as app, channel(LIBRARY) as lib:
        token = await issue_token(app, person.id_number)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(lib, person.id_number, token, common_pb2.PURPOSE_COVERAGE)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "policy_denied"
    assert "no policy permits a library" in (info.value.details() or "")


async def test_a_regulator_does_not_read_citizens_data(
    channel: Channel, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(CITIZEN_APP) as app, channel(REGULATOR) as reg:
        token = await issue_token(app, person.id_number)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(reg, person.id_number, token, common_pb2.PURPOSE_HCOMPL)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("number", "fragment"),
    [
        ("440305198512120029", "check character"),
        ("12345", "18 characters"),
        ("", "required"),
    ],
)
async def test_a_malformed_card_number_is_invalid_argument(
    channel: Channel, number: str, fragment: str
) -> None:
    async with channel(CITIZEN_APP) as app:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(app, number)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (info.value.details() or "")
    if number:
        assert number not in (info.value.details() or "")


async def test_an_unknown_card_is_not_found(channel: Channel, population: Population) -> None:
    body = "11010120000101999"
    stranger = body + check_character(body)
    assert population.by_id_number(stranger) is None
    async with channel(CITIZEN_APP) as app:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(app, stranger)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (CardStatus.TEMPORARILY_REPORTED_LOST, "temporarily reported lost"),
        (CardStatus.REPORTED_LOST, "reported lost"),
        (CardStatus.LOCKED, "locked"),
        (CardStatus.CANCELLED, "cancelled"),
    ],
)
async def test_a_card_that_is_not_normal_is_failed_precondition_naming_the_status(
    channel: Channel, population: Population, status: CardStatus, words: str
) -> None:
    person = population.first(card_status=status)
    async with channel(CITIZEN_APP) as app:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(app, person.id_number)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"card is {words}" in (info.value.details() or "")
    assert reason(info.value) == f"card_{status.value}"


async def test_a_normal_card_gets_a_token(channel: Channel, population: Population) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(CITIZEN_APP) as app:
        response = await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=person.id_number),
                purpose=common_pb2.PURPOSE_PATRQT,
            )
        )
    ttl = response.expires_at.ToDatetime(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=50) < ttl <= dt.timedelta(seconds=60)


async def test_a_replayed_token_is_refused(channel: Channel, population: Population) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        token = await issue_token(app, person.id_number)
        await insurance_status(hosp, person.id_number, token)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, person.id_number, token)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "token_replayed"


async def test_a_token_replayed_after_a_restart_is_still_refused(
    gateway_factory: Callable[..., Any], pki: Any, population: Population, tmp_path: Any
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    first: Gateway = await gateway_factory(data_dir=tmp_path / "shared")
    async with org_channel(first.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, person.id_number)
    async with org_channel(first.target, pki, HOSPITAL) as hosp:
        await insurance_status(hosp, person.id_number, token)
    await first.stop(0)

    second: Gateway = await gateway_factory(data_dir=tmp_path / "shared")
    async with org_channel(second.target, pki, HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, person.id_number, token)
    assert reason(info.value) == "token_replayed"


async def test_a_token_for_another_card_is_refused(
    channel: Channel, population: Population
) -> None:
    normal = [p for p in population if p.card_status is CardStatus.NORMAL]
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        token = await issue_token(app, normal[0].id_number)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, normal[1].id_number, token)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "token_wrong_card"


async def test_an_expired_token_is_refused(
    gateway: Gateway, channel: Channel, population: Population, tmp_path: Any
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    # An authentic token (the gateway's own key) minted two minutes ago with a 60 s lifetime.
    key = load_or_create_secret(tmp_path / "data" / "keys" / "token.key")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    stale = CardTokens(key, gateway.store, clock=lambda: past).issue(person.id_number).token
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, person.id_number, stale)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "token_expired"


async def test_a_forged_token_is_refused(
    gateway: Gateway, channel: Channel, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    forged = CardTokens(b"\x01" * 32, gateway.store).issue(person.id_number).token
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, person.id_number, forged)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "token_forged"


async def test_a_request_without_a_basis_is_refused(
    channel: Channel, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(LIBRARY) as lib:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await card_pb2_grpc.CardServiceStub(lib).VerifyCard(
                card_pb2.VerifyCardRequest(
                    card=common_pb2.CardRef(card_number=person.id_number),
                    purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
                )
            )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "basis_missing"


async def test_a_missing_purpose_is_invalid_argument(
    channel: Channel, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with channel(CITIZEN_APP) as app:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
                card_pb2.IssueCardTokenRequest(
                    card=common_pb2.CardRef(card_number=person.id_number)
                )
            )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "purpose is required" in (info.value.details() or "")


async def test_an_oversized_request_is_refused(channel: Channel) -> None:
    async with channel(CITIZEN_APP) as app:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(app, "1" * (128 * 1024))
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_logs_carry_the_request_but_never_the_card_number_or_name(
    channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
            token = await issue_token(app, person.id_number)
            await insurance_status(hosp, person.id_number, token)
            with pytest.raises(grpc.aio.AioRpcError):
                await insurance_status(hosp, person.id_number, token)
    rpc_events = [e for e in events if e["event"] in {"rpc_completed", "rpc_refused"}]
    assert [e["event"] for e in rpc_events] == ["rpc_completed", "rpc_completed", "rpc_refused"]
    assert rpc_events[2]["reason"] == "token_replayed"
    assert all(uuid.UUID(e["request_id"]).version == 4 for e in rpc_events)
    text = repr(events)
    assert person.id_number not in text
    assert person.name not in text
