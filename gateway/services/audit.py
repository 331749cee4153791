"""AuditService: regulators read and verify the audit log (every call is itself logged)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway import cardno
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.log import AuditLog, SearchQuery
from gateway.audit.note import MalformedNoteError
from gateway.audit.proof import OutOfRangeError
from gateway.audit.record import Pseudonymizer, rfc3339
from gateway.context import current_call
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline import Pipeline
from gateway.ports import CardRegistry

_MAX_PAGE = 1000
MAX_ENTRIES_PER_CALL = 10_000
_CHUNK = 1000


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
        self,
        pipeline: Pipeline,
        log: AuditLog,
        registry: CardRegistry,
        pseudonymize: Pseudonymizer,
        *,
        timeout: float,
    ) -> None:
        self._pipeline = pipeline
        self._log = log
        self._registry = registry
        self._pseudonymize = pseudonymize
        self._timeout = timeout

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.GetCheckpointResponse:
        self._pipeline.authorize_statutory(current_call(), "GetCheckpoint")
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
        self._pipeline.authorize_statutory(current_call(), "GetInclusionProof")
        if request.leaf_index >= request.tree_size:
            raise InvalidRequest("leaf_index must be smaller than tree_size")
        try:
            leaf_hash, proof = await self._log.inclusion_proof(
                request.leaf_index, request.tree_size
            )
        except OutOfRangeError as exc:
            raise InvalidRequest(str(exc)) from None
        return audit_pb2.GetInclusionProofResponse(leaf_hash=leaf_hash, hashes=proof)

    async def GetConsistencyProof(
        self,
        request: audit_pb2.GetConsistencyProofRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> audit_pb2.GetConsistencyProofResponse:
        self._pipeline.authorize_statutory(current_call(), "GetConsistencyProof")
        if request.from_size > request.to_size:
            raise InvalidRequest("from_size must not exceed to_size")
        try:
            proof = await self._log.consistency_proof(request.from_size, request.to_size)
        except OutOfRangeError as exc:
            raise InvalidRequest(str(exc)) from None
        return audit_pb2.GetConsistencyProofResponse(hashes=proof)

    async def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[audit_pb2.GetEntriesResponse]:
        self._pipeline.authorize_statutory(current_call(), "GetEntries")
        start, end = request.start_index, request.end_index
        if end <= start:
            raise InvalidRequest("end_index must be greater than start_index")
        if end - start > MAX_ENTRIES_PER_CALL:
            raise InvalidRequest(
                f"at most {MAX_ENTRIES_PER_CALL} entries per call: ask for "
                f"[{start}, {start + MAX_ENTRIES_PER_CALL}) and page on from there"
            )
        size = await self._log.size()
        if start >= size:
            raise BeyondTheLog(f"start_index {start} is past the end of the log ({size} entries)")
        entries = await self._log.entries(start, min(end, size))
        for at in range(0, len(entries), _CHUNK):
            yield audit_pb2.GetEntriesResponse(
                entries=[
                    audit_pb2.AuditEntry(index=e.index, leaf=e.leaf)
                    for e in entries[at : at + _CHUNK]
                ]
            )

    async def SearchEntries(
        self, request: audit_pb2.SearchEntriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.SearchEntriesResponse:
        call = current_call()
        self._pipeline.authorize_statutory(call, "SearchEntries")
        subject = ""
        if request.HasField("card"):
            card_number = cardno.normalize(request.card.card_number)
            holder = await self._registry.resolve(card_number, timeout=self._timeout)
            subject = self._pseudonymize(holder.holder_id)
            call.trail.subject = subject  # the search by citizen is itself logged, by pseudonym
        page_size = request.page_size or 100
        if not 1 <= page_size <= _MAX_PAGE:
            raise InvalidRequest(f"page_size must be 1 to {_MAX_PAGE}")
        query = SearchQuery(
            since=rfc3339(request.since.ToDatetime()) if request.HasField("since") else "",
            until=rfc3339(request.until.ToDatetime()) if request.HasField("until") else "",
            org=request.org_id,
            rpc=request.rpc,
            decision=request.decision,
            basis=request.basis,
            subject=subject,
            after_index=-1 if request.first_page else request.after_index,
            limit=page_size,
        )
        entries = await self._log.search(query)
        return audit_pb2.SearchEntriesResponse(
            entries=[audit_pb2.AuditEntry(index=e.index, leaf=e.leaf) for e in entries]
        )
