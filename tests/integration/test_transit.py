"""Transit concessions end to end: a transit operator over mutual TLS, the gateway, and a real
eligibility server speaking the Cal-ITP Eligibility Verification API on loopback.

Every test here runs under ``privacy_scan``: each response and refusal the tests saw, every log
event (structlog and the standard library's, eligibility-api's and jwcrypto's included) and
every audit leaf of the gateways they started are searched, at the end of the test, for the
riders' birth dates (in every spelling, the ID number's digits included) and the disability
register's details (certificate number, category), the student register's school and dates.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from structlog.testing import capture_logs

from adapters.eligibility import reference
from adapters.eligibility.registers import Registers
from adapters.social_insurance import start_reference_server
from adapters.social_insurance.seed import Person, Population
from gateway.api.onecard.v1 import common_pb2, transit_pb2, transit_pb2_grpc
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import check_concession, issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, TRANSIT
from tests.integration.eligibility import (
    far_reference,
    faulty_server,
    key_files,
)
from tests.integration.served import free_port

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]

SENIOR = "11010519491231002X"  # 张秀英, born 1949
EMPLOYEE = "110101199003074477"  # 李明, born 1990: no concession
SENIOR_T = transit_pb2.CONCESSION_TYPE_SENIOR
DISABLED_T = transit_pb2.CONCESSION_TYPE_DISABLED
STUDENT_T = transit_pb2.CONCESSION_TYPE_STUDENT
RPC = "onecard.v1.TransitService/CheckConcession"


# -- who is who --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registers() -> Registers:
    """The registers the gateway's own reference eligibility server decides from today."""
    return Registers.build(Population.default(), reference.service_day())


def _normal(population: Population, where: Callable[[Person], bool]) -> Person:
    return population.first(card_status=CardStatus.NORMAL, where=where)


@dataclass(frozen=True)
class Riders:
    eligible: dict[int, Person]
    not_eligible: dict[int, Person]
    expired_student: Person


@pytest.fixture(scope="module")
def riders(registers: Registers) -> Riders:
    people, today = registers.population, reference.service_day()
    senior = people.by_id_number(SENIOR)
    employee = people.by_id_number(EMPLOYEE)
    assert senior is not None and employee is not None
    assert employee.id_number not in registers.disabled | registers.students
    disabled = _normal(people, lambda p: p.id_number in registers.disabled)
    student = _normal(
        people,
        lambda p: (
            p.id_number in registers.students and registers.students[p.id_number].valid_on(today)
        ),
    )
    expired = _normal(
        people,
        lambda p: (
            p.id_number in registers.students
            and registers.students[p.id_number].valid_until < today
        ),
    )
    return Riders(
        eligible={SENIOR_T: senior, DISABLED_T: disabled, STUDENT_T: student},
        not_eligible={SENIOR_T: employee, DISABLED_T: employee, STUDENT_T: senior},
        expired_student=expired,
    )


# -- the privacy scan around every test --------------------------------------------------------


@dataclass
class Seen:
    """What a test saw and what it started, for the scan at its end."""

    start_gateway: Callable[..., Any]
    texts: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)

    async def gateway(self, **overrides: Any) -> Gateway:
        gateway: Gateway = await self.start_gateway(**overrides)
        self.gateways.append(gateway)
        return gateway

    def add(self, seen: Message | grpc.aio.AioRpcError) -> None:
        if isinstance(seen, grpc.aio.AioRpcError):
            trailers = dict(seen.trailing_metadata() or ())
            self.texts.append(f"{seen.details()} {json.dumps(trailers, ensure_ascii=False)}")
        else:
            self.texts.append(f"{seen} {seen.SerializeToString().hex()}")


def _secrets(registers: Registers) -> set[str]:
    """Birth dates and register details, each in the spellings that could leak."""
    secrets: set[str] = set()
    for person in registers.population:
        birth = person.birth_date
        secrets |= {birth.isoformat(), f"{birth:%Y%m%d}", f"{birth:%Y/%m/%d}"}
        secrets |= {f"{birth.year}年{birth.month}月{birth.day}日"}
    for record in registers.disabled.values():
        secrets |= {record.certificate_no, f'"{record.category}"', f"={record.category}"}
    for student in registers.students.values():
        secrets |= {
            student.school,
            student.valid_until.isoformat(),
            f"{student.valid_until:%Y%m%d}",
        }
    return secrets


@pytest.fixture(autouse=True)
async def privacy_scan(
    gateway_factory: Callable[..., Any],
    registers: Registers,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Seen]:
    seen = Seen(gateway_factory)
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        seen.events = events
        yield seen
    leaves = [e.leaf.decode() for g in seen.gateways for e in await g.audit_log.entries(0, 1 << 40)]
    logs = [json.dumps(e, default=str, ensure_ascii=False) for e in events]
    logs += [record.getMessage() for record in caplog.records]
    assert leaves and seen.texts, "the scan has something to search"
    assert any(e["event"].startswith("rpc_") for e in events), "the logs were captured"
    secrets = _secrets(registers)
    for where, texts in (("response", seen.texts), ("log", logs), ("audit leaf", leaves)):
        for text in texts:
            found = sorted(s for s in secrets if s in text)
            assert not found, f"{where} shows {found}: {text[:300]}"


@pytest.fixture
def seen(privacy_scan: Seen) -> Seen:
    return privacy_scan


# -- helpers -------------------------------------------------------------------------------------


async def _record(gateway: Gateway, index: int) -> dict[str, Any]:
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record: dict[str, Any] = json.loads(entry.leaf)["r"]
    return record


async def _token(gateway: Gateway, pki: PkiLayout, card: str) -> str:
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        return await issue_token(app, card)


async def _ask(
    seen: Seen, gateway: Gateway, pki: PkiLayout, card: str, concession: int, org: str = TRANSIT
) -> transit_pb2.CheckConcessionResponse:
    token = await _token(gateway, pki, card)
    async with org_channel(gateway.target, pki, org) as channel:
        try:
            response = await check_concession(channel, card, token, concession)
        except grpc.aio.AioRpcError as error:
            seen.add(error)
            raise
    seen.add(response)
    return response


async def _refusal(
    seen: Seen, gateway: Gateway, pki: PkiLayout, card: str, concession: int = SENIOR_T, **kw: Any
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _ask(seen, gateway, pki, card, concession, **kw)
    return info.value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("concession", "word"),
    [(SENIOR_T, "senior"), (DISABLED_T, "disabled"), (STUDENT_T, "student")],
)
async def test_each_concession_is_a_yes_or_a_no_and_its_validity(
    seen: Seen, pki: PkiLayout, riders: Riders, concession: int, word: str
) -> None:
    gateway = await seen.gateway()
    before = _now()

    yes = await _ask(seen, gateway, pki, riders.eligible[concession].id_number, concession)
    no = await _ask(seen, gateway, pki, riders.not_eligible[concession].id_number, concession)

    assert (yes.eligible, no.eligible) == (True, False)
    for answer in (yes, no):
        valid_until = answer.valid_until.ToDatetime(dt.UTC)
        assert before + dt.timedelta(minutes=59) < valid_until <= _now() + dt.timedelta(hours=1)
        assert sorted(answer.decision.disclosed_fields) == ["eligible", "valid_until"]
        assert answer.decision.policy_ids == ["transit-checks-concession"]
        assert {f.name for f, _ in answer.ListFields()} <= {
            "eligible",
            "valid_until",
            "decision",
            "receipt",
        }
    yes_record = await _record(gateway, yes.receipt.leaf_index)
    no_record = await _record(gateway, no.receipt.leaf_index)
    assert (yes_record["rpc"], yes_record["org"], yes_record["outcome"]) == (RPC, TRANSIT, "OK")
    assert yes_record["backend"] == f"eligibility:{word}:eligible"
    assert no_record["backend"] == f"eligibility:{word}:not_eligible"
    assert yes_record["basis"] == no_record["basis"] == "card_present"
    assert yes_record["released_sha256"] != no_record["released_sha256"]


async def test_an_expired_student_registration_is_not_eligible(
    seen: Seen, pki: PkiLayout, riders: Riders, registers: Registers
) -> None:
    gateway = await seen.gateway()
    rider = riders.expired_student
    assert registers.students[rider.id_number].valid_until < reference.service_day()

    answer = await _ask(seen, gateway, pki, rider.id_number, STUDENT_T)

    assert answer.eligible is False
    record = await _record(gateway, answer.receipt.leaf_index)
    assert record["backend"] == "eligibility:student:not_eligible"


async def test_a_rider_the_eligibility_server_has_no_record_of_is_not_eligible(
    seen: Seen, pki: PkiLayout, tmp_path: Path, population: Population, social_insurance: str
) -> None:
    keys = key_files(tmp_path / "elig-keys")
    without_her = Population(tuple(p for p in population if p.id_number != SENIOR))
    async with far_reference(keys, without_her) as server:
        gateway = await seen.gateway(
            backends={
                "social_insurance": {"url": social_insurance},
                "eligibility": {"url": server.verify_url, "credentials": keys.credentials()},
            }
        )
        answer = await _ask(seen, gateway, pki, SENIOR, SENIOR_T)

    assert answer.eligible is False  # a senior, but unknown there: no, and no hint why
    record = await _record(gateway, answer.receipt.leaf_index)
    assert record["backend"] == "eligibility:senior:not_eligible"


@pytest.fixture
async def social_insurance() -> AsyncIterator[str]:
    """A social insurance reference back end for a gateway given its own eligibility server."""
    server = await start_reference_server()
    yield server.url
    await server.close()


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("org", [HOSPITAL, LIBRARY])
async def test_a_caller_that_is_not_a_transit_operator_is_refused(
    seen: Seen, pki: PkiLayout, tmp_path: Path, social_insurance: str, org: str
) -> None:
    keys = key_files(tmp_path / "elig-keys")
    async with faulty_server(keys) as server:  # says yes to everyone: it must not be asked
        gateway = await seen.gateway(
            backends={
                "social_insurance": {"url": social_insurance},
                "eligibility": {"url": server.url, "credentials": keys.credentials()},
            }
        )
        error = await _refusal(seen, gateway, pki, SENIOR, org=org)
        assert server.calls == 0

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    index = int(dict(error.trailing_metadata() or ())["onecard-audit-index"])
    record = await _record(gateway, index)
    assert (record["org"], record["decision"], record["outcome"]) == (
        org,
        "deny",
        "PERMISSION_DENIED",
    )
    assert record["released_sha256"] == ""


async def test_a_concession_without_the_card_present_is_refused(seen: Seen, pki: PkiLayout) -> None:
    gateway = await seen.gateway()
    async with org_channel(gateway.target, pki, TRANSIT) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await transit_pb2_grpc.TransitServiceStub(channel).CheckConcession(
                transit_pb2.CheckConcessionRequest(
                    card=common_pb2.CardRef(card_number=SENIOR),
                    purpose=common_pb2.PURPOSE_FARE_CONCESSION,
                    concession_type=SENIOR_T,
                )
            )
    seen.add(info.value)
    assert (info.value.code(), reason(info.value)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "basis_missing",
    )
    assert "basis.card_present.token" in (info.value.details() or "")
    index = int(dict(info.value.trailing_metadata() or ())["onecard-audit-index"])
    assert (await _record(gateway, index))["outcome"] == info.value.code().name


async def test_a_concession_type_is_required(seen: Seen, pki: PkiLayout) -> None:
    gateway = await seen.gateway()

    error = await _refusal(seen, gateway, pki, SENIOR, transit_pb2.CONCESSION_TYPE_UNSPECIFIED)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CONCESSION_TYPE_SENIOR" in (error.details() or "")


_MESSAGES = {
    "bad_signature": "sent an answer that failed verification (signature, request id or freshness)",
    "garbage": "sent a malformed answer",
    "http_500": "answered HTTP 500",
    "error": "refused the request",
    "hang": "did not answer within 0.5s",
    "down": "is unreachable",
}
_FAILURE = {"backend_unverified": "unverified_answer", "backend_malformed": "malformed_answer"}


# -- the eligibility server failing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code", "why", "check"),
    [
        ("bad_signature", "UNAVAILABLE", "backend_unverified", "bad_signature"),
        ("expired", "UNAVAILABLE", "backend_unverified", "stale"),
        ("wrong_jti", "UNAVAILABLE", "backend_unverified", "wrong_jti"),
        ("garbage", "UNAVAILABLE", "backend_malformed", "not_jwe"),
        ("http_500", "UNAVAILABLE", "backend_unavailable", ""),
        ("error", "UNAVAILABLE", "backend_unavailable", ""),
        ("hang", "DEADLINE_EXCEEDED", "backend_timeout", ""),
        ("down", "UNAVAILABLE", "backend_unavailable", ""),
    ],
)
async def test_an_eligibility_server_failing_is_a_clear_status_and_an_audit_entry(
    seen: Seen,
    pki: PkiLayout,
    tmp_path: Path,
    social_insurance: str,
    mode: str,
    code: str,
    why: str,
    check: str,
) -> None:
    keys = key_files(tmp_path / "elig-keys")
    async with faulty_server(keys) as server:
        server.mode = mode
        url = f"http://127.0.0.1:{free_port()}/verify" if mode == "down" else server.url
        gateway = await seen.gateway(
            backends={
                "social_insurance": {"url": social_insurance},
                "eligibility": {"url": url, "timeout_s": 0.5, "credentials": keys.credentials()},
            }
        )
        error = await _refusal(seen, gateway, pki, SENIOR)
        server.release()

    assert (error.code().name, reason(error)) == (code, why)
    message = _MESSAGES.get(mode, _MESSAGES["bad_signature"])
    assert error.details() == f"eligibility server {message}"
    if check:  # the log says which check failed; the caller is told only that one did
        (event,) = [e for e in seen.events if e.get("check")]
        assert (event["event"], event["check"]) == (f"eligibility_answer_{_FAILURE[why]}", check)
    index = int(dict(error.trailing_metadata() or ())["onecard-audit-index"])
    record = await _record(gateway, index)
    assert (record["rpc"], record["outcome"], record["reason"]) == (RPC, code, why)
    assert record["backend"] == "eligibility:senior"  # asked, and no answer to record
    assert (record["decision"], record["released_sha256"]) == ("allow", "")
