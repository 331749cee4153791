"""Small helpers that make integration tests read like the flows they check."""

from __future__ import annotations

import grpc

from gateway.api.onecard.v1 import (
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    insurance_pb2,
    insurance_pb2_grpc,
    transit_pb2,
    transit_pb2_grpc,
)


def basis(token: str) -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token=token))


async def issue_token(channel: grpc.aio.Channel, card_number: str) -> str:
    response = await card_pb2_grpc.CardServiceStub(channel).IssueCardToken(
        card_pb2.IssueCardTokenRequest(
            card=common_pb2.CardRef(card_number=card_number), purpose=common_pb2.PURPOSE_PATRQT
        )
    )
    return str(response.token)


async def insurance_status(
    channel: grpc.aio.Channel,
    card_number: str,
    token: str,
    purpose: int = common_pb2.PURPOSE_COVERAGE,
) -> insurance_pb2.GetInsuranceStatusResponse:
    response: insurance_pb2.GetInsuranceStatusResponse = (
        await insurance_pb2_grpc.InsuranceServiceStub(channel).GetInsuranceStatus(
            insurance_pb2.GetInsuranceStatusRequest(
                card=common_pb2.CardRef(card_number=card_number),
                purpose=purpose,
                basis=basis(token),
            )
        )
    )
    return response


async def verify_card(
    channel: grpc.aio.Channel,
    card_number: str,
    token: str,
    purpose: int = common_pb2.PURPOSE_LIBRARY_SERVICE,
) -> card_pb2.VerifyCardResponse:
    response: card_pb2.VerifyCardResponse = await card_pb2_grpc.CardServiceStub(channel).VerifyCard(
        card_pb2.VerifyCardRequest(
            card=common_pb2.CardRef(card_number=card_number), purpose=purpose, basis=basis(token)
        )
    )
    return response


async def check_concession(
    channel: grpc.aio.Channel,
    card_number: str,
    token: str,
    concession: int = transit_pb2.CONCESSION_TYPE_SENIOR,
    purpose: int = common_pb2.PURPOSE_FARE_CONCESSION,
) -> transit_pb2.CheckConcessionResponse:
    response: transit_pb2.CheckConcessionResponse = await transit_pb2_grpc.TransitServiceStub(
        channel
    ).CheckConcession(
        transit_pb2.CheckConcessionRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=purpose,
            basis=basis(token),
            concession_type=concession,
        )
    )
    return response
