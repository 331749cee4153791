"""The FHIR adapter against a hostile or broken server: what it must refuse, not what it reads.

A small loopback FHIR server (aiohttp) answers as one test scripts it, for what neither our
reference server nor sekmet will ever do: a Patient search that ignores ``identifier`` (servers
ignore search parameters they do not support, which FHIR allows), a lab search that ignores
``category``, a lab record id naming a radiology report, Bundle entries that are not objects.
Each must end as a refusal of the gateway's (``RecordNotFound``, ``backend_malformed``), never
another patient's or another category's data, never an unexpected exception.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from adapters.fhir import FhirClient, Source
from adapters.fhir import client as fhir_client
from gateway.errors import BackendUnavailable, RecordNotFound
from gateway.ports import HealthCategory

pytestmark = pytest.mark.integration
SYSTEM = "urn:oid:2.16.156.10011.1.1"
ASKED, STRANGER = "110101199003074477", "110105194912310021"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


def _report(rid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "category": [{"coding": [{"system": V2_0074, "code": code}]}],
        "code": {"text": f"{code} report {rid}"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01",
    }


@dataclass
class Hostile:
    """What the server answers: the patient's identifier value and each search's entries."""

    patient_identifier: str = ASKED
    reports: list[Any] = field(default_factory=lambda: [{"resource": _report("lab1", "LAB")}])
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    observations: list[Any] = field(default_factory=list)
    raw_search: str = ""  # the DiagnosticReport search's body as is, when set

    async def handle(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        if tail == "Patient":
            patient = {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [{"system": SYSTEM, "value": self.patient_identifier}],
            }
            return _bundle([{"resource": patient}])
        if tail == "DiagnosticReport" and self.raw_search:
            return web.Response(text=self.raw_search, content_type="application/fhir+json")
        if tail == "DiagnosticReport":
            return _bundle(self.reports)
        if tail == "Observation":
            return _bundle(self.observations)
        if tail.startswith("DiagnosticReport/") and tail.split("/", 1)[1] in self.by_id:
            return _json(self.by_id[tail.split("/", 1)[1]])
        return _json({"resourceType": "OperationOutcome", "issue": []}, status=404)


def _bundle(entries: list[Any]) -> web.Response:
    return _json({"resourceType": "Bundle", "type": "searchset", "entry": entries})


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/fhir+json")


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[Hostile, FhirClient]]:
    server = Hostile()
    app = web.Application()
    app.router.add_get("/fhir/{tail:.+}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/fhir"
    client = FhirClient([Source("h", url)], identifier_system=SYSTEM)
    try:
        yield server, client
    finally:
        await client.close()
        await runner.cleanup()


async def test_the_server_answers_what_it_was_asked_when_it_behaves(
    hostile: tuple[Hostile, FhirClient],
) -> None:
    """The control: the same server, behaving, yields the patient's lab report."""
    _, client = hostile
    found = await client.records(ASKED, HealthCategory.LAB, since=None, until=None, timeout=5)
    assert [r.record_id for r in found.records] == ["h/DiagnosticReport/lab1"]


async def test_a_patient_search_that_ignores_the_identifier_is_another_persons_answer(
    hostile: tuple[Hostile, FhirClient],
) -> None:
    server, client = hostile
    server.patient_identifier = STRANGER  # the only patient it has, whatever was asked
    with pytest.raises(BackendUnavailable) as info:
        await client.records(ASKED, HealthCategory.LAB, since=None, until=None, timeout=5)
    assert info.value.reason == "backend_malformed"
    server.by_id["lab1"] = _report("lab1", "LAB")
    with pytest.raises(BackendUnavailable):
        await client.record(ASKED, HealthCategory.LAB, "h/DiagnosticReport/lab1", timeout=5)


async def test_a_lab_search_that_ignores_the_category_releases_no_other_category(
    hostile: tuple[Hostile, FhirClient],
) -> None:
    server, client = hostile
    server.reports = [
        {"resource": _report("lab1", "LAB")},
        {"resource": _report("rad1", "RAD")},
        {"resource": {k: v for k, v in _report("nocat", "LAB").items() if k != "category"}},
    ]
    found = await client.records(ASKED, HealthCategory.LAB, since=None, until=None, timeout=5)
    assert [r.record_id for r in found.records] == ["h/DiagnosticReport/lab1"]


async def test_a_lab_record_id_naming_a_radiology_report_is_not_found(
    hostile: tuple[Hostile, FhirClient],
) -> None:
    server, client = hostile
    server.by_id["rad1"] = _report("rad1", "RAD")
    server.by_id["lab1"] = _report("lab1", "LAB")
    record = await client.record(ASKED, HealthCategory.LAB, "h/DiagnosticReport/lab1", timeout=5)
    assert record.summary.record_id == "h/DiagnosticReport/lab1"
    with pytest.raises(RecordNotFound):
        await client.record(ASKED, HealthCategory.LAB, "h/DiagnosticReport/rad1", timeout=5)


@pytest.mark.parametrize(
    "entries",
    [["not an entry"], [{"search": "match", "resource": _report("lab1", "LAB")}], [None]],
)
async def test_bundle_entries_of_the_wrong_shape_are_a_malformed_answer(
    hostile: tuple[Hostile, FhirClient], entries: list[Any]
) -> None:
    server, client = hostile
    server.reports = entries
    with pytest.raises(BackendUnavailable) as info:
        await client.records(ASKED, HealthCategory.LAB, since=None, until=None, timeout=5)
    assert info.value.reason == "backend_malformed"


async def test_answers_are_parsed_and_validated_off_the_event_loop(
    hostile: tuple[Hostile, FhirClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validating a page near the 8 MiB limit takes seconds of CPU: on the event loop's
    thread it would stall every other call of the gateway, whatever their deadlines."""
    server, client = hostile
    server.by_id["lab1"] = _report("lab1", "LAB")
    threads: list[int] = []
    validate = fhir_client._validate

    def spy(raw: dict[str, Any], rtype: str, source: Source) -> None:
        threads.append(threading.get_ident())
        validate(raw, rtype, source)

    monkeypatch.setattr(fhir_client, "_validate", spy)
    await client.records(ASKED, HealthCategory.LAB, since=None, until=None, timeout=5)
    await client.record(ASKED, HealthCategory.LAB, "h/DiagnosticReport/lab1", timeout=5)
    assert threads and threading.get_ident() not in threads


def _observation(oid: str, category: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [{"coding": [{"code": category}]}],
        "code": {"text": f"{category} {oid}"},
        "subject": {"reference": "Patient/p1"},
    }


async def test_a_lab_record_releases_only_the_observations_it_references(
    hostile: tuple[Hostile, FhirClient],
) -> None:
    """A server that ignores ``_id`` answers every Observation of the patient (vital signs,
    social history...): only the report's own results leave with it."""
    server, client = hostile
    server.by_id["lab1"] = _report("lab1", "LAB") | {"result": [{"reference": "Observation/o1"}]}
    server.observations = [
        {"resource": _observation("o1", "laboratory")},
        {"resource": _observation("o2", "social-history")},
    ]
    record = await client.record(ASKED, HealthCategory.LAB, "h/DiagnosticReport/lab1", timeout=5)
    assert [(r["resourceType"], r["id"]) for r in record.resources] == [
        ("DiagnosticReport", "lab1"),
        ("Observation", "o1"),
    ]


async def test_json_nested_past_the_parsers_depth_is_a_malformed_answer(
    hostile: tuple[Hostile, FhirClient],
) -> None:
    """200,000 nested arrays (400 kB) make ``json.loads`` raise RecursionError, which is no
    ValueError: it must still be a malformed answer, not an internal error."""
    server, client = hostile
    server.raw_search = '{"resourceType": "Bundle", "entry": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(BackendUnavailable) as info:
        await client.records(ASKED, HealthCategory.LAB, since=None, until=None, timeout=5)
    assert info.value.reason == "backend_malformed"
