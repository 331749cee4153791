"""CardService: e-card tokens for the citizen app, card verification for counters."""

from __future__ import annotations

from typing import Any

import grpc

from gateway.api.onecard.v1 import card_pb2, card_pb2_grpc
from gateway.basis import CitizenAppClaim
from gateway.cards import ResolvedCard, mask_name
from gateway.context import current_call
from gateway.pipeline import Ask, Pipeline
from gateway.services import _convert
from gateway.tokens import CardTokens


class CardService(card_pb2_grpc.CardServiceServicer):
    """Implements onecard.v1.CardService."""

    def __init__(self, pipeline: Pipeline, tokens: CardTokens) -> None:
        self._pipeline = pipeline
        self._tokens = tokens

    async def IssueCardToken(
        self, request: card_pb2.IssueCardTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> card_pb2.IssueCardTokenResponse:
        ask = Ask(
            action="IssueCardToken",
            card_number=request.card.card_number,
            purpose=_convert.purpose(request.purpose),
            basis=CitizenAppClaim(),
        )

        async def mint(card: ResolvedCard) -> card_pb2.IssueCardTokenResponse:
            issued = self._tokens.issue(card.card_number)
            response = card_pb2.IssueCardTokenResponse(token=issued.token)
            response.expires_at.FromDatetime(issued.expires_at)
            return response

        return await self._pipeline.run(current_call(), ask, mint)

    async def VerifyCard(
        self, request: card_pb2.VerifyCardRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> card_pb2.VerifyCardResponse:
        ask = Ask(
            action="VerifyCard",
            card_number=request.card.card_number,
            purpose=_convert.purpose(request.purpose),
            basis=_convert.basis_claim(request.basis),
        )

        async def describe(card: ResolvedCard) -> card_pb2.VerifyCardResponse:
            return card_pb2.VerifyCardResponse(
                card_holder_valid=True,
                masked_name=mask_name(card.holder.name),
                issuing_district=card.holder.issuing_district,
            )

        return await self._pipeline.run(current_call(), ask, describe)
