"""Standing consents and emergency access, end to end over mutual TLS (issue 12).

The citizen app grants, lists and revokes; hospitals read insurance status on a consent or in
an emergency; every refusal carries its reason and is in the audit log. Uses are counted once
per released answer, also when requests race for the last one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from jwcrypto import jwk, jws

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import common_pb2, consent_pb2
from gateway.bootstrap import Gateway
from gateway.cardno import check_character
from gateway.client import refusal_reason as reason
from gateway.ports import CardStatus
from tests.integration.calls import (
    consent_basis,
    emergency_basis,
    grant_consent,
    insurance_on,
    list_consents,
    revoke_consent,
    verify_card,
)
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY
from tests.integration.stored import query, refusing_audit_appends

pytestmark = pytest.mark.integration
Channel = Callable[[str], grpc.aio.Channel]
OTHER_HOSPITAL = "hosp-sh-002"  # district 310101; HOSPITAL is in 110105
TO_HOSPITAL = consent_pb2.Grantee(org_id=HOSPITAL)
WITH_CONSENT = "hospital-reads-insurance-status-with-consent"


def _insured_employee(population: Population) -> Any:
    """A normal card whose record has an employer and a balance (to prove withholding)."""
    return population.first(
        card_status=CardStatus.NORMAL,
        where=lambda p: any(s.employer_name and s.balance is not None for s in p.schemes),
    )


def _another(population: Population, person: Any) -> Any:
    return population.first(
        card_status=CardStatus.NORMAL, where=lambda p: p.id_number != person.id_number
    )


async def _records(gateway: Gateway) -> list[dict[str, Any]]:
    entries = await gateway.audit_log.entries(0, 1 << 62)
    return [json.loads(e.leaf)["r"] for e in entries]


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_grant_use_revoke_then_the_very_next_request_is_refused(
    gateway: Gateway, channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        granted = await grant_consent(app, person.id_number, TO_HOSPITAL)
        consent_id = granted.consent.consent_id
        read = await insurance_on(hosp, person.id_number, consent_basis(consent_id))
        listed = await list_consents(app, person.id_number)
        revoked = await revoke_consent(app, person.id_number, consent_id)
        after = await _refused(insurance_on(hosp, person.id_number, consent_basis(consent_id)))
        again = await _refused(revoke_consent(app, person.id_number, consent_id))

    assert consent_id.startswith("cns_") and len(consent_id) == 28
    assert granted.consent.status == consent_pb2.CONSENT_STATUS_ACTIVE
    assert list(granted.decision.policy_ids) == ["citizen-app-grants-consent"]
    assert [s.insutype for s in read.schemes] == [s.insutype for s in person.schemes]
    assert all(s.balance == "" and s.employer_name == "" for s in read.schemes)
    assert list(read.decision.policy_ids) == [WITH_CONSENT]
    (mine,) = listed.consents
    assert (mine.consent_id, mine.uses) == (consent_id, 1)
    assert revoked.consent.status == consent_pb2.CONSENT_STATUS_REVOKED
    assert revoked.consent.HasField("revoked_at")
    assert after.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(after) == "consent_revoked"
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION

    records = await _records(gateway)
    reads = [r for r in records if r["rpc"].endswith("GetInsuranceStatus")]
    assert [(r["outcome"], r["reason"]) for r in reads] == [
        ("OK", ""),
        ("PERMISSION_DENIED", "consent_revoked"),
    ]
    assert reads[0]["basis_ref"] == f"consent:{consent_id}" and reads[0]["basis"] == "consent"
    consent_calls = [r["rpc"].rsplit("/", 1)[1] for r in records if "ConsentService" in r["rpc"]]
    assert consent_calls == ["GrantConsent", "ListConsents", "RevokeConsent", "RevokeConsent"]
    assert all(person.id_number not in json.dumps(r) for r in records)


async def test_a_consent_for_a_type_in_a_district_admits_only_that_type_there(
    channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    in_district = consent_pb2.Grantee(
        org_type_in_district=consent_pb2.OrgTypeInDistrict(org_type="hospital", district="110105")
    )
    async with (
        channel(CITIZEN_APP) as app,
        channel(HOSPITAL) as hosp,
        channel(OTHER_HOSPITAL) as other,
    ):
        consent_id = (await grant_consent(app, person.id_number, in_district)).consent.consent_id
        read = await insurance_on(hosp, person.id_number, consent_basis(consent_id))
        elsewhere = await _refused(insurance_on(other, person.id_number, consent_basis(consent_id)))
    assert list(read.decision.policy_ids) == [WITH_CONSENT]
    assert reason(elsewhere) == "consent_other_grantee"


async def test_a_consent_is_refused_to_another_org_category_purpose_or_card(
    channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    other_person = _another(population, person)
    body = "11010519800101123"
    unknown_card = body + check_character(body)  # well formed, no such holder
    async with (
        channel(CITIZEN_APP) as app,
        channel(HOSPITAL) as hosp,
        channel(OTHER_HOSPITAL) as other,
        channel(LIBRARY) as lib,
    ):
        insurance = (await grant_consent(app, person.id_number, TO_HOSPITAL)).consent.consent_id
        library_only = (
            await grant_consent(
                app,
                person.id_number,
                TO_HOSPITAL,
                categories=(consent_pb2.DATA_CATEGORY_LIBRARY,),
            )
        ).consent.consent_id
        on = consent_basis(insurance)
        refusals = {
            "other org": await _refused(insurance_on(other, person.id_number, on)),
            "other type": await _refused(insurance_on(lib, person.id_number, on)),
            "other category": await _refused(
                insurance_on(hosp, person.id_number, consent_basis(library_only))
            ),
            "no category": await _refused(
                verify_card(hosp, person.id_number, "", common_pb2.PURPOSE_COVERAGE, on=on)
            ),
            "other purpose": await _refused(
                insurance_on(hosp, person.id_number, on, common_pb2.PURPOSE_TREAT)
            ),
            "other card": await _refused(insurance_on(hosp, other_person.id_number, on)),
            "no such card": await _refused(insurance_on(hosp, unknown_card, on)),
            "unknown consent": await _refused(
                insurance_on(hosp, person.id_number, consent_basis("cns_" + "a" * 24))
            ),
        }
        listed = await list_consents(app, person.id_number)

    assert {what: reason(err) for what, err in refusals.items()} == {
        "other org": "consent_other_grantee",
        "other type": "consent_other_grantee",
        "other category": "consent_other_category",
        "no category": "consent_no_category",
        "other purpose": "consent_other_purpose",
        "other card": "consent_other_card",
        "no such card": "consent_other_card",  # the same answer: no oracle about cards
        "unknown consent": "consent_unknown",
    }
    assert {err.code() for err in refusals.values()} == {grpc.StatusCode.PERMISSION_DENIED}
    assert refusals["other card"].details() == refusals["no such card"].details()
    assert {c.uses for c in listed.consents} == {0}  # nothing released, nothing used


async def test_a_consent_expires(channel: Channel, population: Population) -> None:
    person = _insured_employee(population)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        granted = await grant_consent(
            app,
            person.id_number,
            TO_HOSPITAL,
            valid_from=start,
            valid_for=dt.datetime.now(dt.UTC) - start + dt.timedelta(seconds=1),
        )
        consent_id = granted.consent.consent_id
        until = granted.consent.valid_until.ToDatetime(dt.UTC)
        await asyncio.sleep(max(0.0, (until - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
        expired = await _refused(insurance_on(hosp, person.id_number, consent_basis(consent_id)))
        (listed,) = (await list_consents(app, person.id_number)).consents
    assert reason(expired) == "consent_expired"
    assert listed.status == consent_pb2.CONSENT_STATUS_EXPIRED


async def test_uses_are_counted_once_per_answer_even_when_racing_for_the_last(
    gateway: Gateway, channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    racers = 12
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        granted = await grant_consent(app, person.id_number, TO_HOSPITAL, max_uses=2)
        on = consent_basis(granted.consent.consent_id)
        await insurance_on(hosp, person.id_number, on)  # the first use
        results = await asyncio.gather(
            *(insurance_on(hosp, person.id_number, on) for _ in range(racers)),
            return_exceptions=True,
        )
        (listed,) = (await list_consents(app, person.id_number)).consents

    answers = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(answers) == 1 and len(refusals) == racers - 1
    assert {reason(r) for r in refusals} == {"consent_exhausted"}
    assert (listed.uses, listed.status) == (2, consent_pb2.CONSENT_STATUS_EXHAUSTED)
    reads = [r for r in await _records(gateway) if r["rpc"].endswith("GetInsuranceStatus")]
    assert sorted((r["outcome"], r["reason"]) for r in reads) == sorted(
        [("OK", "")] * 2 + [("PERMISSION_DENIED", "consent_exhausted")] * (racers - 1)
    )
    assert all(r["released_sha256"] == "" for r in reads if r["outcome"] != "OK")


async def test_the_artefact_verifies_with_the_published_key_set_alone(
    gateway: Gateway, channel: Channel, population: Population, tmp_path: Path
) -> None:
    person = _insured_employee(population)
    async with channel(CITIZEN_APP) as app:
        granted = await grant_consent(
            app,
            person.id_number,
            TO_HOSPITAL,
            purposes=(common_pb2.PURPOSE_COVERAGE, common_pb2.PURPOSE_HPAYMT),
            max_uses=5,
        )
    key_set = jwk.JWKSet.from_json((tmp_path / "data" / "consent-keys.json").read_text())
    token = jws.JWS()
    token.deserialize(granted.artefact)
    (key,) = key_set["keys"]
    assert token.jose_header["alg"] == "EdDSA" and token.jose_header["kid"] == key["kid"]
    token.verify(key)
    payload = json.loads(token.payload)
    assert payload["jti"] == granted.consent.consent_id
    assert payload["iss"] == gateway.audit_log.origin
    assert payload["consent"] == {
        "grantee": {"org_id": HOSPITAL},
        "categories": ["insurance"],
        "purposes": ["COVERAGE", "HPAYMT"],
        "max_uses": 5,
    }
    assert payload["exp"] == granted.consent.valid_until.seconds
    assert (
        person.id_number not in granted.artefact and person.id_number.encode() not in token.payload
    )

    header, body, signature = granted.artefact.split(".")
    widened = dict(payload, consent=dict(payload["consent"], categories=["insurance", "library"]))
    altered = ".".join([header, _b64(json.dumps(widened).encode()), signature])
    flipped = ".".join([header, body, ("A" if signature[0] != "A" else "B") + signature[1:]])
    for bad in (altered, flipped):
        forged = jws.JWS()
        forged.deserialize(bad)
        with pytest.raises(jws.InvalidJWSSignature):
            forged.verify(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_grants_that_break_the_rules_are_refused(
    channel: Channel, population: Population
) -> None:
    person = _insured_employee(population)
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        bundled = await _refused(
            grant_consent(
                app,
                person.id_number,
                TO_HOSPITAL,
                categories=(
                    consent_pb2.DATA_CATEGORY_HEALTH_LAB,
                    consent_pb2.DATA_CATEGORY_INSURANCE,
                ),
            )
        )
        too_long = await _refused(
            grant_consent(app, person.id_number, TO_HOSPITAL, valid_for=dt.timedelta(days=367))
        )
        no_purpose = await _refused(grant_consent(app, person.id_number, TO_HOSPITAL, purposes=()))
        bad_district = await _refused(
            grant_consent(
                app,
                person.id_number,
                consent_pb2.Grantee(
                    org_type_in_district=consent_pb2.OrgTypeInDistrict(
                        org_type="hospital", district="1101"
                    )
                ),
            )
        )
        by_hospital = await _refused(grant_consent(hosp, person.id_number, TO_HOSPITAL))
        health_alone = await grant_consent(
            app,
            person.id_number,
            TO_HOSPITAL,
            categories=(consent_pb2.DATA_CATEGORY_HEALTH_LAB,),
            purposes=(common_pb2.PURPOSE_TREAT,),
        )
        listed = await list_consents(app, person.id_number)

    for refused in (bundled, too_long, no_purpose, bad_district):
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "PIPL art. 29" in (bundled.details() or "")
    assert by_hospital.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(by_hospital) == "citizen_app_only"
    assert [c.consent_id for c in listed.consents] == [health_alone.consent.consent_id]


async def test_emergency_access_by_a_hospital_with_a_reason(
    gateway: Gateway,
    channel: Channel,
    population: Population,
    tmp_path: Path,
    database_urls: dict[Path, str],
) -> None:
    person = _insured_employee(population)
    why = "Unconscious patient brought in by ambulance, needs surgery now"
    async with channel(HOSPITAL) as hosp, channel(LIBRARY) as lib:
        read = await insurance_on(
            hosp,
            person.id_number,
            emergency_basis(common_pb2.EMERGENCY_REASON_PATIENT_INCAPACITATED, why),
            common_pb2.PURPOSE_ETREAT,
        )
        refusals = {
            "no reason": await _refused(
                insurance_on(
                    hosp,
                    person.id_number,
                    emergency_basis(common_pb2.EMERGENCY_REASON_UNSPECIFIED, why),
                    common_pb2.PURPOSE_ETREAT,
                )
            ),
            "no justification": await _refused(
                insurance_on(
                    hosp,
                    person.id_number,
                    emergency_basis(common_pb2.EMERGENCY_REASON_LIFE_THREATENING, "  "),
                    common_pb2.PURPOSE_ETREAT,
                )
            ),
            "library": await _refused(
                insurance_on(
                    lib,
                    person.id_number,
                    emergency_basis(common_pb2.EMERGENCY_REASON_LIFE_THREATENING, why),
                    common_pb2.PURPOSE_ETREAT,
                )
            ),
            "not ETREAT": await _refused(
                insurance_on(
                    hosp,
                    person.id_number,
                    emergency_basis(common_pb2.EMERGENCY_REASON_LIFE_THREATENING, why),
                    common_pb2.PURPOSE_COVERAGE,
                )
            ),
        }

    assert list(read.decision.policy_ids) == ["hospital-reads-insurance-status-in-emergency"]
    assert all(s.balance == "" and s.start_date == "" for s in read.schemes)
    assert {k: (e.code(), reason(e)) for k, e in refusals.items()} == {
        "no reason": (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        "no justification": (grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        "library": (grpc.StatusCode.PERMISSION_DENIED, "emergency_not_hospital"),
        "not ETREAT": (grpc.StatusCode.PERMISSION_DENIED, "emergency_wrong_purpose"),
    }
    records = await _records(gateway)
    (entry,) = [r for r in records if r["outcome"] == "OK"]
    assert entry["emergency"] is True and entry["basis"] == "emergency"
    assert entry["basis_ref"].startswith("emergency:PATIENT_INCAPACITATED:")
    assert len(entry["basis_ref"].rsplit(":", 1)[1]) == 16
    assert all(why not in json.dumps(r) for r in records)
    kept = query(
        tmp_path / "data",
        database_urls,
        "SELECT reason, justification FROM emergency_justifications WHERE request_id = ?",
        (entry["request_id"],),
    )
    assert kept == [("PATIENT_INCAPACITATED", why)]


async def test_a_grant_or_revocation_that_cannot_be_audited_is_not_recorded(
    channel: Channel, population: Population, tmp_path: Path, database_urls: dict[Path, str]
) -> None:
    person = _insured_employee(population)
    async with channel(CITIZEN_APP) as app:
        kept = (await grant_consent(app, person.id_number, TO_HOSPITAL)).consent.consent_id
        with refusing_audit_appends(tmp_path / "data", database_urls):
            lost_grant = await _refused(grant_consent(app, person.id_number, TO_HOSPITAL))
            lost_revocation = await _refused(revoke_consent(app, person.id_number, kept))
        listed = await list_consents(app, person.id_number)

    for refused in (lost_grant, lost_revocation):
        assert (refused.code(), reason(refused)) == (
            grpc.StatusCode.UNAVAILABLE,
            "store_unavailable",
        )
    (only,) = listed.consents  # the grant whose entry failed was not recorded either
    assert (only.consent_id, only.status) == (kept, consent_pb2.CONSENT_STATUS_ACTIVE)
