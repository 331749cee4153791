"""The consent artefact (JWS, verified with the key set alone) and its FHIR R4 rendering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.consent import Consent as FhirConsent

from gateway.audit.signer import Ed25519FileSigner
from gateway.consent_artefact import ArtefactError, ArtefactSigner, fhir_consent, verify_artefact
from gateway.consents import Consent, Grantee

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
CONSENT = Consent(
    consent_id="cns_abc",
    subject="5b" * 32,
    card_binding="c1" * 32,
    grantee=Grantee(org_id="hosp-bj-002"),
    categories=("insurance",),
    purposes=("COVERAGE", "TREAT"),
    valid_from=NOW,
    valid_until=NOW + dt.timedelta(days=30),
    max_uses=3,
    uses=0,
    granted_at=NOW,
)


@pytest.fixture
def artefacts(tmp_path: Path) -> ArtefactSigner:
    return ArtefactSigner(Ed25519FileSigner.generate(tmp_path / "k", "test.local/log"), "o.test")


def test_an_artefact_verifies_with_the_key_set_and_says_what_was_granted(
    artefacts: ArtefactSigner,
) -> None:
    payload = verify_artefact(artefacts.sign(CONSENT, NOW), artefacts.jwks())
    assert payload["jti"] == "cns_abc" and payload["iss"] == "o.test"
    assert payload["consent"]["categories"] == ["insurance"]
    assert payload["sub"] not in ("5b" * 32, "c1" * 32)  # a pseudonym for this consent only
    other = dataclasses.replace(CONSENT, consent_id="cns_def")
    assert verify_artefact(artefacts.sign(other, NOW), artefacts.jwks())["sub"] != payload["sub"]


def test_an_artefact_of_another_key_or_altered_does_not_verify(
    artefacts: ArtefactSigner, tmp_path: Path
) -> None:
    stranger = ArtefactSigner(Ed25519FileSigner.generate(tmp_path / "s", "test.local/log"), "x")
    foreign = stranger.sign(CONSENT, NOW)
    with pytest.raises(ArtefactError):
        verify_artefact(foreign, artefacts.jwks())
    header, _, signature = artefacts.sign(CONSENT, NOW).split(".")
    _, body, _ = artefacts.sign(dataclasses.replace(CONSENT, max_uses=0), NOW).split(".")
    with pytest.raises(ArtefactError):
        verify_artefact(f"{header}.{body}.{signature}", artefacts.jwks())
    with pytest.raises(ArtefactError):
        verify_artefact("not.a.jws", json.dumps(artefacts.jwks()))


@pytest.mark.parametrize(
    "consent",
    [
        CONSENT,
        dataclasses.replace(
            CONSENT,
            grantee=Grantee(org_type="hospital", district="110105"),
            revoked_at=NOW + dt.timedelta(days=1),
        ),
    ],
)
def test_a_consent_renders_as_a_valid_fhir_r4_consent(consent: Consent) -> None:
    resource = fhir_consent(consent, "o.test", NOW + dt.timedelta(days=2))
    parsed = FhirConsent.model_validate(resource)
    assert parsed.status == ("inactive" if consent.revoked_at else "active")
    assert parsed.provision is not None and parsed.provision.type == "permit"
    assert [p.code for p in parsed.provision.purpose or []] == ["COVERAGE", "TREAT"]
    assert "5b" * 32 not in json.dumps(resource)
