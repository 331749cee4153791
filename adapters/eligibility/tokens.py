"""The Cal-ITP Eligibility Verification API's tokens: a signed JWT inside an encrypted JWT.

A request is a JWT whose claims are ``jti`` (a fresh UUID), ``iss`` (the gateway), ``iat``,
``agency`` (the transit operator asking), ``eligibility`` (the types asked about), ``sub`` (the
person's identifier) and ``name``; signed (JWS, ``typ`` "JWS") with the gateway's key, then
encrypted (JWE, ``typ`` "JWE") to the eligibility server's key. An answer is the same wrapping
the other way, with claims ``jti`` (the request's), ``iss``, ``iat`` and either ``eligibility``
(the subset of the asked types the person qualifies for) or ``error``. Algorithms are the
``Profile``'s, per eligibility server; only those are accepted on an answer.

``open_answer`` refuses an answer unless every check passes, in this order, naming the first
that failed (``AnswerRefused.check``) for the adapter's log:

======================  ==================  =============================================
check                   failure             what
======================  ==================  =============================================
``not_jwe``             ``MALFORMED``       not a compact JWE of the profile's algorithms
``undecryptable``       ``MALFORMED``       not encrypted to the gateway's key
``bad_signature``       ``UNVERIFIED``      not signed by the eligibility server's key
``bad_claims``          ``MALFORMED``       claims not a JSON object of the right types
``wrong_jti``           ``UNVERIFIED``      answers another request
``wrong_issuer``        ``UNVERIFIED``      ``iss`` is not the configured server's
``stale``               ``UNVERIFIED``      ``iat`` older than ``max_age_s`` (+ skew), or
                                            in the future beyond the skew, or ``exp`` passed
``unasked_type``        ``MALFORMED``       ``eligibility`` names a type not asked about
======================  ==================  =============================================
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from jwcrypto import common, jwe, jws, jwt

from adapters.eligibility.keys import PartyKeys
from adapters.errors import Failure

__all__ = [
    "CEK_ENCRYPTIONS",
    "KEY_ENCRYPTIONS",
    "SIGNING_ALGORITHMS",
    "Answer",
    "AnswerRefused",
    "Profile",
    "Request",
    "open_answer",
    "request",
    "seal",
    "unseal",
]

SIGNING_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
KEY_ENCRYPTIONS = frozenset({"RSA-OAEP", "RSA-OAEP-256"})
CEK_ENCRYPTIONS = frozenset(
    {"A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512", "A128GCM", "A192GCM", "A256GCM"}
)


@dataclass(frozen=True, slots=True)
class Profile:
    """How one eligibility server is spoken to: algorithms, names and time bounds."""

    jws_alg: str = "RS256"
    jwe_alg: str = "RSA-OAEP"
    jwe_enc: str = "A256CBC-HS512"
    issuer: str = "onecard-gateway"  # our ``iss`` on requests
    server_issuer: str = ""  # the ``iss`` an answer must carry; "" accepts any
    max_age_s: float = 300.0  # how old an answer's ``iat`` may be
    clock_skew_s: float = 60.0  # how far the two clocks may disagree, either way

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.jws_alg, SIGNING_ALGORITHMS, "jws_alg"),
            (self.jwe_alg, KEY_ENCRYPTIONS, "jwe_alg"),
            (self.jwe_enc, CEK_ENCRYPTIONS, "jwe_enc"),
        ):
            if value not in allowed:
                raise ValueError(f"{what} {value!r} is not one of {', '.join(sorted(allowed))}")
        if not 0 < self.max_age_s <= 3600 or not 0 <= self.clock_skew_s <= 600:
            raise ValueError("max_age_s must be in (0, 3600] and clock_skew_s in [0, 600]")


@dataclass(frozen=True, slots=True)
class Request:
    """One sealed request: the token to send and the ``jti`` its answer must carry."""

    token: str
    jti: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A verified answer: the types the person qualifies for, or the server's error."""

    eligibility: frozenset[str]
    error: bool
    issued_at: dt.datetime
    expires_at: dt.datetime | None


class AnswerRefused(Exception):
    """An answer failed a check; ``check`` names which, ``failure`` how to report it."""

    def __init__(self, check: str, failure: Failure) -> None:
        super().__init__(check)
        self.check = check
        self.failure = failure


def seal(claims: dict[str, Any], keys: PartyKeys, profile: Profile) -> str:
    """``claims`` signed with ``keys.own`` and encrypted to ``keys.peer``: compact JWE."""
    signed = jwt.JWT(header={"typ": "JWS", "alg": profile.jws_alg}, claims=claims)
    signed.make_signed_token(keys.own)
    encrypted = jwt.JWT(
        header={"typ": "JWE", "alg": profile.jwe_alg, "enc": profile.jwe_enc},
        claims=signed.serialize(),
    )
    encrypted.make_encrypted_token(keys.peer)
    token: str = encrypted.serialize()
    return token


def request(
    *,
    sub: str,
    name: str,
    types: Sequence[str],
    agency: str,
    keys: PartyKeys,
    profile: Profile,
    now: dt.datetime,
) -> Request:
    """A sealed eligibility request for ``types``, asked on behalf of ``agency``."""
    jti = str(uuid.uuid4())
    claims = {
        "jti": jti,
        "iss": profile.issuer,
        "iat": int(now.timestamp()),
        "agency": agency,
        "eligibility": list(types),
        "sub": sub,
        "name": name,
    }
    return Request(seal(claims, keys, profile), jti)


def unseal(token: str, keys: PartyKeys, profile: Profile) -> dict[str, Any]:
    """Decrypt with ``keys.own`` and verify with ``keys.peer``; the claims, or ``AnswerRefused``."""
    decrypted = jwe.JWE(algs=[profile.jwe_alg, profile.jwe_enc])
    try:
        decrypted.deserialize(token)
    except (common.JWException, ValueError, TypeError):
        raise AnswerRefused("not_jwe", Failure.MALFORMED) from None
    try:
        decrypted.decrypt(keys.own)
        inner = decrypted.payload.decode("utf-8")
    except (common.JWException, ValueError, TypeError):
        raise AnswerRefused("undecryptable", Failure.MALFORMED) from None
    signed = jws.JWS()
    try:
        signed.deserialize(inner, key=keys.peer, alg=profile.jws_alg)
    except (common.JWException, ValueError, TypeError):
        raise AnswerRefused("bad_signature", Failure.UNVERIFIED) from None
    try:
        claims = json.loads(signed.payload)
    except (ValueError, TypeError):
        raise AnswerRefused("bad_claims", Failure.MALFORMED) from None
    if not isinstance(claims, dict):
        raise AnswerRefused("bad_claims", Failure.MALFORMED)
    return claims


def open_answer(
    token: str,
    *,
    asked: Request,
    types: Sequence[str],
    keys: PartyKeys,
    profile: Profile,
    now: dt.datetime,
) -> Answer:
    """The verified answer to ``asked``; ``AnswerRefused`` on the first check that fails."""
    claims = unseal(token, keys, profile)
    jti, iss, iat = claims.get("jti"), claims.get("iss"), claims.get("iat")
    eligibility, error, exp = claims.get("eligibility"), claims.get("error"), claims.get("exp")
    if not isinstance(jti, str) or not _is_time(iat) or not (exp is None or _is_time(exp)):
        raise AnswerRefused("bad_claims", Failure.MALFORMED)
    issued_at = dt.datetime.fromtimestamp(iat, dt.UTC)
    expires_at = dt.datetime.fromtimestamp(exp, dt.UTC) if _is_time(exp) else None
    if error is None and not _is_strings(eligibility):
        raise AnswerRefused("bad_claims", Failure.MALFORMED)
    if jti != asked.jti:
        raise AnswerRefused("wrong_jti", Failure.UNVERIFIED)
    if profile.server_issuer and iss != profile.server_issuer:
        raise AnswerRefused("wrong_issuer", Failure.UNVERIFIED)
    skew, age = dt.timedelta(seconds=profile.clock_skew_s), dt.timedelta(seconds=profile.max_age_s)
    if not now - age - skew <= issued_at <= now + skew or (
        expires_at is not None and expires_at <= now - skew
    ):
        raise AnswerRefused("stale", Failure.UNVERIFIED)
    found = frozenset(eligibility or ())
    if not found <= frozenset(types):
        raise AnswerRefused("unasked_type", Failure.MALFORMED)
    return Answer(found, error is not None, issued_at, expires_at)


# 10000-01-01T00:00:00Z: a time after it is no ``datetime`` (``fromtimestamp`` raises).
_END_OF_TIME = 253_402_300_800


def _is_time(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < _END_OF_TIME
    )


def _is_strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
