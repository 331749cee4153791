"""The consent artefact: a consent signed as a compact JWS anyone can check, and as FHIR.

The gateway signs each consent it records as a compact JWS (RFC 7515) with EdDSA (Ed25519,
RFC 8037), so that the citizen app or a grantee can check it with the published key set
(JWKS, ``onecard consent keys``) without asking us. The private key stays behind a
``gateway.audit.signer.Signer`` (a key file now, an HSM later): this module builds the signing
input with jwcrypto's encoders and has the signer sign it; verification (``verify_artefact``)
is jwcrypto's, from the key set alone.

Payload (JSON): ``jti`` (the consent id), ``iss`` (the log's origin), ``sub`` (a pseudonym of
the card holder for this consent only: HMAC-SHA256 keyed with the holder's audit pseudonym over
the consent id, so artefacts of one citizen cannot be linked by their subject), ``iat``,
``nbf``/``exp`` (the validity period, unix seconds), and ``consent``: the grantee, categories
("insurance", "health.lab", ...), purposes ("COVERAGE", ...) and ``max_uses``. The header
carries ``kid``, the key's RFC 7638 thumbprint.

``fhir_consent`` renders a consent as an HL7 FHIR R4 ``Consent`` resource for hospitals'
systems.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import base64url_encode, json_encode

from gateway.audit.signer import Signer
from gateway.consents import Consent, ConsentStatus

__all__ = ["ArtefactError", "ArtefactSigner", "fhir_consent", "verify_artefact"]

ALG = "EdDSA"
TYP = "onecard-consent+jws"


class ArtefactError(Exception):
    """An artefact does not verify with the key set (forged, altered, or another key's)."""


class ArtefactSigner:
    """Signs consent artefacts with one Ed25519 ``Signer``; publishes its public key set."""

    def __init__(self, signer: Signer, issuer: str) -> None:
        self._signer = signer
        self.issuer = issuer
        self._public = jwk.JWK(
            kty="OKP",
            crv="Ed25519",
            x=base64url_encode(signer.public_key_bytes()),
            use="sig",
            alg=ALG,
        )
        self.kid = str(self._public.thumbprint())

    def jwks(self) -> dict[str, Any]:
        """The public key set (RFC 7517), as JSON-ready data."""
        key = json.loads(self._public.export_public())
        key["kid"] = self.kid
        return {"keys": [key]}

    def sign(self, consent: Consent, issued_at: dt.datetime) -> str:
        """The consent's compact JWS."""
        header = {"alg": ALG, "kid": self.kid, "typ": TYP}
        payload = artefact_payload(consent, self.issuer, issued_at)
        signing_input = (
            f"{base64url_encode(json_encode(header))}.{base64url_encode(json_encode(payload))}"
        )
        signature = self._signer.sign(signing_input.encode("ascii"))
        return f"{signing_input}.{base64url_encode(signature)}"


def artefact_payload(consent: Consent, issuer: str, issued_at: dt.datetime) -> dict[str, Any]:
    """The artefact's claims (see the module docstring)."""
    g = consent.grantee
    grantee: dict[str, str] = (
        {"org_id": g.org_id} if g.org_id else {"org_type": g.org_type, "district": g.district}
    )
    return {
        "jti": consent.consent_id,
        "iss": issuer,
        "sub": pairwise_subject(consent.subject, consent.consent_id),
        "iat": int(issued_at.timestamp()),
        "nbf": int(consent.valid_from.timestamp()),
        "exp": int(consent.valid_until.timestamp()),
        "consent": {
            "grantee": grantee,
            "categories": list(consent.categories),
            "purposes": list(consent.purposes),
            "max_uses": consent.max_uses,
        },
    }


def pairwise_subject(subject: str, consent_id: str) -> str:
    """The card holder's pseudonym for one consent (unlinkable across consents)."""
    return hmac.new(subject.encode(), consent_id.encode(), hashlib.sha256).hexdigest()


def verify_artefact(artefact: str, key_set: dict[str, Any] | str) -> dict[str, Any]:
    """The payload of ``artefact`` if it verifies with a key of ``key_set`` (JWKS), else
    ``ArtefactError``. Uses only jwcrypto and the published key set."""
    keys = jwk.JWKSet.from_json(key_set if isinstance(key_set, str) else json.dumps(key_set))
    token = jws.JWS()
    try:
        token.deserialize(artefact)
        kid = token.jose_header.get("kid")
        key = keys.get_key(kid) if kid else None
        if key is None:
            raise ArtefactError(f"no key {kid!r} in the key set")
        token.verify(key, alg=ALG)
    except (jws.InvalidJWSObject, jws.InvalidJWSSignature, ValueError) as exc:
        raise ArtefactError(f"the artefact does not verify: {exc}") from None
    payload: dict[str, Any] = json.loads(token.payload)
    return payload


_FHIR_STATE = {
    ConsentStatus.ACTIVE: "active",
    ConsentStatus.REVOKED: "inactive",
    ConsentStatus.EXPIRED: "inactive",
    ConsentStatus.EXHAUSTED: "inactive",
}
_PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_CATEGORY_SYSTEM = "urn:onecard:data-category"


def fhir_consent(consent: Consent, issuer: str, now: dt.datetime) -> dict[str, Any]:
    """The consent as an HL7 FHIR R4 ``Consent`` resource (JSON-ready data).

    The patient is named by the consent's pairwise pseudonym, never by a card or ID number.
    """
    g = consent.grantee
    actor = (
        {"reference": {"identifier": {"system": "urn:onecard:org", "value": g.org_id}}}
        if g.org_id
        else {"reference": {"display": f"every {g.org_type} in district {g.district}"}}
    )
    return {
        "resourceType": "Consent",
        "id": consent.consent_id.replace("_", "-"),
        "identifier": [{"system": f"urn:onecard:consent:{issuer}", "value": consent.consent_id}],
        "status": _FHIR_STATE[consent.status(now)],
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {
            "identifier": {
                "system": "urn:onecard:consent-subject",
                "value": pairwise_subject(consent.subject, consent.consent_id),
            }
        },
        "dateTime": _instant(consent.granted_at),
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {
                "start": _instant(consent.valid_from),
                "end": _instant(consent.revoked_at or consent.valid_until),
            },
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                                "code": "PROV",
                            }
                        ]
                    },
                    **actor,
                }
            ],
            "action": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                            "code": "access",
                        }
                    ]
                }
            ],
            "purpose": [{"system": _PURPOSE_SYSTEM, "code": p} for p in consent.purposes],
            "class": [{"system": _CATEGORY_SYSTEM, "code": c} for c in consent.categories],
        },
    }


def _instant(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
