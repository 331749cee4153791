"""Health records on a standing consent and in an emergency, through the gateway.

These need the consent and emergency bases of issue 12 (``gateway/basis.py`` refuses both with
UNIMPLEMENTED until then); the lead enables them when issue 12 is merged. The policies they rely
on (policies/health.cedar) are already covered by policies/tests/health.toml.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.fhir import seed
from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import common_pb2, consent_pb2, consent_pb2_grpc, health_pb2
from gateway.api.onecard.v1 import health_pb2_grpc as health_grpc
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.services.health import EMERGENCY_WINDOW
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY
from tests.integration.health import DOCUMENTS, IMAGING, KIND, LAB, seeded_dates

pytestmark = pytest.mark.integration
RICH = seed.RICH_PERSON
_CATEGORY = {
    LAB: consent_pb2.DATA_CATEGORY_HEALTH_LAB,
    IMAGING: consent_pb2.DATA_CATEGORY_HEALTH_IMAGING,
    DOCUMENTS: consent_pb2.DATA_CATEGORY_HEALTH_DOCUMENTS,
}


async def _grant(gateway: Gateway, pki: PkiLayout, category: int) -> str:
    now = dt.datetime.now(dt.UTC)
    start, until = Timestamp(), Timestamp()
    start.FromDatetime(now - dt.timedelta(minutes=1))
    until.FromDatetime(now + dt.timedelta(days=30))
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        granted = await consent_pb2_grpc.ConsentServiceStub(app).GrantConsent(
            consent_pb2.GrantConsentRequest(
                card=common_pb2.CardRef(card_number=RICH),
                purpose=common_pb2.PURPOSE_PATRQT,
                grantee=consent_pb2.Grantee(org_id=HOSPITAL),
                categories=[_CATEGORY[category]],
                purposes=[common_pb2.PURPOSE_TREAT],
                valid_from=start,
                valid_until=until,
            )
        )
    return str(granted.consent.consent_id)


def _emergency() -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(
        emergency=common_pb2.Emergency(
            reason=common_pb2.EMERGENCY_REASON_PATIENT_INCAPACITATED,
            justification="unconscious on arrival; medication history needed",
        )
    )


async def _list(
    channel: grpc.aio.Channel, basis: common_pb2.LawfulBasis, category: int, purpose: int
) -> health_pb2.ListHealthRecordsResponse:
    response: health_pb2.ListHealthRecordsResponse = await health_grpc.HealthRecordServiceStub(
        channel
    ).ListHealthRecords(
        health_pb2.ListHealthRecordsRequest(
            card=common_pb2.CardRef(card_number=RICH),
            purpose=purpose,
            basis=basis,
            category=category,
            page_size=100,
        )
    )
    return response


async def _get(
    channel: grpc.aio.Channel, basis: common_pb2.LawfulBasis, category: int, purpose: int, rid: str
) -> health_pb2.GetHealthRecordResponse:
    response: health_pb2.GetHealthRecordResponse = await health_grpc.HealthRecordServiceStub(
        channel
    ).GetHealthRecord(
        health_pb2.GetHealthRecordRequest(
            card=common_pb2.CardRef(card_number=RICH),
            purpose=purpose,
            basis=basis,
            category=category,
            record_id=rid,
        )
    )
    return response


async def _audited(gateway: Gateway, index: int) -> dict[str, Any]:
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record: dict[str, Any] = json.loads(entry.leaf)["r"]
    return record


async def test_a_lab_consent_reads_lab_reports_and_never_imaging_or_documents(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    consent_id = await _grant(gateway, pki, LAB)
    basis = common_pb2.LawfulBasis(consent_id=consent_id)
    person = population.by_id_number(RICH)
    assert person is not None
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        listed = await _list(hosp, basis, LAB, common_pb2.PURPOSE_TREAT)
        read = await _get(hosp, basis, LAB, common_pb2.PURPOSE_TREAT, listed.records[0].record_id)
        for category in (IMAGING, DOCUMENTS):  # a category outside the consent
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _list(hosp, basis, category, common_pb2.PURPOSE_TREAT)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (await _audited(gateway, _index(info.value)))["released_sha256"] == ""
    assert [r.date for r in listed.records] == seeded_dates(person, "DiagnosticReport")
    assert read.fhir_json and read.resource_count > 1
    record = await _audited(gateway, read.receipt.leaf_index)
    assert (record["basis"], record["basis_ref"].endswith(consent_id)) == ("consent", True)


async def test_an_imaging_consent_reads_imaging_and_not_lab(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    basis = common_pb2.LawfulBasis(consent_id=await _grant(gateway, pki, IMAGING))
    person = population.by_id_number(RICH)
    assert person is not None
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        listed = await _list(hosp, basis, IMAGING, common_pb2.PURPOSE_TREAT)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(hosp, basis, LAB, common_pb2.PURPOSE_TREAT)
    assert [r.date for r in listed.records] == seeded_dates(person, "ImagingStudy")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("category", [LAB, IMAGING, DOCUMENTS])
async def test_in_an_emergency_a_hospital_sees_summaries_of_every_category_flagged(
    gateway: Gateway, pki: PkiLayout, population: Population, category: int
) -> None:
    person = population.by_id_number(RICH)
    assert person is not None
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        listed = await _list(hosp, _emergency(), category, common_pb2.PURPOSE_ETREAT)
        read = await _get(
            hosp, _emergency(), category, common_pb2.PURPOSE_ETREAT, listed.records[0].record_id
        )
    window = [d for d in seeded_dates(person, KIND[category]) if d[:10] >= _emergency_start()]
    assert [r.date for r in listed.records] == window  # only the emergency window's records
    assert window != seeded_dates(person, KIND[category])  # older ones exist, and are left out
    assert read.summary.record_id == listed.records[0].record_id
    assert read.fhir_json == "" and read.resource_count == 0  # summaries only
    for index in (listed.receipt.leaf_index, read.receipt.leaf_index):
        record = await _audited(gateway, index)
        assert (record["basis"], record["emergency"]) == ("emergency", True)


async def test_in_an_emergency_a_record_older_than_the_window_is_not_found(
    gateway: Gateway, pki: PkiLayout
) -> None:
    on_consent = common_pb2.LawfulBasis(consent_id=await _grant(gateway, pki, IMAGING))
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        listed = await _list(hosp, on_consent, IMAGING, common_pb2.PURPOSE_TREAT)
        (old, *_) = [r for r in listed.records if r.date[:10] < _emergency_start()]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _get(hosp, _emergency(), IMAGING, common_pb2.PURPOSE_ETREAT, old.record_id)
    assert (info.value.code(), reason(info.value)) == (
        grpc.StatusCode.NOT_FOUND,
        "record_not_found",
    )
    assert "emergency window" in (info.value.details() or "")


def _emergency_start() -> str:
    return str(dt.datetime.now(dt.UTC).date() - EMERGENCY_WINDOW)


async def test_emergency_access_by_a_library_is_refused(gateway: Gateway, pki: PkiLayout) -> None:
    async with org_channel(gateway.target, pki, LIBRARY) as library:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(library, _emergency(), LAB, common_pb2.PURPOSE_ETREAT)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "emergency_not_hospital"


def _index(error: grpc.aio.AioRpcError) -> int:
    return int(dict(error.trailing_metadata() or ())["onecard-audit-index"])
