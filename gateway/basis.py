"""The lawful-basis stage: what makes this request lawful, proven rather than claimed.

Claims arrive from the services as frozen dataclasses. A card-present claim is proven by the
e-card token (authentic, bound to this card, unexpired, not yet used; the exchange that releases
data redeems it with its audit entry). The citizen app's own token request rests on the citizen
having signed in to the app, so only a citizen-app organisation can claim it. Standing consents and
emergency access are named in the API but not offered by this gateway yet: they are refused
with UNIMPLEMENTED rather than silently allowed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
class NoClaim:
    """The request named no basis."""


BasisClaim = CardPresentClaim | ConsentClaim | EmergencyClaim | CitizenAppClaim | NoClaim


@dataclass(frozen=True, slots=True)
class Basis:
    """An established basis. ``reference`` identifies it in the audit log without personal data.

    ``token`` is the card-present token the exchange redeems if it releases data.
    """

    kind: BasisKind
    reference: str
    token: TokenUse | None = None


class BasisStage:
    """Proves lawful-basis claims from the request and the caller alone.

    It runs before the card registry is asked, so that a caller without a basis learns nothing
    about the card, not even whether it exists: every card number gets the same refusal.
    """

    def __init__(self, tokens: CardTokens) -> None:
        self._tokens = tokens

    async def establish(self, claim: BasisClaim, card_number: str, caller: Caller) -> Basis:
        """The proven basis for ``card_number``, or ``BasisRefused`` / ``NotSupported``."""
        match claim:
            case CardPresentClaim(token=token):
                use = await self._tokens.check(token, card_number)
                return Basis(BasisKind.CARD_PRESENT, use.reference, use)
            case CitizenAppClaim():
                if caller.org.org_type is not OrgType.CITIZEN_APP:
                    raise BasisRefused(
                        "only the official citizen app acts for the citizen themself; other "
                        "organisations need the card-present token the citizen shows",
                        reason="citizen_app_only",
                    )
                return Basis(BasisKind.CITIZEN_APP, "citizen_app")
            case ConsentClaim():
                raise NotSupported("standing consents are not offered by this gateway yet")
            case EmergencyClaim():
                raise NotSupported("emergency access is not offered by this gateway yet")
            case NoClaim():
                raise BasisRefused(
                    "a lawful basis is required: send the card-present token from the e-card QR "
                    "code in basis.card_present.token",
                    reason="basis_missing",
                )
