"""The lawful-basis stage: what makes this request lawful, proven rather than claimed.

Claims arrive from the services as frozen dataclasses; each kind of claim has one small
verifier object, and bootstrap registers them (``default_verifiers``), so a new basis is a new
verifier and a row in that table, not an edit of this stage. A verifier returns an established
``Basis`` or raises a refusal:

- card present: the e-card token is authentic, bound to this card, unexpired and not yet used
  (the exchange that releases data redeems it with its audit entry);
- citizen app: the citizen, signed in to the official app, acts for themself, so only a
  citizen-app organisation can claim it;
- statutory: oversight of the audit log (no citizen data); the policy admits regulators only;
- standing consent: the consent the request names is, as stored right now, granted to the
  caller (the organisation, or its type and district), for this card, for the call's data
  category and purpose, unrevoked, within its validity period and with a use left; the
  exchange that releases data takes the use with its audit entry (``ConsentSpend``), so uses
  are counted once per released answer even when requests race for the last one;
- emergency access (break-glass): hospitals only, purpose ETREAT, with a reason code and a
  justification; the justification is kept in the store under the request id (for the
  regulator), the audit entry names only the reason and a digest of it.

A refusal of a consent names what does not hold (``consent_unknown``, ``consent_other_grantee``,
``consent_other_card``, ...) in this order: a caller that is not the grantee learns nothing
about the consent, and the card check compares keyed hashes before the card registry is asked,
so it says only "not the card this consent is for", never whether another card exists.

The stage runs before the card registry is asked, from the request and the caller alone, so a
caller without a basis learns nothing about the card, not even whether it exists. A refusal of
a basis bound to a citizen (their consent, their own token for this card, a break-glass claim
on their card) names them for the audit entry only (``BasisRefused.subject`` / ``card_bound``),
so that the attempt shows in their access history.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.audit.log import ConsentSpend, Spend, TokenSpend
from gateway.consents import Consent, ConsentStatus, ConsentStore, Justification
from gateway.context import Caller
from gateway.errors import BasisRefused, NotSupported
from gateway.orgs import OrgType
from gateway.tokens import CardTokens


class BasisKind(enum.Enum):
    """The kinds of lawful basis; the values are what policies see as ``context.basis``."""

    CARD_PRESENT = "card_present"
    CONSENT = "consent"
    EMERGENCY = "emergency"
    CITIZEN_APP = "citizen_app"
    STATUTORY = "statutory"


@dataclass(frozen=True, slots=True)
class CardPresentClaim:
    """The caller scanned an e-card token."""

    token: str


@dataclass(frozen=True, slots=True)
class ConsentClaim:
    """The caller relies on a standing consent."""

    consent_id: str


@dataclass(frozen=True, slots=True)
class EmergencyClaim:
    """The caller claims break-glass access."""

    reason: str
    justification: str


@dataclass(frozen=True, slots=True)
class CitizenAppClaim:
    """The citizen, signed in to the official app, acts for themself."""


@dataclass(frozen=True, slots=True)
class StatutoryClaim:
    """A regulator oversees the audit log (the claim of every AuditService call)."""


@dataclass(frozen=True, slots=True)
class NoClaim:
    """The request named no basis."""


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the request asks for, which some bases are bounded by (a consent, an emergency)."""

    purpose: str = ""
    category: str = ""  # the data category the call reads; "" for none
    at: dt.datetime = _EPOCH  # when the gateway received the request
    request_id: str = ""


NO_SCOPE = Scope()

BasisClaim = (
    CardPresentClaim | ConsentClaim | EmergencyClaim | CitizenAppClaim | StatutoryClaim | NoClaim
)


@dataclass(frozen=True, slots=True)
class Basis:
    """An established basis. ``reference`` identifies it in the audit log without personal data.

    ``spend`` is what the exchange uses up if it releases data (the card-present token, one use
    of the consent), in the transaction of its audit entry. ``consent`` is the consent relied
    on, for the policy to decide with.
    """

    kind: BasisKind
    reference: str
    spend: Spend | None = None
    consent: Consent | None = None


class BasisVerifier(Protocol):
    """Proves one kind of claim for a card number ("" when no card is involved)."""

    async def establish(self, claim: Any, card_number: str, caller: Caller, scope: Scope) -> Basis:
        """The established basis, or raise ``BasisRefused`` / ``NotSupported``."""
        ...


class CardPresentVerifier:
    """The e-card token the citizen shows at the counter."""

    def __init__(self, tokens: CardTokens) -> None:
        self._tokens = tokens

    async def establish(
        self, claim: CardPresentClaim, card_number: str, caller: Caller, scope: Scope
    ) -> Basis:
        use = await self._tokens.check(claim.token, card_number)
        spend = TokenSpend(use.token_id, use.expires_at)
        return Basis(BasisKind.CARD_PRESENT, use.reference, spend)


class OrgTypeVerifier:
    """A basis that only one type of organisation can claim (the citizen app)."""

    def __init__(self, kind: BasisKind, org_type: OrgType, refusal: str, reason: str) -> None:
        self._kind, self._org_type = kind, org_type
        self._refusal, self._reason = refusal, reason

    async def establish(
        self, claim: object, card_number: str, caller: Caller, scope: Scope
    ) -> Basis:
        if caller.org.org_type is not self._org_type:
            raise BasisRefused(self._refusal, reason=self._reason)
        return Basis(self._kind, self._kind.value)


class Statutory:
    """Oversight of the audit log: claimed by every AuditService call, for the policy to weigh.

    Who holds a statutory mandate (regulators) is the policy's rule
    (``regulator-reads-audit-log``), so a refusal names the policy, as for any action.
    """

    async def establish(
        self, claim: object, card_number: str, caller: Caller, scope: Scope
    ) -> Basis:
        return Basis(BasisKind.STATUTORY, "")


_CONSENT_STATUS_REFUSALS = {
    ConsentStatus.REVOKED: ("the consent was revoked; the citizen can grant a new one", "revoked"),
    ConsentStatus.EXPIRED: ("the consent's validity period has ended", "expired"),
    ConsentStatus.EXHAUSTED: (
        "the consent has no uses left; the citizen can grant a new one",
        "exhausted",
    ),
}


class ConsentVerifier:
    """A standing consent, checked against the store on every request (nothing cached)."""

    def __init__(self, consents: ConsentStore, bind_card: Callable[[str], str]) -> None:
        self._consents = consents
        self._bind_card = bind_card

    async def establish(
        self, claim: ConsentClaim, card_number: str, caller: Caller, scope: Scope
    ) -> Basis:
        consent = await self._consents.get(claim.consent_id)
        if consent is None:
            raise BasisRefused(
                "no consent has this id; ask the citizen for the consent id from the app",
                reason="consent_unknown",
            )
        try:
            binding = self._bind_card(card_number) if card_number else ""
            _check_consent(consent, binding, caller, scope)
        except BasisRefused as refused:  # an attempt on the consent's citizen: their history
            raise BasisRefused(
                refused.message,
                reason=refused.reason,
                subject=consent.subject,
                reference=consent.reference,
            ) from None
        return Basis(
            BasisKind.CONSENT,
            consent.reference,
            ConsentSpend(consent.consent_id, micros(scope.at)),
            consent,
        )


def _check_consent(consent: Consent, card_binding: str, caller: Caller, scope: Scope) -> None:
    """Refuse unless ``consent`` lets ``caller`` read the bound card for ``scope`` now."""
    if not consent.grantee.admits(caller.org):
        raise BasisRefused(
            f"the consent was not granted to organisation {caller.org.org_id}",
            reason="consent_other_grantee",
        )
    if card_binding != consent.card_binding:
        raise BasisRefused(
            "the consent is not for the card this request names", reason="consent_other_card"
        )
    status = consent.status(scope.at)
    if status is not ConsentStatus.ACTIVE:
        message, word = _CONSENT_STATUS_REFUSALS[status]
        raise BasisRefused(message, reason=f"consent_{word}")
    if scope.at < consent.valid_from:
        raise BasisRefused(
            f"the consent is valid from {consent.valid_from.isoformat()}",
            reason="consent_not_yet_valid",
        )
    if not scope.category:
        raise BasisRefused(
            "this call reads no data category a consent can cover; use another basis",
            reason="consent_no_category",
        )
    if scope.category not in consent.categories:
        raise BasisRefused(
            f"the consent does not cover {scope.category} data (it covers "
            f"{', '.join(consent.categories)})",
            reason="consent_other_category",
        )
    if scope.purpose not in consent.purposes:
        raise BasisRefused(
            f"the consent does not cover purpose {scope.purpose} (it covers "
            f"{', '.join(consent.purposes)})",
            reason="consent_other_purpose",
        )


class EmergencyVerifier:
    """Break-glass access: hospitals only, purpose ETREAT, reason and justification kept.

    The audit entry names the reason and the first 16 hex digits of SHA-256(justification):
    the text itself may name the patient, so it is kept in the store under the request id,
    where the regulator's report reads it, never in the log.
    """

    def __init__(self, consents: ConsentStore) -> None:
        self._consents = consents

    async def establish(
        self, claim: EmergencyClaim, card_number: str, caller: Caller, scope: Scope
    ) -> Basis:
        if caller.org.org_type is not OrgType.HOSPITAL:
            raise BasisRefused(
                "emergency access is for hospitals only; other organisations need the "
                "card-present token or a consent",
                reason="emergency_not_hospital",
                card_bound=True,  # a break-glass attempt on this card: its holder's history
            )
        if scope.purpose != "ETREAT":
            raise BasisRefused(
                "emergency access is for emergency treatment only: send purpose PURPOSE_ETREAT",
                reason="emergency_wrong_purpose",
                card_bound=True,
            )
        digest = hashlib.sha256(claim.justification.encode("utf-8")).hexdigest()[:16]
        await self._consents.keep_justification(
            Justification(scope.request_id, caller.org.org_id, claim.reason, digest, scope.at),
            claim.justification,
        )
        return Basis(BasisKind.EMERGENCY, f"emergency:{claim.reason}:{digest}")


def micros(moment: dt.datetime) -> int:
    """Unix microseconds of an aware datetime (how spends carry times)."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


class NoBasis:
    """The request named none."""

    async def establish(
        self, claim: object, card_number: str, caller: Caller, scope: Scope
    ) -> Basis:
        raise BasisRefused(
            "a lawful basis is required: send the card-present token from the e-card QR code "
            "in basis.card_present.token",
            reason="basis_missing",
        )


def default_verifiers(
    tokens: CardTokens, consents: ConsentStore, bind_card: Callable[[str], str]
) -> dict[type, BasisVerifier]:
    """Every kind of claim and its verifier, as bootstrap registers them."""
    return {
        CardPresentClaim: CardPresentVerifier(tokens),
        CitizenAppClaim: OrgTypeVerifier(
            BasisKind.CITIZEN_APP,
            OrgType.CITIZEN_APP,
            "only the official citizen app acts for the citizen themself; other organisations "
            "need the card-present token the citizen shows",
            "citizen_app_only",
        ),
        StatutoryClaim: Statutory(),
        ConsentClaim: ConsentVerifier(consents, bind_card),
        EmergencyClaim: EmergencyVerifier(consents),
        NoClaim: NoBasis(),
    }


_CLAIMED: dict[type, BasisKind] = {
    CardPresentClaim: BasisKind.CARD_PRESENT,
    ConsentClaim: BasisKind.CONSENT,
    EmergencyClaim: BasisKind.EMERGENCY,
    CitizenAppClaim: BasisKind.CITIZEN_APP,
    StatutoryClaim: BasisKind.STATUTORY,
}


def claimed(claim: BasisClaim) -> str:
    """The kind of basis ``claim`` claims, as policies and audit entries name it ("" for none)."""
    kind = _CLAIMED.get(type(claim))
    return kind.value if kind is not None else ""


class BasisStage:
    """Proves lawful-basis claims with the verifier registered for each kind of claim."""

    def __init__(self, verifiers: Mapping[type, BasisVerifier]) -> None:
        self._verifiers = dict(verifiers)

    async def establish(
        self, claim: BasisClaim, card_number: str, caller: Caller, scope: Scope = NO_SCOPE
    ) -> Basis:
        """The proven basis for ``card_number``, or ``BasisRefused`` / ``NotSupported``."""
        verifier = self._verifiers.get(type(claim))
        if verifier is None:
            raise NotSupported(f"{type(claim).__name__} is not a basis this gateway offers")
        return await verifier.establish(claim, card_number, caller, scope)
