"""Consents, emergency access and the access history together, over mutual TLS.

Everything issue 12 asks the history to show happens to citizen A, with citizen B's exchanges
in between: a grant, a use, a revocation and the refused next request, an expired consent, a
consent used up (two uses racing for the last one), a consent tried by another organisation,
for another category, purpose or card, an emergency read with a reason, and emergencies
refused (from a library, and without a reason: that one is malformed, refused before the
request is read as being about anyone). A's history then holds every other one of those
exchanges, in order, flagged as they happened, none of B's, and its completeness check
passes; B's holds none of A's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import common_pb2, consent_pb2
from gateway.audit.history_check import check_history
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.ports import CardStatus
from tests.integration.calls import (
    consent_basis,
    emergency_basis,
    grant_consent,
    insurance_on,
    revoke_consent,
)
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY
from tests.integration.test_access_history import history_pages, public_key

pytestmark = pytest.mark.integration
OTHER_HOSPITAL = "hosp-sh-002"
TO_HOSPITAL = consent_pb2.Grantee(org_id=HOSPITAL)
URGENT = common_pb2.EMERGENCY_REASON_LIFE_THREATENING


async def _refusal(call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return reason(info.value)


async def _story_of_a(gateway: Gateway, a: str, b: str) -> list[tuple[str, str, str, bool]]:
    """Every exchange about A that the history must show: (rpc, basis, reason, emergency)."""

    def channel(org: str) -> grpc.aio.Channel:
        return org_channel(gateway.target, gateway.pki, org)

    expected: list[tuple[str, str, str, bool]] = []
    async with (
        channel(CITIZEN_APP) as app,
        channel(HOSPITAL) as hosp,
        channel(OTHER_HOSPITAL) as other,
        channel(LIBRARY) as lib,
    ):
        consent = (await grant_consent(app, a, TO_HOSPITAL)).consent.consent_id
        expected.append(("GrantConsent", "citizen_app", "", False))
        await insurance_on(hosp, a, consent_basis(consent))
        expected.append(("GetInsuranceStatus", "consent", "", False))
        on_b = (await grant_consent(app, b, TO_HOSPITAL)).consent.consent_id  # B, in between
        await insurance_on(hosp, b, consent_basis(on_b))

        for refused, caller, card, purpose in (
            ("consent_other_grantee", other, a, common_pb2.PURPOSE_COVERAGE),
            ("consent_other_purpose", hosp, a, common_pb2.PURPOSE_TREAT),
            ("consent_other_card", hosp, b, common_pb2.PURPOSE_COVERAGE),  # A's consent, B's card
        ):
            assert await _refusal(insurance_on(caller, card, consent_basis(consent), purpose)) == (
                refused
            )
            expected.append(("GetInsuranceStatus", "consent", refused, False))

        await revoke_consent(app, a, consent)
        expected.append(("RevokeConsent", "citizen_app", "", False))
        assert await _refusal(insurance_on(hosp, a, consent_basis(consent))) == "consent_revoked"
        expected.append(("GetInsuranceStatus", "consent", "consent_revoked", False))

        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        short = await grant_consent(
            app, a, TO_HOSPITAL, valid_from=start, valid_for=dt.timedelta(days=1, seconds=1)
        )
        expected.append(("GrantConsent", "citizen_app", "", False))
        until = short.consent.valid_until.ToDatetime(dt.UTC)
        await asyncio.sleep(max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
        expired = consent_basis(short.consent.consent_id)
        assert await _refusal(insurance_on(hosp, a, expired)) == "consent_expired"
        expected.append(("GetInsuranceStatus", "consent", "consent_expired", False))

        once = (await grant_consent(app, a, TO_HOSPITAL, max_uses=1)).consent.consent_id
        expected.append(("GrantConsent", "citizen_app", "", False))
        racing = await asyncio.gather(
            insurance_on(hosp, a, consent_basis(once)),
            insurance_on(hosp, a, consent_basis(once)),
            return_exceptions=True,
        )
        refusals = [r for r in racing if isinstance(r, grpc.aio.AioRpcError)]
        assert len(refusals) == 1 and reason(refusals[0]) == "consent_exhausted"
        expected += [
            ("GetInsuranceStatus", "consent", "", False),
            ("GetInsuranceStatus", "consent", "consent_exhausted", False),
        ]

        why = "unconscious on arrival, no relatives reachable"
        etreat = common_pb2.PURPOSE_ETREAT
        await insurance_on(hosp, a, emergency_basis(URGENT, why), etreat)
        expected.append(("GetInsuranceStatus", "emergency", "", True))
        refused = await _refusal(insurance_on(lib, a, emergency_basis(URGENT, why), etreat))
        assert refused == "emergency_not_hospital"
        expected.append(("GetInsuranceStatus", "emergency", "emergency_not_hospital", False))
        # An emergency without a reason is refused as malformed before the request is read as
        # being about anyone: the caller's entry, not A's.
        no_reason = emergency_basis(common_pb2.EMERGENCY_REASON_UNSPECIFIED, why)
        assert await _refusal(insurance_on(hosp, a, no_reason, etreat)) == "invalid_request"
    return expected


async def test_a_citizens_history_shows_every_consent_and_emergency_exchange_about_them(
    gateway_factory: Callable[..., Any], population: Population, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory()
    a, b = [p.id_number for p in population if p.card_status is CardStatus.NORMAL][:2]
    expected = await _story_of_a(gateway, a, b)

    async with org_channel(gateway.target, gateway.pki, CITIZEN_APP) as app:
        pages_a = await history_pages(app, a, page_size=4)
        pages_b = await history_pages(app, b, page_size=50)
    key = public_key(tmp_path / "data")
    verdict_a = check_history(pages_a, key, pages_a[0].receipt.leaf_index)
    verdict_b = check_history(pages_b, key, pages_b[0].receipt.leaf_index)
    assert verdict_a.ok and verdict_b.ok, (verdict_a, verdict_b)

    events = [e for page in pages_a for e in page.events]
    assert events[0].rpc == "GetAccessHistory"  # the history's own entry, newest
    shown = [(e.rpc, e.basis, e.reason, e.emergency) for e in reversed(events[1:])]
    assert shown == expected
    assert all(e.consent_id for e in events if e.basis == "consent")
    (urgent,) = [e for e in events if e.emergency]
    assert json.loads(urgent.leaf)["r"]["basis_ref"].startswith("emergency:LIFE_THREATENING:")

    indexes_a = {e.index for e in events}
    indexes_b = {e.index for page in pages_b for e in page.events}
    assert not indexes_a & indexes_b  # one citizen never sees the other's entries
    subjects = {json.loads(e.leaf)["r"]["subject"] for page in pages_b for e in page.events}
    assert len(subjects) == 1
