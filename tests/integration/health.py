"""Helpers for health-record tests: calls over the gateway, and what the seed says to expect."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from typing import Any

import grpc
from google.protobuf.message import Message

from adapters.fhir import seed
from adapters.social_insurance.seed import Person
from gateway.api.onecard.v1 import common_pb2, health_pb2, health_pb2_grpc
from tests.integration.calls import basis, issue_token

LAB = health_pb2.HEALTH_CATEGORY_LAB
IMAGING = health_pb2.HEALTH_CATEGORY_IMAGING
DOCUMENTS = health_pb2.HEALTH_CATEGORY_DOCUMENTS
KIND = {LAB: "DiagnosticReport", IMAGING: "ImagingStudy", DOCUMENTS: "DocumentReference"}
_DATE = {
    "DiagnosticReport": "effectiveDateTime",
    "ImagingStudy": "started",
    "DocumentReference": "date",
}


def seeded(
    person: Person, kind: str, hospitals: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """The records of ``kind`` the seed holds for ``person`` (what any seeded server holds)."""
    bundle = seed.transaction(person, hospitals)
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def seeded_dates(
    person: Person, kind: str, since: dt.date | None = None, until: dt.date | None = None
) -> list[str]:
    """The dates of the seeded records of ``kind`` in the range, newest first."""
    dates = [r[_DATE[kind]] for r in seeded(person, kind)]
    return sorted(
        (
            d
            for d in dates
            if (since is None or d[:10] >= since.isoformat())
            and (until is None or d[:10] <= until.isoformat())
        ),
        reverse=True,
    )


async def list_records(
    hosp: grpc.aio.Channel,
    app: grpc.aio.Channel,
    card_number: str,
    category: int = LAB,
    **fields: Any,
) -> health_pb2.ListHealthRecordsResponse:
    """One ListHealthRecords call with the patient present (a fresh e-card token)."""
    token = await issue_token(app, card_number)
    response: health_pb2.ListHealthRecordsResponse = await health_pb2_grpc.HealthRecordServiceStub(
        hosp
    ).ListHealthRecords(
        health_pb2.ListHealthRecordsRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=fields.pop("purpose", common_pb2.PURPOSE_TREAT),
            basis=basis(token),
            category=category,
            **fields,
        )
    )
    return response


async def all_records(
    hosp: grpc.aio.Channel, app: grpc.aio.Channel, card_number: str, category: int = LAB, **f: Any
) -> tuple[list[health_pb2.HealthRecordSummary], int]:
    """Every page of a list: the records and how many pages it took."""
    records: list[health_pb2.HealthRecordSummary] = []
    token, pages = "", 0
    while True:
        page = await list_records(hosp, app, card_number, category, page_token=token, **f)
        records.extend(page.records)
        pages += 1
        token = page.next_page_token
        if not token:
            return records, pages


async def get_record(
    hosp: grpc.aio.Channel,
    app: grpc.aio.Channel,
    card_number: str,
    record_id: str,
    category: int = LAB,
) -> health_pb2.GetHealthRecordResponse:
    token = await issue_token(app, card_number)
    response: health_pb2.GetHealthRecordResponse = await health_pb2_grpc.HealthRecordServiceStub(
        hosp
    ).GetHealthRecord(
        health_pb2.GetHealthRecordRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=common_pb2.PURPOSE_TREAT,
            basis=basis(token),
            category=category,
            record_id=record_id,
        )
    )
    return response


def released_digest(response: Message) -> str:
    """What the audit entry's ``released_sha256`` must be: the answer without its receipt."""
    copy = type(response)()
    copy.CopyFrom(response)
    copy.ClearField("receipt")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def kinds(fhir_json: str) -> Counter[str]:
    return Counter(e["resource"]["resourceType"] for e in json.loads(fhir_json)["entry"])
