"""TransitService: fare concessions from the eligibility server, as a predicate and its validity.

The operator asks about one concession for a rider present with the card; the gateway asks the
eligibility server on the operator's behalf (the operator is the caller's certificate, never a
request field) and answers yes or no and until when that holds. The audit entry states the
concession and the answer in its ``backend`` field: ``eligibility:senior:eligible`` (or
``...:not_eligible``); ``eligibility:senior`` alone when the server gave no answer.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from gateway.api.onecard.v1 import transit_pb2, transit_pb2_grpc
from gateway.cards import ResolvedCard
from gateway.context import current_call
from gateway.errors import InvalidRequest
from gateway.pipeline import Ask, Pipeline
from gateway.ports import Concession, EligibilityBackend
from gateway.services import _convert

BACKEND = "eligibility"
_CONCESSIONS: dict[int, Concession] = {
    transit_pb2.CONCESSION_TYPE_SENIOR: Concession.SENIOR,
    transit_pb2.CONCESSION_TYPE_DISABLED: Concession.DISABLED,
    transit_pb2.CONCESSION_TYPE_STUDENT: Concession.STUDENT,
}


class TransitService(transit_pb2_grpc.TransitServiceServicer):
    """Implements onecard.v1.TransitService."""

    def __init__(self, pipeline: Pipeline, backend: EligibilityBackend, *, timeout: float) -> None:
        self._pipeline = pipeline
        self._backend = backend
        self._timeout = timeout

    async def CheckConcession(
        self,
        request: transit_pb2.CheckConcessionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> transit_pb2.CheckConcessionResponse:
        call = current_call()
        concession = _concession(request.concession_type)
        ask = Ask(
            action="CheckConcession",
            card_number=request.card.card_number,
            purpose=_convert.purpose(request.purpose),
            basis=_convert.basis_claim(request.basis),
            backend=f"{BACKEND}:{concession.value}",
            category="transit",
            answer=_answer_word,
        )

        async def check(card: ResolvedCard) -> transit_pb2.CheckConcessionResponse:
            answer = await self._backend.check(
                card.card_number,
                card.holder.name,
                concession,
                agency=call.caller.org.org_id,
                timeout=self._timeout,
            )
            response = transit_pb2.CheckConcessionResponse(eligible=answer.eligible)
            response.valid_until.FromDatetime(answer.valid_until)
            return response

        return await self._pipeline.run(call, ask, check)


def _concession(value: int) -> Concession:
    concession = _CONCESSIONS.get(value)
    if concession is None:
        raise InvalidRequest(
            "concession_type is required: CONCESSION_TYPE_SENIOR, CONCESSION_TYPE_DISABLED "
            "or CONCESSION_TYPE_STUDENT"
        )
    return concession


def _answer_word(response: Message) -> str:
    eligible: bool = response.eligible  # type: ignore[attr-defined]
    return "eligible" if eligible else "not_eligible"
