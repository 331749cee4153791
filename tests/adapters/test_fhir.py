"""The FHIR adapter's reads, the same tests against our reference server and ``sekmet-fhir``.

Expectations come from the seed (``adapters.fhir.seed``), which both servers were given (the
reference server loads it, sekmet through its own REST API), never from either server's answers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator

import pytest

from adapters.fhir import FhirClient, Source, seed, start_reference_fhir_server
from adapters.social_insurance.seed import Person, Population
from gateway.errors import BackendUnavailable, RecordNotFound
from gateway.ports import HealthCategory
from tests.adapters.sekmet import sekmet_server
from tests.integration.health import seeded, seeded_dates
from tests.integration.served import free_port

pytestmark = pytest.mark.integration
RICH, OTHER = seed.RICH_PERSON, "11010519491231002X"
UNKNOWN = "110101199003070015"  # valid check character, not in the population
KIND = {
    HealthCategory.LAB: "DiagnosticReport",
    HealthCategory.IMAGING: "ImagingStudy",
    HealthCategory.DOCUMENTS: "DocumentReference",
}


def _person(id_number: str) -> Person:
    person = Population.default().by_id_number(id_number)
    assert person is not None
    return person


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with sekmet_server(tmp_path_factory.mktemp("sekmet"), [_person(RICH), _person(OTHER)]) as url:
        yield url


@pytest.fixture(params=["reference", "sekmet"])
async def base_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if request.param == "sekmet":
        yield request.getfixturevalue("sekmet")
        return
    server = await start_reference_fhir_server()
    yield server.url
    await server.close()


def _client(base_url: str, **options: int) -> FhirClient:
    return FhirClient([Source("s", base_url)], identifier_system=seed.IDENTIFIER_SYSTEM, **options)


@pytest.mark.parametrize("category", list(HealthCategory))
@pytest.mark.parametrize("id_number", [RICH, OTHER])
async def test_every_category_lists_the_seeded_records_newest_first(
    base_url: str, category: HealthCategory, id_number: str
) -> None:
    client = _client(base_url, page_size=7)  # several pages: next links are followed
    try:
        found = await client.records(id_number, category, since=None, until=None, timeout=20)
    finally:
        await client.close()
    person = _person(id_number)
    assert [r.date for r in found.records] == seeded_dates(person, KIND[category])
    assert {r.kind for r in found.records} <= {KIND[category]}
    assert found.unavailable == ()
    hospitals = {h.name for h in seed.HOSPITALS}
    assert all(r.performer in hospitals and r.source == "s" for r in found.records)
    assert all(r.record_id.startswith(f"s/{KIND[category]}/") for r in found.records)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (dt.date(2022, 1, 1), None),
        (None, dt.date(2020, 6, 30)),
        (dt.date(2021, 3, 1), dt.date(2023, 8, 31)),
    ],
)
async def test_date_prefixes_bound_the_search(
    base_url: str, since: dt.date | None, until: dt.date | None
) -> None:
    client = _client(base_url, page_size=10)
    try:
        found = await client.records(RICH, HealthCategory.LAB, since=since, until=until, timeout=20)
    finally:
        await client.close()
    expected = seeded_dates(_person(RICH), "DiagnosticReport", since, until)
    assert 0 < len(expected) < seed.RICH_LAB_REPORTS
    assert [r.date for r in found.records] == expected


async def test_a_lab_report_comes_with_its_observations(base_url: str) -> None:
    client = _client(base_url)
    try:
        found = await client.records(RICH, HealthCategory.LAB, since=None, until=None, timeout=20)
        chosen = found.records[5]
        record = await client.record(RICH, HealthCategory.LAB, chosen.record_id, timeout=20)
    finally:
        await client.close()
    report, *observations = record.resources
    assert record.summary == chosen
    assert report["resourceType"] == "DiagnosticReport"
    panel = next(p for p in seed.LAB_PANELS if p.code == report["code"]["coding"][0]["code"])
    assert [o["code"]["coding"][0]["code"] for o in observations] == [
        a.code for a in panel.analytes
    ]
    assert [f"Observation/{o['id']}" for o in observations] == [
        r["reference"] for r in report["result"]
    ]


@pytest.mark.parametrize("category", [HealthCategory.IMAGING, HealthCategory.DOCUMENTS])
async def test_an_imaging_study_or_document_is_one_resource(
    base_url: str, category: HealthCategory
) -> None:
    client = _client(base_url)
    try:
        found = await client.records(RICH, category, since=None, until=None, timeout=20)
        record = await client.record(RICH, category, found.records[0].record_id, timeout=20)
    finally:
        await client.close()
    assert [r["resourceType"] for r in record.resources] == [KIND[category]]
    identifiers = {r["identifier"][0]["value"] for r in seeded(_person(RICH), KIND[category])}
    assert record.resources[0]["identifier"][0]["value"] in identifiers


async def test_another_patients_record_or_another_category_is_not_found(base_url: str) -> None:
    client = _client(base_url)
    try:
        theirs = await client.records(OTHER, HealthCategory.LAB, since=None, until=None, timeout=20)
        mine = await client.records(
            RICH, HealthCategory.IMAGING, since=None, until=None, timeout=20
        )
        for category, record_id in (
            (HealthCategory.LAB, theirs.records[0].record_id),
            (HealthCategory.LAB, mine.records[0].record_id),  # an ImagingStudy named as lab
            (HealthCategory.LAB, "s/DiagnosticReport/no-such-id"),
            (HealthCategory.LAB, "other/DiagnosticReport/x"),
        ):
            with pytest.raises(RecordNotFound):
                await client.record(RICH, category, record_id, timeout=20)
    finally:
        await client.close()


async def test_a_patient_the_server_does_not_know_has_no_records(base_url: str) -> None:
    client = _client(base_url)
    try:
        found = await client.records(
            UNKNOWN, HealthCategory.LAB, since=None, until=None, timeout=20
        )
    finally:
        await client.close()
    assert found.records == () and found.unavailable == ()


async def test_paging_stops_at_the_cap(base_url: str) -> None:
    client = _client(base_url, page_size=2, max_pages=3)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await client.records(RICH, HealthCategory.LAB, since=None, until=None, timeout=20)
    finally:
        await client.close()
    assert info.value.reason == "backend_malformed"


async def test_a_list_across_two_servers_names_the_one_that_failed(base_url: str) -> None:
    """One source that answers and one that refuses connections: a partial answer."""
    client = FhirClient(
        [Source("ok", base_url), Source("down", f"http://127.0.0.1:{free_port()}/fhir")],
        identifier_system=seed.IDENTIFIER_SYSTEM,
    )
    try:
        found = await client.records(
            RICH, HealthCategory.DOCUMENTS, since=None, until=None, timeout=20
        )
    finally:
        await client.close()
    assert found.unavailable == ("down",)
    assert [r.date for r in found.records] == seeded_dates(_person(RICH), "DocumentReference")
