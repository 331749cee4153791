"""Standing consents: what a citizen granted, the rules of a grant, and a consent's status.

A consent names the citizen (only as pseudonyms: the card holder's audit pseudonym, and a keyed
binding of the card number so that a request's card is checked before the card registry is
asked), the grantee (one organisation, or every organisation of one type in one district), the
data categories and purposes, a bounded validity period and optionally a number of uses.

The rules of a grant are here (``check_grant``): health categories only in a consent of their
own (PIPL art. 29), no "all data", at least one purpose, at most 366 days. The status is never
stored: it is derived when the consent is read (``Consent.status``), so a revoked, expired or
used-up consent is seen as such by the very next request. The store (``ConsentStore``) holds
them; ``gateway.consent_basis`` checks a request against one.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import InvalidRequest
from gateway.orgs import Org, OrgType

__all__ = [
    "CATEGORIES",
    "GRANTEE_TYPES",
    "HEALTH_CATEGORIES",
    "MAX_VALIDITY",
    "Consent",
    "ConsentStatus",
    "ConsentStore",
    "Grant",
    "Grantee",
    "Justification",
    "Kept",
    "check_grant",
    "new_consent_id",
]

HEALTH_CATEGORIES = frozenset({"health.lab", "health.imaging", "health.documents"})
CATEGORIES = frozenset({"insurance", "library", "transit"}) | HEALTH_CATEGORIES
GRANTEE_TYPES = frozenset({OrgType.HOSPITAL, OrgType.LIBRARY, OrgType.TRANSIT})
"""Who can be granted a consent: organisations that read citizens' data (not regulators, who
read the log, nor the citizen app, which acts for the citizen themself)."""
MAX_VALIDITY = dt.timedelta(days=366)
MAX_USES = 1_000_000
_ID_PREFIX = "cns_"
_ID_BYTES = 15  # 120 random bits: 24 base32 characters, no padding
_DISTRICT = re.compile(r"[0-9]{6}")
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class ConsentStatus(enum.Enum):
    """Where a consent is in its life (derived when it is read, never stored)."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Grantee:
    """One organisation (``org_id``), or every organisation of ``org_type`` in ``district``."""

    org_id: str = ""
    org_type: str = ""
    district: str = ""

    def admits(self, org: Org) -> bool:
        """Whether ``org`` is this grantee (or one of the organisations it names)."""
        if self.org_id:
            return org.org_id == self.org_id
        return org.org_type.value == self.org_type and org.district == self.district

    def __str__(self) -> str:
        return self.org_id or f"{self.org_type} in {self.district}"


@dataclass(frozen=True, slots=True)
class Consent:
    """One consent as stored. Times are aware UTC datetimes."""

    consent_id: str
    subject: str  # the card holder's audit pseudonym (HMAC of the holder id)
    card_binding: str  # keyed hash of the card number: the request's card, checked before lookup
    grantee: Grantee
    categories: tuple[str, ...]
    purposes: tuple[str, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime
    max_uses: int  # 0: no limit within the validity period
    uses: int
    granted_at: dt.datetime
    revoked_at: dt.datetime | None = None

    def status(self, now: dt.datetime) -> ConsentStatus:
        """The status at ``now``: revoked, else expired, else exhausted, else active."""
        if self.revoked_at is not None:
            return ConsentStatus.REVOKED
        if now >= self.valid_until:
            return ConsentStatus.EXPIRED
        if self.max_uses and self.uses >= self.max_uses:
            return ConsentStatus.EXHAUSTED
        return ConsentStatus.ACTIVE

    @property
    def reference(self) -> str:
        """How the audit log names it (``basis_ref``)."""
        return f"consent:{self.consent_id}"


@dataclass(frozen=True, slots=True)
class Justification:
    """An emergency access's justification, as kept (the text beside it, by request id)."""

    request_id: str
    org: str
    reason: str  # the reason code, e.g. LIFE_THREATENING
    digest: str  # the first 16 hex digits of SHA-256(text), as the audit entry names it
    at: dt.datetime


Kept = dict[tuple[str, str], str]
"""Emergency justifications as kept: (request id, digest) -> text. The digest is part of the key
because a caller may reuse a request id: each access keeps the text its audit entry names."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a citizen asks to grant (before it has an id)."""

    grantee: Grantee
    categories: tuple[str, ...]
    purposes: tuple[str, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime
    max_uses: int


class ConsentStore(Protocol):
    """Where consents live (the gateway's store; SQLite: ``gateway.store.sqlite_consents``).

    Uses are not counted here: the audit log takes a use in the transaction of the entry that
    releases data (``gateway.audit.log.ConsentSpend``), as it records grants and revocations.
    Every read goes to the store: nothing is cached, so a revocation holds for the very next
    request.
    """

    async def add(self, consent: Consent) -> None:
        """Durably record a consent outside an exchange (tests, administration); a citizen's
        grant is written with its audit entry instead (``gateway.audit.log.ConsentGrant``)."""
        ...

    async def get(self, consent_id: str) -> Consent | None:
        """The consent with this id, as stored now, or None."""
        ...

    async def of_subject(self, subject: str) -> list[Consent]:
        """Every consent of the card holder ``subject``, newest first."""
        ...

    async def revoke(self, consent_id: str, subject: str, at: dt.datetime) -> Consent | None:
        """Revoke the holder's consent at ``at`` if it is not revoked yet, outside an exchange
        (a citizen's revocation is written with its audit entry: ``ConsentRevocation``); the
        consent as it is now, or None if the holder has none with this id."""
        ...

    async def keep_justification(self, about: Justification, text: str) -> None:
        """Durably keep an emergency access's justification ``text``, for the regulator, under
        its request id and digest (never replacing one kept before)."""
        ...

    async def justifications(self, since: dt.datetime, until: dt.datetime) -> Kept:
        """(request id, digest) -> justification of the emergency accesses kept in
        [since, until)."""
        ...


def new_consent_id() -> str:
    """``cns_`` and 24 base32 characters (120 random bits), lower case."""
    raw = base64.b32encode(secrets.token_bytes(_ID_BYTES)).decode("ascii")
    return _ID_PREFIX + raw.lower()


def check_grantee(grantee: Grantee) -> None:
    """Refuse a grantee that is not one well-formed organisation id or type-in-district."""
    if grantee.org_id:
        if not _ORG_ID.fullmatch(grantee.org_id):
            raise InvalidRequest(
                "grantee.org_id must be an organisation id as in its certificate, e.g. "
                "hosp-bj-002 (lower-case letters, digits and hyphens)"
            )
        return
    known = sorted(t.value for t in GRANTEE_TYPES)
    if grantee.org_type not in known:
        raise InvalidRequest(
            f"grantee.org_type_in_district.org_type must be one of {', '.join(known)}"
        )
    if not _DISTRICT.fullmatch(grantee.district):
        raise InvalidRequest(
            "grantee.org_type_in_district.district must be a 6-digit division code, e.g. 110105"
        )


def check_categories(categories: Collection[str]) -> None:
    """At least one category; a health category only alone (PIPL art. 29); no "all data"."""
    if not categories:
        raise InvalidRequest("categories: name at least one data category, e.g. insurance")
    if len(set(categories)) != len(categories):
        raise InvalidRequest("categories: each data category at most once")
    health = HEALTH_CATEGORIES.intersection(categories)
    if health and len(categories) > 1:
        raise InvalidRequest(
            f"categories: {', '.join(sorted(health))} is health data and is granted only in a "
            f"consent of its own (PIPL art. 29); grant the other categories separately"
        )
    if set(categories) >= CATEGORIES - HEALTH_CATEGORIES:
        raise InvalidRequest(
            "categories: a consent may not cover every kind of data at once; name only the "
            "categories this grantee needs"
        )


def check_grant(grant: Grant) -> None:
    """Refuse (``InvalidRequest``) a grant that breaks a rule; the message says which."""
    check_grantee(grant.grantee)
    check_categories(grant.categories)
    purposes, valid_from, valid_until = grant.purposes, grant.valid_from, grant.valid_until
    if not purposes:
        raise InvalidRequest("purposes: name at least one purpose, e.g. PURPOSE_COVERAGE")
    if len(set(purposes)) != len(purposes):
        raise InvalidRequest("purposes: each purpose at most once")
    if valid_until <= valid_from:
        raise InvalidRequest("valid_until must be after valid_from")
    if valid_until - valid_from > MAX_VALIDITY:
        raise InvalidRequest(
            f"valid_until is at most {MAX_VALIDITY.days} days after valid_from; grant again "
            f"when it ends"
        )
    if grant.max_uses > MAX_USES:
        raise InvalidRequest(f"max_uses is at most {MAX_USES:,} (0: no limit)")
