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
- standing consent and emergency access: named in the API, refused with UNIMPLEMENTED until
  they are offered, rather than silently allowed.

The stage runs before the card registry is asked, from the request and the caller alone, so a
caller without a basis learns nothing about the card, not even whether it exists.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.context import Caller
from gateway.errors import BasisRefused, NotSupported
from gateway.orgs import OrgType
from gateway.tokens import CardTokens, TokenUse


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


BasisClaim = (
    CardPresentClaim | ConsentClaim | EmergencyClaim | CitizenAppClaim | StatutoryClaim | NoClaim
)


@dataclass(frozen=True, slots=True)
class Basis:
    """An established basis. ``reference`` identifies it in the audit log without personal data.

    ``token`` is the card-present token the exchange redeems if it releases data.
    """

    kind: BasisKind
    reference: str
    token: TokenUse | None = None


class BasisVerifier(Protocol):
    """Proves one kind of claim for a card number ("" when no card is involved)."""

    async def establish(self, claim: Any, card_number: str, caller: Caller) -> Basis:
        """The established basis, or raise ``BasisRefused`` / ``NotSupported``."""
        ...


class CardPresentVerifier:
    """The e-card token the citizen shows at the counter."""

    def __init__(self, tokens: CardTokens) -> None:
        self._tokens = tokens

    async def establish(self, claim: CardPresentClaim, card_number: str, caller: Caller) -> Basis:
        use = await self._tokens.check(claim.token, card_number)
        return Basis(BasisKind.CARD_PRESENT, use.reference, use)


class OrgTypeVerifier:
    """A basis that only one type of organisation can claim (the citizen app)."""

    def __init__(self, kind: BasisKind, org_type: OrgType, refusal: str, reason: str) -> None:
        self._kind, self._org_type = kind, org_type
        self._refusal, self._reason = refusal, reason

    async def establish(self, claim: object, card_number: str, caller: Caller) -> Basis:
        if caller.org.org_type is not self._org_type:
            raise BasisRefused(self._refusal, reason=self._reason)
        return Basis(self._kind, self._kind.value)


class Statutory:
    """Oversight of the audit log: claimed by every AuditService call, for the policy to weigh.

    Who holds a statutory mandate (regulators) is the policy's rule
    (``regulator-reads-audit-log``), so a refusal names the policy, as for any action.
    """

    async def establish(self, claim: object, card_number: str, caller: Caller) -> Basis:
        return Basis(BasisKind.STATUTORY, "")


class NotOffered:
    """A basis the API names but this gateway does not offer yet."""

    def __init__(self, what: str) -> None:
        self._what = what

    async def establish(self, claim: object, card_number: str, caller: Caller) -> Basis:
        raise NotSupported(f"{self._what} not offered by this gateway yet")


class NoBasis:
    """The request named none."""

    async def establish(self, claim: object, card_number: str, caller: Caller) -> Basis:
        raise BasisRefused(
            "a lawful basis is required: send the card-present token from the e-card QR code "
            "in basis.card_present.token",
            reason="basis_missing",
        )


def default_verifiers(tokens: CardTokens) -> dict[type, BasisVerifier]:
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
        ConsentClaim: NotOffered("standing consents are"),
        EmergencyClaim: NotOffered("emergency access is"),
        NoClaim: NoBasis(),
    }


class BasisStage:
    """Proves lawful-basis claims with the verifier registered for each kind of claim."""

    def __init__(self, verifiers: Mapping[type, BasisVerifier]) -> None:
        self._verifiers = dict(verifiers)

    async def establish(self, claim: BasisClaim, card_number: str, caller: Caller) -> Basis:
        """The proven basis for ``card_number``, or ``BasisRefused`` / ``NotSupported``."""
        verifier = self._verifiers.get(type(claim))
        if verifier is None:
            raise NotSupported(f"{type(claim).__name__} is not a basis this gateway offers")
        return await verifier.establish(claim, card_number, caller)
