"""AuditService: regulators read and verify the audit log (every call is itself logged).

Every method goes through ``Pipeline.oversee`` (the statutory basis, then the same Cedar
decision as any data request) before it reads anything.

Arguments are checked before the log is read, in one order for every proof and entry RPC:

* ``INVALID_ARGUMENT`` (``invalid_request``): the request is wrong whatever the log holds: an
  index or size above 2^63 - 1 (no log can reach it), ``leaf_index >= tree_size`` (so also any
  ``tree_size`` of 0), ``from_size > to_size``, an empty or too long range of entries, a page size
  out of bounds, a timestamp outside years 1 to 9999.
* ``OUT_OF_RANGE`` (``beyond_log``): the request is well formed but names a size or an index
  the log has not reached yet (a later call can succeed).

A consistency proof from size 0, or between equal sizes, is empty (RFC 9162: every tree is
consistent with the empty tree and with itself), as long as ``to_size`` is within the log.
Search times are UTC instants whatever the host's time zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway import cardno
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.log import AuditLog, Entry, SearchQuery
from gateway.audit.note import MalformedNoteError
from gateway.audit.proof import OutOfRangeError
from gateway.audit.report import Count, Report, build_report
from gateway.basis import StatutoryClaim
from gateway.consents import Kept
from gateway.context import current_call
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline import Ask, Pipeline
from gateway.validation import MAX_SECONDS, check_timestamp

T = TypeVar("T")
Justifications = Callable[[dt.datetime, dt.datetime], Awaitable[Kept]]
"""(request id, digest) -> emergency justification kept in a period
(``ConsentStore.justifications``)."""
_MAX_PAGE = 1000
MAX_ENTRIES_PER_CALL = 10_000
_CHUNK = 1000
MAX_INDEX = 2**63 - 1  # entries are numbered by a signed 64-bit integer


class NoCheckpointYet(GatewayError):
    """The log has not signed a checkpoint yet."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "no_checkpoint"


class BeyondTheLog(GatewayError):
    """A range that starts past the log's last entry."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "beyond_log"


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    """Implements onecard.v1.AuditService."""

    def __init__(
        self, pipeline: Pipeline, log: AuditLog, justifications: Justifications | None = None
    ) -> None:
        self._pipeline = pipeline
        self._log = log
        self._justifications = justifications

    async def _oversee(
        self, action: str, fetch: Callable[[str], Awaitable[T]], card_number: str = ""
    ) -> T:
        """Every AuditService call: the statutory basis and the policy, then ``fetch(subject)``."""
        ask = Ask(action, card_number, purpose="HCOMPL", basis=StatutoryClaim())
        return await self._pipeline.oversee(current_call(), ask, fetch)

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetCheckpointResponse:
        return await self._oversee("GetCheckpoint", lambda _: self._checkpoint())

    async def _checkpoint(self) -> audit_pb2.GetCheckpointResponse:
        note = await self._log.latest_checkpoint()
        if note is None:
            raise NoCheckpointYet("the log has not signed a checkpoint yet; retry in a second")
        body = note.split(b"\n\n", 1)[0] + b"\n"
        try:
            checkpoint = Checkpoint.parse(body.decode())
        except (ValueError, MalformedNoteError):
            raise GatewayError("the stored checkpoint is unreadable") from None
        return audit_pb2.GetCheckpointResponse(
            signed_checkpoint=note,
            origin=checkpoint.origin,
            tree_size=checkpoint.size,
            root_hash=checkpoint.root_hash,
        )

    async def GetInclusionProof(
        self,
        request: audit_pb2.GetInclusionProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetInclusionProofResponse:
        return await self._oversee("GetInclusionProof", lambda _: self._inclusion(request))

    async def _inclusion(
        self, request: audit_pb2.GetInclusionProofRequest
    ) -> audit_pb2.GetInclusionProofResponse:
        index, size = request.leaf_index, request.tree_size
        _require_indexes(leaf_index=index, tree_size=size)
        if index >= size:
            raise InvalidRequest(
                f"leaf_index ({index}) must be smaller than tree_size ({size}): "
                "the entries of a tree of size n are 0 to n - 1"
            )
        try:
            leaf_hash, proof = await self._log.inclusion_proof(index, size)
        except OutOfRangeError:
            raise _beyond("tree_size", size) from None
        return audit_pb2.GetInclusionProofResponse(leaf_hash=leaf_hash, hashes=proof)

    async def GetConsistencyProof(
        self,
        request: audit_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetConsistencyProofResponse:
        return await self._oversee("GetConsistencyProof", lambda _: self._consistency(request))

    async def _consistency(
        self, request: audit_pb2.GetConsistencyProofRequest
    ) -> audit_pb2.GetConsistencyProofResponse:
        size1, size2 = request.from_size, request.to_size
        _require_indexes(from_size=size1, to_size=size2)
        if size1 > size2:
            raise InvalidRequest(
                f"from_size ({size1}) must not exceed to_size ({size2}): a log only grows"
            )
        try:
            proof = await self._log.consistency_proof(size1, size2)
        except OutOfRangeError:
            raise _beyond("to_size", size2) from None
        return audit_pb2.GetConsistencyProofResponse(hashes=proof)

    async def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[audit_pb2.GetEntriesResponse]:
        entries = await self._oversee("GetEntries", lambda _: self._entries(request))
        for at in range(0, len(entries), _CHUNK):
            yield audit_pb2.GetEntriesResponse(
                entries=[
                    audit_pb2.AuditEntry(index=e.index, leaf=e.leaf)
                    for e in entries[at : at + _CHUNK]
                ]
            )

    async def _entries(self, request: audit_pb2.GetEntriesRequest) -> list[Entry]:
        start, end = request.start_index, request.end_index
        _require_indexes(start_index=start, end_index=end)
        if end <= start:
            raise InvalidRequest(
                f"end_index ({end}) must be greater than start_index ({start}): "
                "the range [start_index, end_index) would be empty"
            )
        if end - start > MAX_ENTRIES_PER_CALL:
            raise InvalidRequest(
                f"at most {MAX_ENTRIES_PER_CALL} entries per call: ask for "
                f"[{start}, {start + MAX_ENTRIES_PER_CALL}) and page on from there"
            )
        size = await self._log.size()
        if start >= size:
            raise BeyondTheLog(f"start_index {start} is past the end of the log ({size} entries)")
        return await self._log.entries(start, min(end, size))

    async def SearchEntries(
        self, request: audit_pb2.SearchEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.SearchEntriesResponse:
        query = _search_query(request)  # the request's shape, before any card is looked up
        card_number = request.card.card_number if request.HasField("card") else ""

        async def search(subject: str) -> audit_pb2.SearchEntriesResponse:
            entries = await self._log.search(dataclasses.replace(query, subject=subject))
            return audit_pb2.SearchEntriesResponse(
                entries=[audit_pb2.AuditEntry(index=e.index, leaf=e.leaf) for e in entries]
            )

        return await self._oversee("SearchEntries", search, card_number)

    async def GetReport(
        self, request: audit_pb2.GetReportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetReportResponse:
        if not (request.HasField("since") and request.HasField("until")):
            raise InvalidRequest("since and until are both required (the report's period)")
        since, until = _utc_text(request.since, "since"), _utc_text(request.until, "until")
        if until <= since:
            raise InvalidRequest("until must be after since")

        async def report(_: str) -> audit_pb2.GetReportResponse:
            kept: Kept = {}
            if self._justifications is not None:
                kept = await self._justifications(
                    request.since.ToDatetime(dt.UTC), request.until.ToDatetime(dt.UTC)
                )
            entries = await self._period(since, until)
            return _report_message(build_report(entries, since, until, kept))

        return await self._oversee("GetReport", report)

    async def _period(self, since: str, until: str) -> list[tuple[int, dict[str, Any]]]:
        """Every (index, record) of the period, through the search index, page by page."""
        found: list[tuple[int, dict[str, Any]]] = []
        query = SearchQuery(since=since, until=until, limit=_MAX_PAGE)
        while page := await self._log.search(query):
            found += [(e.index, json.loads(e.leaf)["r"]) for e in page]
            query = dataclasses.replace(query, after_index=page[-1].index)
        return found


def _report_message(report: Report) -> audit_pb2.GetReportResponse:
    def counts(rows: tuple[Count, ...]) -> list[audit_pb2.ReportCount]:
        return [audit_pb2.ReportCount(org=c.org, code=c.code, count=c.count) for c in rows]

    details = []
    for e in report.emergency_details:
        access = audit_pb2.EmergencyAccess(
            index=e.index,
            org=e.org,
            reason=e.reason,
            outcome=e.outcome,
            justification=e.justification,
            justification_sha256_prefix=e.digest,
        )
        access.time.FromJsonString(e.time)
        details.append(access)
    return audit_pb2.GetReportResponse(
        emergency_accesses=counts(report.emergency),
        emergency_details=details,
        refusals=counts(report.refusals),
        consent_changes=[
            audit_pb2.ConsentChanges(day=d.day, granted=d.granted, revoked=d.revoked)
            for d in report.consents
        ],
        entries=report.entries,
    )


def _search_query(request: audit_pb2.SearchEntriesRequest) -> SearchQuery:
    """The search a request asks for (its subject filled in once the card is looked up)."""
    page_size = request.page_size or 100
    if not 1 <= page_size <= _MAX_PAGE:
        raise InvalidRequest(f"page_size must be 1 to {_MAX_PAGE}")
    if not request.first_page:
        _require_indexes(after_index=request.after_index)
    if request.HasField("card"):
        cardno.normalize(request.card.card_number)  # a malformed number before anything else
    return SearchQuery(
        since=_utc_text(request.since, "since") if request.HasField("since") else "",
        until=_utc_text(request.until, "until") if request.HasField("until") else "",
        org=request.org_id,
        rpc=request.rpc,
        decision=request.decision,
        basis=request.basis,
        after_index=-1 if request.first_page else request.after_index,
        limit=page_size,
    )


def _require_indexes(**values: int) -> None:
    """Refuse an index or size that no log can reach (entries are numbered in a signed int64)."""
    for name, value in values.items():
        if value > MAX_INDEX:
            raise InvalidRequest(
                f"{name} ({value}) is larger than any log index can be (at most 2^63 - 1)"
            )


def _beyond(name: str, size: int) -> BeyondTheLog:
    return BeyondTheLog(
        f"{name} {size} is past the end of the log; GetCheckpoint gives a size it has reached"
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LAST_MICROS = MAX_SECONDS * 1_000_000 + 999_999


def _utc_text(stamp: Timestamp, name: str) -> str:
    """A request's timestamp as the records' UTC text, whatever the host's time zone.

    Nanoseconds are rounded up to the microsecond the records carry: for times stored to the
    microsecond, ``time >= since`` and ``time < until`` then mean exactly what they say.
    """
    check_timestamp(stamp, name)  # as the interceptor does, for a direct caller of the service
    micros = min(stamp.seconds * 1_000_000 - (-stamp.nanos // 1000), _LAST_MICROS)
    moment = _EPOCH + dt.timedelta(microseconds=micros)
    # isoformat pads the year to four digits (strftime's %Y does not for years before 1000).
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
