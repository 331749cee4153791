"""HealthRecordService: another hospital's lab reports, imaging and documents, over FHIR R4.

Each request names one category (lab, imaging, documents); it becomes the call's data category
(``Ask.category``: ``health.lab``, ``health.imaging``, ``health.documents``), which the policies
see as ``context.category`` and a consent must cover. What leaves is the policy's choice:
summaries only, or also the FHIR JSON of a record (``@disclose("fhir_json")``).

A list is paged by the gateway over the merged, de-duplicated answer of every source (the page
token is the offset into it; each page asks the sources again, so no citizen data is held
between calls). A source that fails makes the answer partial (``partial``,
``unavailable_sources``), which the released response, and so the audit entry's digest,
records. In an emergency (break-glass) the answer covers a limited window: records of the last
``EMERGENCY_WINDOW`` only (a list's ``date_from`` is moved up to it; an older record is not
found), enough for emergency treatment and no more. Each answer is logged as it is fetched
(``health_records_fetched``) with its category and the number and types of resources, never
their content.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from typing import Any

import grpc
import structlog

from gateway.api.onecard.v1 import health_pb2, health_pb2_grpc
from gateway.basis import EmergencyClaim
from gateway.cards import ResolvedCard
from gateway.context import current_call
from gateway.errors import InvalidRequest, RecordNotFound
from gateway.pipeline import Ask, Pipeline
from gateway.ports import HealthCategory, HealthRecords, HealthRecordSummary
from gateway.services import _convert

_log = structlog.get_logger(__name__)

BACKEND = "fhir"
EMERGENCY_WINDOW = dt.timedelta(days=5 * 365)  # what break-glass access reaches back to
_CATEGORIES: dict[int, HealthCategory] = {
    health_pb2.HEALTH_CATEGORY_LAB: HealthCategory.LAB,
    health_pb2.HEALTH_CATEGORY_IMAGING: HealthCategory.IMAGING,
    health_pb2.HEALTH_CATEGORY_DOCUMENTS: HealthCategory.DOCUMENTS,
}
_DEFAULT_PAGE, _MAX_PAGE, _MAX_OFFSET = 20, 100, 100_000
_RECORD_ID = re.compile(r"^[a-z0-9_-]{1,32}/[A-Za-z]{1,40}/[A-Za-z0-9.-]{1,64}$")


class HealthRecordService(health_pb2_grpc.HealthRecordServiceServicer):
    """Implements onecard.v1.HealthRecordService."""

    def __init__(self, pipeline: Pipeline, backend: HealthRecords, *, timeout: float) -> None:
        self._pipeline = pipeline
        self._backend = backend
        self._timeout = timeout

    async def ListHealthRecords(
        self,
        request: health_pb2.ListHealthRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> health_pb2.ListHealthRecordsResponse:
        category = _category(request.category)
        since = _date("date_from", request.date_from)
        until = _date("date_to", request.date_to)
        if since and until and since > until:
            raise InvalidRequest("date_from must not be after date_to")
        size = _page_size(request.page_size)
        offset = _offset(request.page_token)
        ask = _ask("ListHealthRecords", request, category)
        if isinstance(ask.basis, EmergencyClaim):
            since = max(since or dt.date.min, _emergency_start())

        async def fetch(card: ResolvedCard) -> health_pb2.ListHealthRecordsResponse:
            found = await self._backend.records(
                card.card_number, category, since=since, until=until, timeout=self._timeout
            )
            page = found.records[offset : offset + size]
            more = offset + size < len(found.records)
            _released(category, Counter(s.kind for s in page), found.unavailable)
            return health_pb2.ListHealthRecordsResponse(
                records=[_summary(s) for s in page],
                next_page_token=str(offset + size) if more else "",
                partial=bool(found.unavailable),
                unavailable_sources=found.unavailable,
            )

        return await self._pipeline.run(current_call(), ask, fetch)

    async def GetHealthRecord(
        self,
        request: health_pb2.GetHealthRecordRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> health_pb2.GetHealthRecordResponse:
        category = _category(request.category)
        if not _RECORD_ID.match(request.record_id):
            raise InvalidRequest(
                "record_id must be a record_id from ListHealthRecords (SOURCE/ResourceType/id)"
            )
        ask = _ask("GetHealthRecord", request, category)

        async def fetch(card: ResolvedCard) -> health_pb2.GetHealthRecordResponse:
            record = await self._backend.record(
                card.card_number, category, request.record_id, timeout=self._timeout
            )
            if isinstance(ask.basis, EmergencyClaim) and record.summary.date[:10] < str(
                _emergency_start()
            ):
                raise RecordNotFound(
                    "no such record within the emergency window (break-glass access reaches "
                    f"back {EMERGENCY_WINDOW.days} days)",
                    reason="record_not_found",
                )
            bundle = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": resource} for resource in record.resources],
            }
            _released(category, Counter(r["resourceType"] for r in record.resources), ())
            return health_pb2.GetHealthRecordResponse(
                summary=_summary(record.summary),
                fhir_json=json.dumps(bundle, ensure_ascii=False, sort_keys=True),
                resource_count=len(record.resources),
            )

        return await self._pipeline.run(current_call(), ask, fetch)


def _emergency_start() -> dt.date:
    """The first day break-glass access reaches (``EMERGENCY_WINDOW`` before today, UTC)."""
    return dt.datetime.now(dt.UTC).date() - EMERGENCY_WINDOW


def _ask(
    action: str,
    request: health_pb2.ListHealthRecordsRequest | health_pb2.GetHealthRecordRequest,
    category: HealthCategory,
) -> Ask:
    return Ask(
        action=action,
        card_number=request.card.card_number,
        purpose=_convert.purpose(request.purpose),
        basis=_convert.basis_claim(request.basis),
        backend=BACKEND,
        category=category.value,
    )


def _category(value: int) -> HealthCategory:
    try:
        return _CATEGORIES[value]
    except KeyError:
        raise InvalidRequest(
            "category is required: HEALTH_CATEGORY_LAB, HEALTH_CATEGORY_IMAGING or "
            "HEALTH_CATEGORY_DOCUMENTS"
        ) from None


def _date(name: str, value: str) -> dt.date | None:
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or len(value) != 10:
        raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD, or empty")
    return day


def _page_size(value: int) -> int:
    if value == 0:
        return _DEFAULT_PAGE
    if not 1 <= value <= _MAX_PAGE:
        raise InvalidRequest(f"page_size must be 1 to {_MAX_PAGE} (0 for {_DEFAULT_PAGE})")
    return value


def _offset(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 6 or int(token) > _MAX_OFFSET:
        raise InvalidRequest("page_token must be the next_page_token of the previous page")
    return int(token)


def _summary(s: HealthRecordSummary) -> health_pb2.HealthRecordSummary:
    return health_pb2.HealthRecordSummary(
        record_id=s.record_id,
        kind=s.kind,
        date=s.date,
        title=s.title,
        performer=s.performer,
        status=s.status,
        source=s.source,
    )


def _released(category: HealthCategory, kinds: Counter[str], unavailable: tuple[str, ...]) -> None:
    """What the answer holds, by resource type and count (the content is never logged).

    Logged as the answer is built, before disclosure: the policy decides what of it leaves;
    the audit entry's ``released_sha256`` is the digest of what actually did."""
    _log.info(
        "health_records_fetched",
        category=category.value,
        resources=dict(sorted(kinds.items())),
        unavailable_sources=list(unavailable),
    )
