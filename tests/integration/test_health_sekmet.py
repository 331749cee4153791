"""Health records through the gateway from ``sekmet-fhir``, a FHIR server none of our code is in.

The gateway's FHIR back end points at sekmet (seeded through its own REST API); a hospital
pages through lab reports with the patient present and reads one as FHIR JSON over mutual TLS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters.fhir import seed
from adapters.social_insurance.seed import Population
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.pki import PkiLayout
from tests.adapters.sekmet import sekmet_server
from tests.integration.conftest import CITIZEN_APP, HOSPITAL
from tests.integration.health import LAB, all_records, get_record, kinds, seeded_dates

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    person = Population.default().by_id_number(seed.RICH_PERSON)
    assert person is not None
    with sekmet_server(tmp_path_factory.mktemp("sekmet"), [person]) as url:
        yield url


async def test_a_hospital_reads_lab_reports_from_sekmet_through_the_gateway(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, sekmet: str
) -> None:
    gateway: Gateway = await gateway_factory(
        backends={"fhir": {"url": sekmet, "options": {"page_size": "10"}}}
    )
    person = population.by_id_number(seed.RICH_PERSON)
    assert person is not None
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        records, pages = await all_records(hosp, app, seed.RICH_PERSON, LAB, page_size=20)
        answer = await get_record(hosp, app, seed.RICH_PERSON, records[0].record_id)
    assert [r.date for r in records] == seeded_dates(person, "DiagnosticReport")
    assert pages == 3 and {r.source for r in records} == {"main"}
    Bundle.model_validate_json(answer.fhir_json)
    report = json.loads(answer.fhir_json)["entry"][0]["resource"]
    assert kinds(answer.fhir_json) == {"DiagnosticReport": 1, "Observation": len(report["result"])}
