"""LibraryService: a reader's standing at a library of the network, from its SIP2 system.

The caller names the library by its network id; the back end knows which libraries there are
and which organisation keeps each one's records, so the policy can tell "the library that
holds the record" (which may see a fine's amount) from any other library of the network.
"""

from __future__ import annotations

import re
from typing import Any

import grpc

from gateway.api.onecard.v1 import library_pb2, library_pb2_grpc
from gateway.cards import ResolvedCard, mask_name
from gateway.context import current_call
from gateway.errors import InvalidRequest
from gateway.pipeline import Ask, Pipeline
from gateway.ports import LibraryBackend, PatronBlock, PatronStanding
from gateway.services import _convert

_LIBRARY_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# PatronBlocks' field for each SIP2 patron status position.
_BLOCK_FIELDS = {block: block.name.lower() for block in PatronBlock}


class LibraryService(library_pb2_grpc.LibraryServiceServicer):
    """Implements onecard.v1.LibraryService."""

    def __init__(self, pipeline: Pipeline, backend: LibraryBackend, *, timeout: float) -> None:
        self._pipeline = pipeline
        self._backend = backend
        self._timeout = timeout

    async def GetPatronStatus(
        self,
        request: library_pb2.GetPatronStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> library_pb2.GetPatronStatusResponse:
        library_id = self._library_id(request.library_id)
        call = current_call()
        ask = Ask(
            action="GetPatronStatus",
            card_number=request.card.card_number,
            purpose=_convert.purpose(request.purpose),
            basis=_convert.basis_claim(request.basis),
            backend="library",
            category="library",
            holds_record=self._backend.holder_org(library_id) == call.caller.org.org_id,
        )

        async def fetch(card: ResolvedCard) -> library_pb2.GetPatronStatusResponse:
            standing = await self._backend.patron_standing(
                library_id, card.card_number, timeout=self._timeout
            )
            return _response(standing)

        return await self._pipeline.run(call, ask, fetch)

    def _library_id(self, raw: str) -> str:
        if not raw:
            raise InvalidRequest(
                "library_id is required: the network id of the library whose record is asked"
            )
        if not _LIBRARY_ID.fullmatch(raw) or not self._backend.knows(raw):
            raise InvalidRequest(
                "library_id names no library of the network (network ids are lowercase, "
                "e.g. bj-xicheng)",
                reason="unknown_library",
            )
        return raw


def _response(standing: PatronStanding) -> library_pb2.GetPatronStatusResponse:
    response = library_pb2.GetPatronStatusResponse(
        library_id=standing.library_id,
        patron_known=standing.known,
        valid=standing.valid,
        good_standing=standing.known and standing.valid and not standing.blocks,
        masked_name=mask_name(standing.name) if standing.name else "",
    )
    if not standing.known:
        return response
    response.blocks.CopyFrom(
        library_pb2.PatronBlocks(**{_BLOCK_FIELDS[b]: True for b in standing.blocks})
    )
    counts = (standing.holds, standing.overdue, standing.charged, standing.fine_items)
    if all(count is not None for count in counts):
        response.counts.CopyFrom(
            library_pb2.ItemCounts(
                holds=standing.holds,
                overdue=standing.overdue,
                charged=standing.charged,
                fine_items=standing.fine_items,
            )
        )
    owed = standing.fee_amount is not None and standing.fee_amount > 0
    response.has_fines = owed or bool(standing.fine_items)
    if owed:
        response.fine_amount = f"{standing.fee_amount:.2f}"
        response.currency = standing.currency
    return response
