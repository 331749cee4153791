"""The social insurance adapter: wire parsing, the client against real loopback servers, seed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from adapters.social_insurance import (
    Population,
    ReferenceServer,
    SocialInsuranceClient,
    start_reference_server,
    wire,
)
from gateway import cardno
from gateway.errors import BackendTimeout, BackendUnavailable, CardNotFound, GatewayError
from gateway.ports import CardStatus, InsuranceScheme, InsuranceStatus

FIXTURES = Path(__file__).parent / "fixtures"
EMPLOYEE = "110101199003074477"
RETIREE = "11010519491231002X"
UNKNOWN = "110101199003070015"  # valid check character, not in the population
SECRETS = (EMPLOYEE, "李明")

pytestmark = pytest.mark.integration


def _golden(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _assert_safe(error: GatewayError, *secrets: str) -> None:
    for secret in (*SECRETS, *secrets):
        assert secret not in error.message
        assert secret not in repr(error)


def _assert_logs_safe(logs: Sequence[Mapping[str, Any]], *secrets: str) -> None:
    text = json.dumps([dict(entry) for entry in logs], ensure_ascii=False, default=str)
    for secret in (*SECRETS, *secrets):
        assert secret not in text


# -- wire: golden fixtures -----------------------------------------------------------------------


def test_golden_1101_answer_parses_into_port_values() -> None:
    answer = wire.parse_person_info(_golden("1101_person_info.json"))

    assert answer.ok
    assert answer.output.baseinfo.brdy == dt.date(1990, 3, 7)
    person = wire.to_person_insurance(answer.output)
    assert person.holder_id == "11000011000000000002"
    assert person.schemes == (
        InsuranceScheme(
            insutype="310",
            status=InsuranceStatus.ACTIVE,
            start_date=dt.date(2012, 7, 1),
            pause_date=None,
            insured_district="110100",
            employer_name="测试单位",
            balance=Decimal("5000.00"),
        ),
        InsuranceScheme(
            insutype="510",
            status=InsuranceStatus.ACTIVE,
            start_date=dt.date(2012, 7, 1),
            pause_date=None,
            insured_district="110100",
            employer_name="测试单位",
            balance=Decimal("0.00"),
        ),
        InsuranceScheme(
            insutype="390",
            status=InsuranceStatus.TERMINATED,
            start_date=dt.date(2008, 1, 1),
            pause_date=dt.date(2012, 6, 30),
            insured_district="110100",
            employer_name=None,
            balance=Decimal("1234.56"),
        ),
    )
    assert str(person.schemes[2].balance) == "1234.56"


def test_golden_cr01_answer_parses_into_card_holder() -> None:
    holder = wire.to_card_holder(
        wire.parse_card_info(_golden("cr01_card_info.json")).output.cardinfo
    )

    assert holder.holder_id == "11000011000000000002"
    assert holder.card_status is CardStatus.REPORTED_LOST
    assert holder.issuing_district == "110100"


def test_golden_not_found_answer_is_recognised() -> None:
    head = wire.parse_head(_golden("1101_not_found.json"))

    assert not head.ok
    assert head.not_found


def _mutated(path: tuple[str | int, ...], value: object) -> bytes:
    document = json.loads(_golden("1101_person_info.json"))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(document, ensure_ascii=False).encode()


MALFORMED_1101 = {
    "infcode as text": _mutated(("infcode",), "0"),
    "balc as text list": _mutated(("output", "insuinfo", 0, "balc"), ["5000"]),
    "balc with 3 decimals": _mutated(("output", "insuinfo", 0, "balc"), 1.005),
    "psn_insu_stas as number": _mutated(("output", "insuinfo", 0, "psn_insu_stas"), 1),
    "unknown psn_insu_stas": _mutated(("output", "insuinfo", 0, "psn_insu_stas"), "9"),
    "brdy with slashes": _mutated(("output", "baseinfo", "brdy"), "1990/03/07"),
    "psn_insu_date as number": _mutated(("output", "insuinfo", 0, "psn_insu_date"), 20120701),
    "insuinfo as object": _mutated(("output", "insuinfo"), {"insutype": "310"}),
    "baseinfo missing": _mutated(("output", "baseinfo"), None),
    "truncated": _golden("1101_person_info.json")[:200],
}


@pytest.mark.parametrize("body", MALFORMED_1101.values(), ids=MALFORMED_1101.keys())
async def test_malformed_1101_answer_is_backend_unavailable(
    canned: Callable[..., Awaitable[str]], body: bytes
) -> None:
    client = SocialInsuranceClient(await canned(body=body))
    try:
        with capture_logs() as logs, pytest.raises(BackendUnavailable) as info:
            await client.person_insurance(EMPLOYEE, timeout=2)
    finally:
        await client.close()
    assert "malformed" in info.value.message
    assert info.value.reason == "backend_malformed"
    _assert_safe(info.value)
    assert [entry["event"] for entry in logs] == ["social_insurance_malformed_answer"]
    _assert_logs_safe(logs)


# -- the client against the reference back end ---------------------------------------------------


@pytest.fixture
async def reference() -> AsyncIterator[ReferenceServer]:
    server = await start_reference_server()
    yield server
    await server.close()


@pytest.fixture
async def client(reference: ReferenceServer) -> AsyncIterator[SocialInsuranceClient]:
    client = SocialInsuranceClient(reference.url)
    yield client
    await client.close()


def test_reference_server_binds_loopback(reference: ReferenceServer) -> None:
    assert reference.host == "127.0.0.1"
    assert reference.url == f"http://127.0.0.1:{reference.port}"
    assert reference.port > 0


async def test_reference_server_refuses_wildcard_address() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        await start_reference_server(host="0.0.0.0")


@pytest.mark.parametrize("status", list(CardStatus))
async def test_resolve_reports_each_card_status(
    client: SocialInsuranceClient, status: CardStatus
) -> None:
    person = Population.default().first(card_status=status)

    holder = await client.resolve(person.id_number, timeout=2)

    assert holder.card_status is status
    assert holder.holder_id == person.psn_no
    assert holder.name == person.name
    assert holder.issuing_district == person.issuing_district


async def test_person_insurance_returns_the_schemes(client: SocialInsuranceClient) -> None:
    for id_number in (EMPLOYEE, RETIREE):
        person = Population.default().by_id_number(id_number)
        assert person is not None

        insurance = await client.person_insurance(id_number, timeout=2)

        assert insurance.holder_id == person.psn_no
        assert insurance.schemes == person.schemes
        assert insurance.schemes[0].status is InsuranceStatus.ACTIVE


async def test_paused_and_terminated_schemes_come_through(client: SocialInsuranceClient) -> None:
    population = Population.default()
    for status in (InsuranceStatus.SUSPENDED, InsuranceStatus.TERMINATED):
        person = population.first(insurance_status=status)
        insurance = await client.person_insurance(person.id_number, timeout=2)
        paused = [s for s in insurance.schemes if s.status is status]
        assert paused
        assert all(s.pause_date is not None for s in paused)


async def test_one_pooled_session_serves_concurrent_calls(client: SocialInsuranceClient) -> None:
    people = Population.default().people[:20]

    holders = await asyncio.gather(*(client.resolve(p.id_number, timeout=2) for p in people))

    assert [h.holder_id for h in holders] == [p.psn_no for p in people]


@pytest.mark.parametrize("method", ["resolve", "person_insurance"])
async def test_unknown_person_is_card_not_found(client: SocialInsuranceClient, method: str) -> None:
    with capture_logs() as logs, pytest.raises(CardNotFound) as info:
        await getattr(client, method)(UNKNOWN, timeout=2)

    _assert_safe(info.value, UNKNOWN, "未查询到")
    assert [entry["event"] for entry in logs] == ["social_insurance_person_not_found"]
    _assert_logs_safe(logs, UNKNOWN)


# -- the reference back end answers malformed requests like the platform ----------------------


async def _post_raw(reference: ReferenceServer, body: bytes) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(reference.url + wire.PATH, data=body) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"infno": "1101", "input": {}}).encode(),
    ],
    ids=["not json", "not an object", "header fields missing"],
)
async def test_reference_answers_malformed_requests_with_infcode_minus_one(
    reference: ReferenceServer, body: bytes
) -> None:
    answer = await _post_raw(reference, body)

    assert answer["infcode"] == -1
    assert answer["err_msg"].startswith("请求报文格式错误")
    assert len(answer["inf_refmsgid"]) == 30
    assert len(answer["respond_time"]) == 17


async def test_reference_answers_unknown_transaction_and_bad_input(
    reference: ReferenceServer,
) -> None:
    envelope = SocialInsuranceClient(reference.url)._envelope("9999", wire.card_info_query(RETIREE))
    unknown = await _post_raw(reference, envelope.model_dump_json().encode())
    bad = envelope.model_copy(update={"infno": "1101", "input": {"data": {"certno": 1}}})
    invalid = await _post_raw(reference, bad.model_dump_json().encode())

    assert (unknown["infcode"], unknown["err_msg"]) == (-1, "交易编号[9999]不存在")
    assert invalid["infcode"] == -1
    assert invalid["err_msg"].startswith("交易输入校验失败")


# -- failures of the back end --------------------------------------------------------------------


@pytest.fixture
async def canned() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start loopback servers that answer every request with a fixed status and body."""
    runners: list[web.AppRunner] = []

    async def start(
        *, body: bytes, status: int = 200, content_type: str = "application/json"
    ) -> str:
        async def answer(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=body, status=status, content_type=content_type)

        app = web.Application()
        app.router.add_post(wire.PATH, answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


RAW_BACKEND_TEXT = f"java.lang.NullPointerException: certno={EMPLOYEE} psn_name=李明"

FAILING_ANSWERS = {
    "HTTP 500": {"status": 500, "body": RAW_BACKEND_TEXT.encode(), "content_type": "text/plain"},
    "HTTP 502": {"status": 502, "body": b"<html>Bad Gateway</html>", "content_type": "text/html"},
    "not JSON": {"body": f"<html>{RAW_BACKEND_TEXT}</html>".encode(), "content_type": "text/html"},
    "empty": {"body": b""},
    "infcode -1": {
        "body": json.dumps(
            {"infcode": -1, "err_msg": f"签名校验失败 {RAW_BACKEND_TEXT}", "output": {}},
            ensure_ascii=False,
        ).encode()
    },
    "another person": {
        "body": _golden("cr01_card_info.json").replace(EMPLOYEE.encode(), RETIREE.encode())
    },
}


@pytest.mark.parametrize("answer", FAILING_ANSWERS.values(), ids=FAILING_ANSWERS.keys())
async def test_failing_answers_are_backend_unavailable_with_a_safe_message(
    canned: Callable[..., Awaitable[str]], answer: dict[str, Any]
) -> None:
    client = SocialInsuranceClient(await canned(**answer))
    try:
        with capture_logs() as logs, pytest.raises(BackendUnavailable) as info:
            await client.resolve(EMPLOYEE, timeout=2)
    finally:
        await client.close()

    _assert_safe(info.value, RAW_BACKEND_TEXT, "NullPointer", "签名校验失败", "Bad Gateway")
    assert logs
    assert all(entry["event"].startswith("social_insurance_") for entry in logs)
    _assert_logs_safe(logs, RAW_BACKEND_TEXT, "NullPointer", "签名校验失败")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("method", ["resolve", "person_insurance"])
async def test_backend_down_is_backend_unavailable(method: str) -> None:
    client = SocialInsuranceClient(f"http://127.0.0.1:{_closed_port()}")
    try:
        with capture_logs() as logs, pytest.raises(BackendUnavailable) as info:
            await getattr(client, method)(EMPLOYEE, timeout=2)
    finally:
        await client.close()

    assert info.value.message == "social insurance back end is unreachable"
    assert [entry["event"] for entry in logs] == ["social_insurance_unreachable"]
    _assert_logs_safe(logs)


@pytest.fixture
async def hanging_url() -> AsyncIterator[str]:
    """A raw TCP server on loopback that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    for writer in writers:
        writer.close()
    await server.wait_closed()


@pytest.mark.parametrize("method", ["resolve", "person_insurance"])
async def test_hanging_backend_is_backend_timeout(hanging_url: str, method: str) -> None:
    client = SocialInsuranceClient(hanging_url)
    started = time.monotonic()
    try:
        with capture_logs() as logs, pytest.raises(BackendTimeout) as info:
            await getattr(client, method)(EMPLOYEE, timeout=0.2)
    finally:
        await client.close()

    assert time.monotonic() - started < 1.5
    assert info.value.message == "social insurance back end did not answer within 0.2s"
    assert [entry["event"] for entry in logs] == ["social_insurance_timeout"]
    _assert_logs_safe(logs)


# -- the synthetic population --------------------------------------------------------------------


def test_every_id_number_is_valid_and_unique() -> None:
    population = Population.default()

    assert len(population) == 300
    assert all(cardno.normalize(p.id_number) == p.id_number for p in population)
    assert len({p.id_number for p in population}) == len(population)
    assert len({p.psn_no for p in population}) == len(population)
    assert all(dt.date(1930, 1, 1) <= p.birth_date <= dt.date(2010, 12, 31) for p in population)
    assert all(cardno.birth_date(p.id_number) == p.birth_date for p in population)


def test_every_card_status_is_present_and_most_cards_are_normal() -> None:
    counts = {s: sum(p.card_status is s for p in Population.default()) for s in CardStatus}

    assert all(count >= 3 for count in counts.values())
    assert counts[CardStatus.NORMAL] > len(Population.default()) // 2


def test_population_has_varied_insurance() -> None:
    population = Population.default()
    insutypes = {s.insutype for p in population for s in p.schemes}
    statuses = {s.status for p in population for s in p.schemes}

    assert {"310", "320", "330", "390", "510"} <= insutypes
    assert statuses == set(InsuranceStatus)
    assert any(s.balance is not None and s.employer_name for p in population for s in p.schemes)
    assert all(p.schemes for p in population)


def test_population_is_deterministic() -> None:
    assert Population.generate() == Population.generate()
    assert Population.generate(seed=7) != Population.generate()


@pytest.mark.parametrize("id_number", [RETIREE, EMPLOYEE])
def test_documented_citizens_have_normal_cards_and_active_insurance(id_number: str) -> None:
    person = Population.default().by_id_number(id_number)

    assert person is not None
    assert person.card_status is CardStatus.NORMAL
    assert any(s.status is InsuranceStatus.ACTIVE for s in person.schemes)


def test_lookup_api() -> None:
    population = Population.default()
    lost = population.first(card_status=CardStatus.REPORTED_LOST)
    worker = population.first(card_status=CardStatus.NORMAL, insutype="310", employed=True)

    assert lost.card_status is CardStatus.REPORTED_LOST
    assert worker.scheme("310") is not None
    assert worker.employed
    assert population.by_id_number(RETIREE.lower()) is not None
    assert population.by_id_number(UNKNOWN) is None
    with pytest.raises(LookupError):
        population.first(insutype="999")
