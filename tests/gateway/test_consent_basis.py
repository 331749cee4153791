"""The consent and emergency verifiers, with a fake store: what each refusal says, and when."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from gateway.audit.log import ConsentSpend
from gateway.basis import (
    BasisKind,
    ConsentClaim,
    ConsentVerifier,
    EmergencyClaim,
    EmergencyVerifier,
    Scope,
)
from gateway.consents import Consent, Grantee
from gateway.context import Caller
from gateway.errors import BasisRefused
from gateway.orgs import Org, OrgType
from tests.gateway.fakes import FakeConsents

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CARD, OTHER_CARD = "110101199003074477", "11010519491231002X"
HOSPITAL = Caller(Org("hosp-1", OrgType.HOSPITAL, "hospital", "110105"), "ab")
FAR_HOSPITAL = Caller(Org("hosp-2", OrgType.HOSPITAL, "hospital", "310101"), "ab")
LIBRARY = Caller(Org("lib-1", OrgType.LIBRARY, "library", "110105"), "ab")
SCOPE = Scope("COVERAGE", "insurance", NOW, "req-1")


def bind(card: str) -> str:
    return "bound:" + card


def consent(**changes: object) -> Consent:
    base = Consent(
        consent_id="cns_x",
        subject="5b" * 32,
        card_binding=bind(CARD),
        grantee=Grantee(org_type="hospital", district="110105"),
        categories=("insurance",),
        purposes=("COVERAGE",),
        valid_from=NOW - dt.timedelta(days=1),
        valid_until=NOW + dt.timedelta(days=1),
        max_uses=2,
        uses=0,
        granted_at=NOW - dt.timedelta(days=1),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def establish(
    stored: Consent | None, caller: Caller = HOSPITAL, card: str = CARD, scope: Scope = SCOPE
) -> object:
    consents = FakeConsents()
    if stored is not None:
        await consents.add(stored)
    return await ConsentVerifier(consents, bind).establish(
        ConsentClaim("cns_x"), card, caller, scope
    )


async def test_an_active_consent_names_itself_and_its_use() -> None:
    basis = await establish(consent())
    assert basis == await establish(consent())  # deterministic
    assert basis.kind is BasisKind.CONSENT
    assert basis.reference == "consent:cns_x"
    assert basis.spend == ConsentSpend("cns_x", int(NOW.timestamp() * 1_000_000))


@pytest.mark.parametrize(
    ("stored", "caller", "card", "scope", "reason"),
    [
        (None, HOSPITAL, CARD, SCOPE, "consent_unknown"),
        (consent(), FAR_HOSPITAL, CARD, SCOPE, "consent_other_grantee"),
        (consent(), LIBRARY, CARD, SCOPE, "consent_other_grantee"),
        (consent(grantee=Grantee(org_id="hosp-2")), HOSPITAL, CARD, SCOPE, "consent_other_grantee"),
        # a caller that is not the grantee learns nothing more, not even that it was revoked
        (consent(revoked_at=NOW), FAR_HOSPITAL, CARD, SCOPE, "consent_other_grantee"),
        (consent(), HOSPITAL, OTHER_CARD, SCOPE, "consent_other_card"),
        (consent(revoked_at=NOW), HOSPITAL, CARD, SCOPE, "consent_revoked"),
        (consent(valid_until=NOW), HOSPITAL, CARD, SCOPE, "consent_expired"),
        (consent(uses=2), HOSPITAL, CARD, SCOPE, "consent_exhausted"),
        (consent(valid_from=NOW + dt.timedelta(1)), HOSPITAL, CARD, SCOPE, "consent_not_yet_valid"),
        (consent(), HOSPITAL, CARD, dataclasses.replace(SCOPE, category=""), "consent_no_category"),
        (
            consent(),
            HOSPITAL,
            CARD,
            dataclasses.replace(SCOPE, category="health.lab"),
            "consent_other_category",
        ),
        (
            consent(),
            HOSPITAL,
            CARD,
            dataclasses.replace(SCOPE, purpose="TREAT"),
            "consent_other_purpose",
        ),
    ],
)
async def test_each_refusal_names_what_does_not_hold(
    stored: Consent | None, caller: Caller, card: str, scope: Scope, reason: str
) -> None:
    with pytest.raises(BasisRefused) as info:
        await establish(stored, caller, card, scope)
    assert info.value.reason == reason
    assert CARD not in info.value.message and OTHER_CARD not in info.value.message


async def test_an_emergency_keeps_the_justification_and_logs_only_its_digest() -> None:
    consents = FakeConsents()
    claim = EmergencyClaim("LIFE_THREATENING", "patient named Zhang, cardiac arrest")
    scope = dataclasses.replace(SCOPE, purpose="ETREAT")
    basis = await EmergencyVerifier(consents).establish(claim, CARD, HOSPITAL, scope)
    assert basis.kind is BasisKind.EMERGENCY
    kind, code, digest = basis.reference.split(":")
    assert (kind, code, len(digest)) == ("emergency", "LIFE_THREATENING", 16)
    about, text = consents.kept["req-1", digest]
    assert text == claim.justification and about.digest == digest and about.org == "hosp-1"


@pytest.mark.parametrize(
    ("caller", "purpose", "reason"),
    [
        (LIBRARY, "ETREAT", "emergency_not_hospital"),
        (HOSPITAL, "COVERAGE", "emergency_wrong_purpose"),
    ],
)
async def test_an_emergency_is_for_hospitals_treating_an_emergency(
    caller: Caller, purpose: str, reason: str
) -> None:
    consents = FakeConsents()
    claim = EmergencyClaim("LIFE_THREATENING", "why")
    with pytest.raises(BasisRefused) as info:
        await EmergencyVerifier(consents).establish(
            claim, CARD, caller, dataclasses.replace(SCOPE, purpose=purpose)
        )
    assert info.value.reason == reason
    assert consents.kept == {}
