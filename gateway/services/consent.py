"""ConsentService: the citizen grants, lists and revokes standing consents through the app.

Each call goes through ``Pipeline.run`` like any data request (basis ``citizen_app``, so only
the official citizen app can make it; the policy says what it may do), so every grant,
revocation and listing is itself an audited exchange about the card holder. A grant or a
revocation is written in the transaction of its audit entry (``WithSpend``): if the entry cannot
be written, neither is the change. The consent is
recorded under the holder's pseudonym and a keyed binding of the card number, never the number
itself (``gateway.consents``). ``GetAccessHistory`` is ``gateway.services.history``'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.api.onecard.v1 import common_pb2, consent_pb2, consent_pb2_grpc
from gateway.audit.log import ConsentGrant, ConsentRevocation
from gateway.basis import CitizenAppClaim, micros
from gateway.cards import ResolvedCard
from gateway.consent_artefact import ArtefactSigner
from gateway.consents import (
    Consent,
    ConsentStatus,
    ConsentStore,
    Grant,
    Grantee,
    check_grant,
    new_consent_id,
)
from gateway.context import current_call
from gateway.errors import ConsentEnded, ConsentNotFound, InvalidRequest
from gateway.pipeline import Ask, Pipeline, WithSpend
from gateway.services import _convert
from gateway.services.history import AccessHistory

_CATEGORIES = {
    consent_pb2.DATA_CATEGORY_INSURANCE: "insurance",
    consent_pb2.DATA_CATEGORY_HEALTH_LAB: "health.lab",
    consent_pb2.DATA_CATEGORY_HEALTH_IMAGING: "health.imaging",
    consent_pb2.DATA_CATEGORY_HEALTH_DOCUMENTS: "health.documents",
    consent_pb2.DATA_CATEGORY_LIBRARY: "library",
    consent_pb2.DATA_CATEGORY_TRANSIT: "transit",
}
_CATEGORY_CODES = {name: code for code, name in _CATEGORIES.items()}
_STATUS = {
    ConsentStatus.ACTIVE: consent_pb2.CONSENT_STATUS_ACTIVE,
    ConsentStatus.REVOKED: consent_pb2.CONSENT_STATUS_REVOKED,
    ConsentStatus.EXPIRED: consent_pb2.CONSENT_STATUS_EXPIRED,
    ConsentStatus.EXHAUSTED: consent_pb2.CONSENT_STATUS_EXHAUSTED,
}
_MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class ConsentParts:
    """What the consent service and the consent basis share: the store, the artefact signer,
    and the two pseudonyms a consent is recorded under."""

    store: ConsentStore
    artefacts: ArtefactSigner
    pseudonymize: Callable[[str], str]  # holder id -> the audit pseudonym
    bind_card: Callable[[str], str]  # normalized card number -> its keyed binding


class ConsentService(consent_pb2_grpc.ConsentServiceServicer):
    """Implements onecard.v1.ConsentService (GetAccessHistory: see the module docstring)."""

    def __init__(self, pipeline: Pipeline, parts: ConsentParts, history: AccessHistory) -> None:
        self._pipeline = pipeline
        self._parts = parts
        self._history = history

    async def GetAccessHistory(
        self,
        request: consent_pb2.GetAccessHistoryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> consent_pb2.GetAccessHistoryResponse:
        return await self._history.get(current_call(), request)

    async def GrantConsent(
        self,
        request: consent_pb2.GrantConsentRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> consent_pb2.GrantConsentResponse:
        call = current_call()
        now = call.received_at
        grantee = _grantee(request.grantee)
        categories = _categories(request.categories)
        purposes = tuple(_convert.purpose(p) for p in request.purposes)
        valid_from = (
            request.valid_from.ToDatetime(dt.UTC) if request.HasField("valid_from") else now
        )
        if not request.HasField("valid_until"):
            raise InvalidRequest("valid_until is required (at most 366 days after valid_from)")
        valid_until = request.valid_until.ToDatetime(dt.UTC)
        grant = Grant(grantee, categories, purposes, valid_from, valid_until, request.max_uses)
        check_grant(grant)
        if valid_until <= now:
            raise InvalidRequest("valid_until must be in the future")
        ask = _citizen_ask("GrantConsent", request.card.card_number, request.purpose)

        async def record(card: ResolvedCard) -> WithSpend[consent_pb2.GrantConsentResponse]:
            consent = Consent(
                consent_id=new_consent_id(),
                subject=self._parts.pseudonymize(card.holder.holder_id),
                card_binding=self._parts.bind_card(card.card_number),
                grantee=grantee,
                categories=categories,
                purposes=purposes,
                valid_from=valid_from,
                valid_until=valid_until,
                max_uses=request.max_uses,
                uses=0,
                granted_at=now,
            )
            response = consent_pb2.GrantConsentResponse(
                consent=consent_message(consent, now),
                artefact=self._parts.artefacts.sign(consent, now),
            )
            return WithSpend(response, ConsentGrant(consent))

        return await self._pipeline.run(call, ask, record)

    async def RevokeConsent(
        self,
        request: consent_pb2.RevokeConsentRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> consent_pb2.RevokeConsentResponse:
        call = current_call()
        consent_id = _consent_id(request.consent_id)
        ask = _citizen_ask("RevokeConsent", request.card.card_number, request.purpose)

        async def revoke(card: ResolvedCard) -> WithSpend[consent_pb2.RevokeConsentResponse]:
            subject = self._parts.pseudonymize(card.holder.holder_id)
            current = next(
                (
                    c
                    for c in await self._parts.store.of_subject(subject)
                    if c.consent_id == consent_id
                ),
                None,
            )
            if current is None:
                raise ConsentNotFound("this card holder has no consent with this id")
            status = current.status(call.received_at)
            if status in (ConsentStatus.REVOKED, ConsentStatus.EXPIRED):
                raise ConsentEnded(
                    f"the consent has already ended ({status.value}); nothing to revoke"
                )
            revoked = dataclasses.replace(current, revoked_at=call.received_at)
            response = consent_pb2.RevokeConsentResponse(
                consent=consent_message(revoked, call.received_at)
            )
            at_us = micros(call.received_at)
            return WithSpend(response, ConsentRevocation(consent_id, subject, at_us))

        return await self._pipeline.run(call, ask, revoke)

    async def ListConsents(
        self,
        request: consent_pb2.ListConsentsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> consent_pb2.ListConsentsResponse:
        call = current_call()
        ask = _citizen_ask("ListConsents", request.card.card_number, request.purpose)

        async def listing(card: ResolvedCard) -> consent_pb2.ListConsentsResponse:
            subject = self._parts.pseudonymize(card.holder.holder_id)
            consents = await self._parts.store.of_subject(subject)
            return consent_pb2.ListConsentsResponse(
                consents=[consent_message(c, call.received_at) for c in consents]
            )

        return await self._pipeline.run(call, ask, listing)


def _citizen_ask(action: str, card_number: str, purpose: int) -> Ask:
    return Ask(
        action=action,
        card_number=card_number,
        purpose=_convert.purpose(purpose),
        basis=CitizenAppClaim(),
    )


def _consent_id(value: str) -> str:
    if not value or len(value) > _MAX_ID_CHARS:
        raise InvalidRequest(f"consent_id must be 1 to {_MAX_ID_CHARS} characters")
    return value


def _grantee(msg: consent_pb2.Grantee) -> Grantee:
    match msg.WhichOneof("grantee"):
        case "org_id":
            return Grantee(org_id=msg.org_id)
        case "org_type_in_district":
            g = msg.org_type_in_district
            return Grantee(org_type=g.org_type, district=g.district)
        case _:
            raise InvalidRequest(
                "grantee is required: an org_id, or an org_type_in_district (type and district)"
            )


def _categories(values: Any) -> tuple[str, ...]:
    names = []
    for value in values:
        name = _CATEGORIES.get(value)
        if name is None:
            raise InvalidRequest("categories: DATA_CATEGORY_UNSPECIFIED is not a category")
        names.append(name)
    return tuple(names)


def _purpose_code(name: str) -> Any:
    return common_pb2.Purpose.Value("PURPOSE_" + name)


def _stamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def consent_message(consent: Consent, now: dt.datetime) -> consent_pb2.Consent:
    """The consent as the API shows it, with its status at ``now``."""
    g = consent.grantee
    grantee = (
        consent_pb2.Grantee(org_id=g.org_id)
        if g.org_id
        else consent_pb2.Grantee(
            org_type_in_district=consent_pb2.OrgTypeInDistrict(
                org_type=g.org_type, district=g.district
            )
        )
    )
    message = consent_pb2.Consent(
        consent_id=consent.consent_id,
        grantee=grantee,
        categories=[_CATEGORY_CODES[c] for c in consent.categories],
        purposes=[_purpose_code(p) for p in consent.purposes],
        valid_from=_stamp(consent.valid_from),
        valid_until=_stamp(consent.valid_until),
        max_uses=consent.max_uses,
        uses=consent.uses,
        status=_STATUS[consent.status(now)],
        granted_at=_stamp(consent.granted_at),
    )
    if consent.revoked_at is not None:
        message.revoked_at.CopyFrom(_stamp(consent.revoked_at))
    return message
