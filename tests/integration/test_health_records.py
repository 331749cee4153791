"""Health records through the gateway over mutual TLS, from the reference FHIR server.

The embedded default wires the reference FHIR server in-process; the expectations come from the
seed (``adapters.fhir.seed``), the records any seeded server holds, never from the answers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters.fhir import ReferenceFhirServer, seed, start_reference_fhir_server
from adapters.social_insurance.seed import Population
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY
from tests.integration.health import (
    DOCUMENTS,
    IMAGING,
    LAB,
    all_records,
    get_record,
    kinds,
    list_records,
    released_digest,
    seeded,
    seeded_dates,
)
from tests.integration.served import free_port

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
RICH = seed.RICH_PERSON
OTHER = "11010519491231002X"


async def _record(gateway: Gateway, index: int) -> dict[str, Any]:
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record: dict[str, Any] = json.loads(entry.leaf)["r"]
    return record


async def _leaf(gateway: Gateway, index: int) -> bytes:
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    return bytes(entry.leaf)


async def test_a_hospital_pages_through_another_hospitals_lab_reports_with_the_patient_present(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    person = population.by_id_number(RICH)
    assert person is not None
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        records, pages = await all_records(hosp, app, RICH, LAB, page_size=20)
    expected = seeded_dates(person, "DiagnosticReport")
    assert pages == -(-len(expected) // 20) > 1
    assert [r.date for r in records] == expected  # every one, newest first, once
    assert len({r.record_id for r in records}) == len(records)
    assert {(r.kind, r.source, r.status) for r in records} == {
        ("DiagnosticReport", "reference", "final")
    }
    panels = {panel.display for panel in seed.LAB_PANELS}
    hospitals = {h.name for h in seed.HOSPITALS}
    assert all(r.title in panels and r.performer in hospitals for r in records)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (dt.date(2022, 1, 1), None),
        (None, dt.date(2020, 6, 30)),
        (dt.date(2021, 3, 1), dt.date(2023, 8, 31)),
    ],
)
async def test_date_filters_bound_the_list(
    gateway: Gateway,
    pki: PkiLayout,
    population: Population,
    since: dt.date | None,
    until: dt.date | None,
) -> None:
    person = population.by_id_number(RICH)
    assert person is not None
    fields = {
        "date_from": since.isoformat() if since else "",
        "date_to": until.isoformat() if until else "",
    }
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        records, _ = await all_records(hosp, app, RICH, LAB, page_size=100, **fields)
    expected = seeded_dates(person, "DiagnosticReport", since, until)
    assert 0 < len(expected) < len(seeded(person, "DiagnosticReport"))
    assert [r.date for r in records] == expected


async def test_a_lab_report_comes_as_fhir_json_with_its_observations_and_is_audited_by_digest(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        page = await list_records(hosp, app, RICH, LAB, page_size=3)
        chosen = page.records[2]
        answer = await get_record(hosp, app, RICH, chosen.record_id)

    assert answer.summary == chosen
    bundle = Bundle.model_validate_json(answer.fhir_json)  # valid R4 (R4B models)
    assert bundle.type == "collection"
    report = json.loads(answer.fhir_json)["entry"][0]["resource"]
    assert report["resourceType"] == "DiagnosticReport"
    assert report["id"] == chosen.record_id.rsplit("/", 1)[1]
    results = [r["reference"].rsplit("/", 1)[1] for r in report["result"]]
    observations = json.loads(answer.fhir_json)["entry"][1:]
    assert [o["resource"]["id"] for o in observations] == results
    panel = next(p for p in seed.LAB_PANELS if p.code == report["code"]["coding"][0]["code"])
    assert [o["resource"]["code"]["coding"][0]["code"] for o in observations] == [
        a.code for a in panel.analytes
    ]
    assert kinds(answer.fhir_json) == {"DiagnosticReport": 1, "Observation": len(results)}
    assert answer.resource_count == 1 + len(results)
    assert list(answer.decision.policy_ids) == ["hospital-reads-lab-record-card-present"]

    record = await _record(gateway, answer.receipt.leaf_index)
    assert (record["rpc"], record["outcome"], record["backend"], record["basis"]) == (
        "onecard.v1.HealthRecordService/GetHealthRecord",
        "OK",
        "fhir",
        "card_present",
    )
    assert record["released_sha256"] == released_digest(answer)
    leaf = await _leaf(gateway, answer.receipt.leaf_index)
    for secret in (
        RICH.encode(),
        report["code"]["text"].encode(),
        b"valueQuantity",
        b"Observation",
    ):
        assert secret not in leaf  # the digest of what left, never the clinical content


@pytest.mark.parametrize("category", [IMAGING, DOCUMENTS])
async def test_with_the_patient_present_imaging_and_documents_are_refused_and_audited(
    gateway: Gateway, pki: PkiLayout, category: int
) -> None:
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await list_records(hosp, app, RICH, category)
    error = info.value
    assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "policy_denied")
    assert error.details() == (
        "ListHealthRecords denied by policy card-present-reads-lab-records-only"
    )
    record = await _record(
        gateway, int(dict(error.trailing_metadata() or ())["onecard-audit-index"])
    )
    assert (record["decision"], record["outcome"], record["released_sha256"]) == (
        "deny",
        "PERMISSION_DENIED",
        "",
    )


async def test_a_library_reads_no_health_records(gateway: Gateway, pki: PkiLayout) -> None:
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, LIBRARY) as library,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await list_records(library, app, RICH, LAB)
    assert reason(info.value) == "policy_denied"


async def test_a_record_of_another_patient_or_another_category_is_not_found(
    gateway: Gateway, pki: PkiLayout
) -> None:
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        theirs = (await list_records(hosp, app, OTHER, LAB)).records[0].record_id
        mine = (await list_records(hosp, app, RICH, LAB)).records[0].record_id
        imaging_id = mine.replace("DiagnosticReport", "ImagingStudy")
        for record_id in (theirs, imaging_id, "elsewhere/DiagnosticReport/x1"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await get_record(hosp, app, RICH, record_id)
            assert (info.value.code(), reason(info.value)) == (
                grpc.StatusCode.NOT_FOUND,
                "record_not_found",
            )
            assert theirs.rsplit("/", 1)[1] not in (info.value.details() or "")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"category": 0}, "category is required"),
        ({"date_from": "2024-13-01"}, "date_from must be a date as YYYY-MM-DD"),
        ({"date_to": "20240101"}, "date_to must be a date as YYYY-MM-DD"),
        ({"date_from": "2024-02-01", "date_to": "2024-01-01"}, "date_from must not be after"),
        ({"page_size": 101}, "page_size must be 1 to 100"),
        ({"page_token": "abc"}, "page_token must be the next_page_token"),
    ],
)
async def test_bad_list_requests_are_refused_with_a_clear_message(
    gateway: Gateway, pki: PkiLayout, fields: dict[str, Any], message: str
) -> None:
    fields = dict(fields)  # the parametrized dict is shared by every store's run
    category = fields.pop("category", LAB)
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await list_records(hosp, app, RICH, category, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


async def test_a_malformed_record_id_is_refused(gateway: Gateway, pki: PkiLayout) -> None:
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get_record(hosp, app, RICH, "../../Patient/x")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "record_id must be a record_id from ListHealthRecords" in (info.value.details() or "")


# -- several sources ------------------------------------------------------------------------------


@pytest.fixture
async def two_sources() -> AsyncIterator[tuple[ReferenceFhirServer, ReferenceFhirServer]]:
    """A hospital's own FHIR server (its records only) and a regional exchange (everyone's)."""
    own = await start_reference_fhir_server(hospitals=[seed.HOSPITALS[0].code])
    exchange = await start_reference_fhir_server()
    yield own, exchange
    await own.close()
    await exchange.close()


async def test_several_sources_merge_without_duplicates_naming_each_records_source(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    two_sources: tuple[ReferenceFhirServer, ReferenceFhirServer],
) -> None:
    own, exchange = two_sources
    gateway: Gateway = await gateway_factory(
        backends={"fhir": {"url": own.url, "sources": {"exchange": exchange.url}}}
    )
    person = population.by_id_number(RICH)
    assert person is not None
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        records, _ = await all_records(hosp, app, RICH, LAB, page_size=100)
    first_hospital = seed.HOSPITALS[0].name
    assert len(records) == len(seeded(person, "DiagnosticReport"))  # not the sum of both
    assert {r.source for r in records if r.performer == first_hospital} == {"main"}
    assert {r.source for r in records if r.performer != first_hospital} == {"exchange"}
    assert len(seeded(person, "DiagnosticReport", (seed.HOSPITALS[0].code,))) > 0


async def test_a_source_down_gives_a_partial_answer_that_is_audited(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    two_sources: tuple[ReferenceFhirServer, ReferenceFhirServer],
) -> None:
    _, exchange = two_sources
    gateway: Gateway = await gateway_factory(
        backends={
            "fhir": {
                "url": exchange.url,
                "sources": {"down": f"http://127.0.0.1:{free_port()}/fhir"},
            }
        }
    )
    person = population.by_id_number(RICH)
    assert person is not None
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        answer = await list_records(hosp, app, RICH, LAB, page_size=100)
    assert answer.partial is True
    assert list(answer.unavailable_sources) == ["down"]
    assert len(answer.records) == len(seeded(person, "DiagnosticReport"))
    record = await _record(gateway, answer.receipt.leaf_index)
    assert (record["outcome"], record["backend"]) == ("OK", "fhir")
    assert record["released_sha256"] == released_digest(answer)  # the digest covers "partial"


async def test_all_sources_down_is_a_clear_failure_not_an_empty_list(
    gateway_factory: Callable[..., Any], pki: PkiLayout
) -> None:
    gateway: Gateway = await gateway_factory(
        backends={"fhir": {"url": f"http://127.0.0.1:{free_port()}/fhir"}}
    )
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await list_records(hosp, app, RICH, LAB)
    assert (info.value.code(), reason(info.value)) == (
        grpc.StatusCode.UNAVAILABLE,
        "backend_unavailable",
    )
    assert info.value.details() == "FHIR server is unreachable"
