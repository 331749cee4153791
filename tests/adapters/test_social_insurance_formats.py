"""The 1101 code formats: every field passed on is checked; the published samples all pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError
from structlog.testing import capture_logs

from adapters.social_insurance import (
    Population,
    SocialInsuranceClient,
    start_reference_server,
    wire,
)
from gateway.errors import BackendUnavailable

FIXTURES = Path(__file__).parent / "fixtures"
EMPLOYEE = "110101199003074477"
POISON = "<script>alert(1)</script>\u202e\x00"


def _golden(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return document


def _with(name: str, path: tuple[str | int, ...], value: object) -> bytes:
    document = _golden(name)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(document, ensure_ascii=False).encode()


def _scheme(field: str, value: object) -> bytes:
    return _with("1101_person_info.json", ("output", "insuinfo", 0, field), value)


def _card(field: str, value: object) -> bytes:
    return _with("cr01_card_info.json", ("output", "cardinfo", field), value)


def _problem(parse: Callable[[bytes], object], body: bytes) -> str:
    with pytest.raises(ValidationError) as info:
        parse(body)
    (error,) = info.value.errors(include_url=False, include_input=False)
    return ".".join(str(part) for part in error["loc"])


BAD_SCHEME_FIELDS = {
    "insutype poisoned": ("insutype", POISON),
    "insutype 2 digits": ("insutype", "31"),
    "insutype 4 digits": ("insutype", "3100"),
    "insutype full-width digits": ("insutype", "\uff13\uff11\uff10"),
    "insutype empty": ("insutype", ""),
    "insutype with a newline": ("insutype", "310\n"),
    "district 5 digits": ("insuplc_admdvs", "11010"),
    "district unknown province": ("insuplc_admdvs", "990100"),
    "district with markup": ("insuplc_admdvs", "<b>110100</b>"),
    "start date unpadded": ("psn_insu_date", "2012-7-1"),
    "start date not in the calendar": ("psn_insu_date", "2012-02-30"),
    "start date before 1900": ("psn_insu_date", "1899-12-31"),
    "start date with a time": ("psn_insu_date", "2012-07-01 00:00:00"),
    "pause date poisoned": ("paus_insu_date", POISON),
    "employer bidi override": ("emp_name", "测试\u202e单位"),
    "employer NUL": ("emp_name", "测试单位\x00"),
    "employer zero-width space": ("emp_name", "测试\u200b单位"),
    "employer markup": ("emp_name", "<img src=x onerror=alert(1)>"),
    "employer line break": ("emp_name", "测试\n单位"),
    "employer leading space": ("emp_name", " 测试单位"),
    "employer too long": ("emp_name", "测" * 201),
    "balance negative": ("balc", -1),
}


@pytest.mark.parametrize(
    ("field", "value"), BAD_SCHEME_FIELDS.values(), ids=BAD_SCHEME_FIELDS.keys()
)
def test_a_scheme_field_out_of_format_is_refused_by_name(field: str, value: object) -> None:
    assert _problem(wire.parse_person_info, _scheme(field, value)) == (f"output.insuinfo.0.{field}")


BAD_CARD_FIELDS = {
    "name poisoned": ("psn_name", POISON),
    "name with markup": ("psn_name", "<b>李明</b>"),
    "name with bidi isolate": ("psn_name", "李\u2066明"),
    "name with digits": ("psn_name", "李明2"),
    "name with two spaces": ("psn_name", "Anne  Li"),
    "name ending in a separator": ("psn_name", "李明·"),
    "name empty": ("psn_name", ""),
    "name too long": ("psn_name", "李" * 51),
    "person number with a space": ("psn_no", "1100 0011"),
    "person number too long": ("psn_no", "1" * 31),
    "card code with a dash": ("card_sn", "110100-D156"),
    "issuing district letters": ("issu_admdvs", "BJ0100"),
}


@pytest.mark.parametrize(("field", "value"), BAD_CARD_FIELDS.values(), ids=BAD_CARD_FIELDS.keys())
def test_a_card_field_out_of_format_is_refused_by_name(field: str, value: object) -> None:
    assert _problem(wire.parse_card_info, _card(field, value)) == f"output.cardinfo.{field}"


def test_the_person_number_of_1101_is_checked_too() -> None:
    body = _with("1101_person_info.json", ("output", "baseinfo", "psn_no"), POISON)

    assert _problem(wire.parse_person_info, body) == "output.baseinfo.psn_no"


GOOD_NAMES = ["李明", "张秀英", "买买提·艾力", "Anne-Marie Li", "O'Neil", "J. Smith", "Zoë"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_of_every_script_and_their_separators_pass(name: str) -> None:
    card = wire.parse_card_info(_card("psn_name", name)).output.cardinfo
    assert wire.to_card_holder(card).name == name


GOOD_SCHEME_VALUES = {
    "insutype not in our name table": ("insutype", "399"),
    "first year": ("psn_insu_date", "1900-01-01"),
    "last year": ("paus_insu_date", "2099-12-31"),
    "employer with brackets and a space": ("emp_name", "华康\uff08北京\uff09医疗器械 有限公司"),
    "employer absent": ("emp_name", ""),
    "balance with cents": ("balc", 0.01),
}


@pytest.mark.parametrize(
    ("field", "value"), GOOD_SCHEME_VALUES.values(), ids=GOOD_SCHEME_VALUES.keys()
)
def test_well_formed_scheme_values_pass(field: str, value: object) -> None:
    wire.parse_person_info(_scheme(field, value))


def test_every_published_sample_passes() -> None:
    person = wire.parse_person_info((FIXTURES / "1101_person_info.json").read_bytes())
    card = wire.parse_card_info((FIXTURES / "cr01_card_info.json").read_bytes())

    assert [s.insutype for s in wire.to_person_insurance(person.output).schemes] == [
        "310",
        "510",
        "390",
    ]
    assert wire.to_card_holder(card.output.cardinfo).issuing_district == "110100"


@pytest.mark.integration
async def test_every_citizen_of_the_reference_back_end_passes() -> None:
    server = await start_reference_server()
    client = SocialInsuranceClient(server.url)
    try:
        people = Population.default().people
        for at in range(0, len(people), 50):
            batch = people[at : at + 50]
            holders = await asyncio.gather(*(client.resolve(p.id_number, timeout=5) for p in batch))
            insured = await asyncio.gather(
                *(client.person_insurance(p.id_number, timeout=5) for p in batch)
            )
            assert [h.holder_id for h in holders] == [p.psn_no for p in batch]
            assert [i.schemes for i in insured] == [p.schemes for p in batch]
    finally:
        await client.close()
        await server.close()


@pytest.fixture
async def poisoned() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(body: bytes) -> str:
        async def answer(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=body, content_type="application/json")

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


@pytest.mark.integration
async def test_a_poisoned_field_is_a_malformed_answer_and_nothing_of_it_is_repeated(
    poisoned: Callable[[bytes], Awaitable[str]],
) -> None:
    client = SocialInsuranceClient(await poisoned(_scheme("insutype", POISON)))
    try:
        with capture_logs() as logs, pytest.raises(BackendUnavailable) as info:
            await client.person_insurance(EMPLOYEE, timeout=2)
    finally:
        await client.close()

    assert info.value.reason == "backend_malformed"
    assert info.value.message == "social insurance back end sent a malformed answer"
    (event,) = logs
    assert event["event"] == "social_insurance_malformed_answer"
    assert event["problems"] == ["output.insuinfo.0.insutype: value_error"]
    text = json.dumps(logs, ensure_ascii=False, default=str)
    for fragment in ("script", "\u202e", "\\u202e", "\x00", "\\u0000", EMPLOYEE, "李明"):
        assert fragment not in text
