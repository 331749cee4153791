"""Ports: the abstract interfaces the request pipeline needs from back ends, and how one plugs in.

Each back-end kind is a port here (a ``Protocol`` and its ``PortKey``) and one adapter package per
protocol under ``adapters/``. Values that cross the boundary are frozen dataclasses; adapters
validate the back end's payload (pydantic, strict) before they build them. Adapters raise only
``gateway.errors`` types, through the shared table of ``adapters.errors``: ``CardNotFound``,
``BackendUnavailable``, ``BackendTimeout``.

A back end plugs in through its wiring function (a row of ``gateway.backends.BACKENDS``): given
its settings group, it starts what it needs and returns a ``WiredBackend``, the ports it
provides (``Provided``) and one closer.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar

P = TypeVar("P")


class CardStatus(enum.Enum):
    """Status of a social security card in the card registry."""

    NORMAL = "normal"
    TEMPORARILY_REPORTED_LOST = "temporarily_reported_lost"
    REPORTED_LOST = "reported_lost"
    LOCKED = "locked"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class CardHolder:
    """A card resolved through the card registry.

    ``holder_id`` is the registry's person number (``psn_no``), never the ID number itself.
    ``name`` is personal data: it may be disclosed (masked) by policy, but is never logged.
    """

    holder_id: str
    card_status: CardStatus
    name: str
    issuing_district: str


class InsuranceStatus(enum.Enum):
    """Participation status of one insurance scheme (``psn_insu_stas``)."""

    ACTIVE = "1"
    SUSPENDED = "2"
    TERMINATED = "4"


@dataclass(frozen=True, slots=True)
class InsuranceScheme:
    """One entry of ``insuinfo[]``: the person's participation in one scheme."""

    insutype: str
    status: InsuranceStatus
    start_date: dt.date | None
    pause_date: dt.date | None
    insured_district: str
    employer_name: str | None
    balance: Decimal | None


@dataclass(frozen=True, slots=True)
class PersonInsurance:
    """The insurance part of a "1101 person info" answer."""

    holder_id: str
    schemes: tuple[InsuranceScheme, ...]


class CardRegistry(Protocol):
    """Resolves an ID number to its card holder and card status (held by the card issuer)."""

    async def resolve(self, id_number: str, *, timeout: float) -> CardHolder:
        """Return the holder; raise ``CardNotFound``, ``BackendUnavailable``, ``BackendTimeout``."""
        ...


class InsuranceBackend(Protocol):
    """The social insurance back end ("1101 person info")."""

    async def person_insurance(self, id_number: str, *, timeout: float) -> PersonInsurance:
        """The schemes; raises ``CardNotFound``, ``BackendUnavailable``, ``BackendTimeout``."""
        ...


class PatronBlock(enum.Enum):
    """One position of SIP2's 14-character patron status: a privilege denied or a limit hit."""

    CHARGE_PRIVILEGES_DENIED = 0
    RENEWAL_PRIVILEGES_DENIED = 1
    RECALL_PRIVILEGES_DENIED = 2
    HOLD_PRIVILEGES_DENIED = 3
    CARD_REPORTED_LOST = 4
    TOO_MANY_ITEMS_CHARGED = 5
    TOO_MANY_ITEMS_OVERDUE = 6
    TOO_MANY_RENEWALS = 7
    TOO_MANY_CLAIMS_OF_ITEMS_RETURNED = 8
    TOO_MANY_ITEMS_LOST = 9
    EXCESSIVE_OUTSTANDING_FINES = 10
    EXCESSIVE_OUTSTANDING_FEES = 11
    RECALL_OVERDUE = 12
    TOO_MANY_ITEMS_BILLED = 13


@dataclass(frozen=True, slots=True)
class PatronStanding:
    """A reader's standing at one library of the network, as its system told it over SIP2.

    ``known`` False: the library has no such patron (every other field is empty). Counts are
    None when the library did not send them (an answer to patron status, 24, has none).
    ``name`` is personal data: disclosed masked at most, never logged.
    """

    library_id: str
    known: bool
    valid: bool
    blocks: frozenset[PatronBlock]
    holds: int | None
    overdue: int | None
    charged: int | None
    fine_items: int | None
    fee_amount: Decimal | None
    currency: str
    name: str


class LibraryBackend(Protocol):
    """The libraries of the network, each reached over SIP2 (patron information, 63/64)."""

    def knows(self, library_id: str) -> bool:
        """Whether ``library_id`` is a library of the network this back end reaches."""
        ...

    def holder_org(self, library_id: str) -> str | None:
        """The org id (orgs.toml) of the library that keeps ``library_id``'s records, if any."""
        ...

    async def patron_standing(
        self, library_id: str, card_number: str, *, timeout: float
    ) -> PatronStanding:
        """The standing; raises ``BackendUnavailable`` or ``BackendTimeout``."""
        ...


class HealthCategory(enum.Enum):
    """A category of health records; the values are the consent categories (``Ask.category``)."""

    LAB = "health.lab"
    IMAGING = "health.imaging"
    DOCUMENTS = "health.documents"


@dataclass(frozen=True, slots=True)
class HealthRecordSummary:
    """One health record without its clinical content.

    ``record_id`` is ``SOURCE/ResourceType/id``: the configured source it was read from and the
    resource's id on that server (what ``HealthRecords.record`` takes back).
    """

    record_id: str
    kind: str
    date: str
    title: str
    performer: str
    status: str
    source: str


@dataclass(frozen=True, slots=True)
class HealthRecordList:
    """The records of one category across the sources, newest first, de-duplicated.

    ``unavailable`` names the sources that failed (a partial answer); empty when all answered.
    """

    records: tuple[HealthRecordSummary, ...]
    unavailable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """One record: its summary and the validated FHIR resources (the record first)."""

    summary: HealthRecordSummary
    resources: tuple[dict[str, Any], ...]


class HealthRecords(Protocol):
    """Health records over HL7 FHIR R4, from one or more sources."""

    async def records(
        self,
        id_number: str,
        category: HealthCategory,
        *,
        since: dt.date | None,
        until: dt.date | None,
        timeout: float,
    ) -> HealthRecordList:
        """Summaries; raises ``CardNotFound``, ``BackendUnavailable``, ``BackendTimeout``."""
        ...

    async def record(
        self, id_number: str, category: HealthCategory, record_id: str, *, timeout: float
    ) -> HealthRecord:
        """One record of this patient in ``category``; raises as ``records``, and
        ``RecordNotFound`` for an id that names no such record of the patient."""
        ...


class Concession(enum.Enum):
    """A fare concession, named as its eligibility type on the Cal-ITP wire."""

    SENIOR = "senior"
    DISABLED = "disabled"
    STUDENT = "student"


@dataclass(frozen=True, slots=True)
class ConcessionAnswer:
    """The eligibility server's answer: the predicate and until when it may be relied on."""

    eligible: bool
    valid_until: dt.datetime  # aware, UTC


class EligibilityBackend(Protocol):
    """The eligibility server (Cal-ITP Eligibility Verification API)."""

    async def check(
        self, id_number: str, name: str, concession: Concession, *, agency: str, timeout: float
    ) -> ConcessionAnswer:
        """Whether the person qualifies, asked for ``agency`` (the transit operator's org id);
        raises ``BackendUnavailable`` or ``BackendTimeout``."""
        ...


@dataclass(frozen=True, slots=True)
class PortKey(Generic[P]):
    """Names a port, typed by its interface: ``Ports.get(CARD_REGISTRY)`` is a ``CardRegistry``."""

    name: str


CARD_REGISTRY: PortKey[CardRegistry] = PortKey("card registry")
INSURANCE_BACKEND: PortKey[InsuranceBackend] = PortKey("insurance back end")
LIBRARY_BACKEND: PortKey[LibraryBackend] = PortKey("library back end")
HEALTH_RECORDS: PortKey[HealthRecords] = PortKey("health records")
ELIGIBILITY_BACKEND: PortKey[EligibilityBackend] = PortKey("eligibility server")


@dataclass(frozen=True, slots=True)
class Provided(Generic[P]):
    """One port a back end provides: its key and the adapter object that implements it."""

    key: PortKey[P]
    implementation: P


@dataclass(frozen=True, slots=True)
class WiredBackend:
    """What a back end's wiring function returns.

    ``provides``: the ports it implements; ``close``: stops everything the wiring started
    (clients, then the in-process reference server), called once when the gateway stops;
    ``url``: where it is reached (the reference server's address when it started one).
    """

    provides: tuple[Provided[Any], ...]
    close: Callable[[], Awaitable[None]]
    url: str
