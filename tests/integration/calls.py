"""Small helpers that make integration tests read like the flows they check."""

from __future__ import annotations

import datetime as dt

import grpc

from gateway.api.onecard.v1 import (
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    consent_pb2,
    consent_pb2_grpc,
    insurance_pb2,
    insurance_pb2_grpc,
    library_pb2,
    library_pb2_grpc,
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
    *,
    on: common_pb2.LawfulBasis | None = None,
) -> card_pb2.VerifyCardResponse:
    response: card_pb2.VerifyCardResponse = await card_pb2_grpc.CardServiceStub(channel).VerifyCard(
        card_pb2.VerifyCardRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=purpose,
            basis=on or basis(token),
        )
    )
    return response


def consent_basis(consent_id: str) -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(consent_id=consent_id)


def emergency_basis(reason: int, justification: str) -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(
        emergency=common_pb2.Emergency(reason=reason, justification=justification)
    )


async def insurance_on(
    channel: grpc.aio.Channel,
    card_number: str,
    on: common_pb2.LawfulBasis,
    purpose: int = common_pb2.PURPOSE_COVERAGE,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
) -> insurance_pb2.GetInsuranceStatusResponse:
    """Insurance status on any basis (a consent, an emergency)."""
    response: insurance_pb2.GetInsuranceStatusResponse = (
        await insurance_pb2_grpc.InsuranceServiceStub(channel).GetInsuranceStatus(
            insurance_pb2.GetInsuranceStatusRequest(
                card=common_pb2.CardRef(card_number=card_number), purpose=purpose, basis=on
            ),
            metadata=metadata,
        )
    )
    return response


async def grant_consent(
    channel: grpc.aio.Channel,
    card_number: str,
    grantee: consent_pb2.Grantee,
    *,
    categories: tuple[int, ...] = (consent_pb2.DATA_CATEGORY_INSURANCE,),
    purposes: tuple[int, ...] = (common_pb2.PURPOSE_COVERAGE,),
    valid_for: dt.timedelta = dt.timedelta(days=30),
    valid_from: dt.datetime | None = None,
    max_uses: int = 0,
) -> consent_pb2.GrantConsentResponse:
    start = valid_from or dt.datetime.now(dt.UTC)
    request = consent_pb2.GrantConsentRequest(
        card=common_pb2.CardRef(card_number=card_number),
        purpose=common_pb2.PURPOSE_PATRQT,
        grantee=grantee,
        categories=categories,
        purposes=purposes,
        max_uses=max_uses,
    )
    if valid_from is not None:
        request.valid_from.FromDatetime(valid_from)
    request.valid_until.FromDatetime(start + valid_for)
    response: consent_pb2.GrantConsentResponse = await consent_pb2_grpc.ConsentServiceStub(
        channel
    ).GrantConsent(request)
    return response


async def revoke_consent(
    channel: grpc.aio.Channel, card_number: str, consent_id: str
) -> consent_pb2.RevokeConsentResponse:
    response: consent_pb2.RevokeConsentResponse = await consent_pb2_grpc.ConsentServiceStub(
        channel
    ).RevokeConsent(
        consent_pb2.RevokeConsentRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=common_pb2.PURPOSE_PATRQT,
            consent_id=consent_id,
        )
    )
    return response


async def list_consents(
    channel: grpc.aio.Channel, card_number: str
) -> consent_pb2.ListConsentsResponse:
    response: consent_pb2.ListConsentsResponse = await consent_pb2_grpc.ConsentServiceStub(
        channel
    ).ListConsents(
        consent_pb2.ListConsentsRequest(
            card=common_pb2.CardRef(card_number=card_number), purpose=common_pb2.PURPOSE_PATRQT
        )
    )
    return response


async def patron_status(
    channel: grpc.aio.Channel,
    card_number: str,
    token: str,
    library_id: str,
    purpose: int = common_pb2.PURPOSE_LIBRARY_SERVICE,
) -> library_pb2.GetPatronStatusResponse:
    response: library_pb2.GetPatronStatusResponse = await library_pb2_grpc.LibraryServiceStub(
        channel
    ).GetPatronStatus(
        library_pb2.GetPatronStatusRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=purpose,
            basis=basis(token),
            library_id=library_id,
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
