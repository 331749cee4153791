"""The audit log port: what the gateway needs from a durable, verifiable log.

Implementations (SQLite now, PostgreSQL later) sequence entries in one order, persist every
complete Merkle node with its entry in the same transaction, sign checkpoints, and serve proofs
from stored nodes in O(log n) reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gateway.audit.record import AuditRecord
from gateway.consents import Consent


class Receipt(NamedTuple):
    """Where an exchange landed in the log (a tuple: one is built per append)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index: the name the API uses
    leaf_hash: bytes
    origin: str
    appended_at: dt.datetime
    replayed: bool = False  # the entry is the ``Redemption.instead`` record: nothing released
    refusal: str = ""  # when replayed: why (the instead record's reason, e.g. "token_replayed")


@dataclass(frozen=True, slots=True)
class TokenSpend:
    """A card-present token, used up once: by the first exchange that releases data on it."""

    token_id: bytes
    expires_at: int  # unix seconds; the ledger may forget the token after this


@dataclass(frozen=True, slots=True)
class ConsentSpend:
    """One use of a standing consent, taken only while it is unrevoked, valid at ``at`` and
    has a use left (its ``max_uses``, 0 for no limit)."""

    consent_id: str
    at_us: int  # the exchange's time, unix microseconds: the consent must be valid then


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """A consent the exchange records: stored with the grant's audit entry, or not at all."""

    consent: Consent


@dataclass(frozen=True, slots=True)
class ConsentRevocation:
    """A revocation the exchange records, with its audit entry (a no-op if already revoked)."""

    consent_id: str
    subject: str
    at_us: int


Spend = TokenSpend | ConsentSpend | ConsentGrant | ConsentRevocation
"""What an answer uses up or changes, in the transaction of its audit entry: nothing of it is
durable unless the entry is, and the entry is refused instead if it cannot be done."""

SPEND_REFUSALS = (
    "token_replayed",
    "consent_revoked",
    "consent_expired",
    "consent_exhausted",
    "consent_conflict",
)
"""The reasons a spend can fail with in the batch (``LogRows.redeem``'s answers)."""


@dataclass(frozen=True, slots=True)
class Redemption:
    """What the exchange uses up (``spend``), in the same transaction as its entry.

    If the spend fails there (a token redeemed by another exchange first; a consent revoked,
    expired or out of uses meanwhile), the log stores ``instead`` (the same exchange recorded
    as refused, with the failure as its reason) and the receipt says ``replayed`` and names the
    ``refusal``: at most one exchange per token, and at most ``max_uses`` per consent, ever
    release data, across concurrent requests and processes sharing the store.
    """

    spend: Spend
    instead: AuditRecord


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored entry: its index and leaf bytes."""

    index: int
    leaf: bytes


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Filters for ``AuditLog.search``; empty fields do not filter."""

    since: str = ""
    until: str = ""
    org: str = ""
    rpc: str = ""
    decision: str = ""
    basis: str = ""
    subject: str = ""
    after_index: int = -1
    limit: int = 100


class AuditLog(Protocol):
    """A durable, signed, append-only transparency log of exchanges."""

    origin: str

    async def append(self, record: AuditRecord, redemption: Redemption | None = None) -> Receipt:
        """Sequence and durably store the record (redeeming the token, if any); its receipt."""
        ...

    async def latest_checkpoint(self) -> bytes | None:
        """The newest signed checkpoint note, or None before the first one."""
        ...

    async def checkpoints(self) -> Sequence[tuple[int, bytes]]:
        """Every signed checkpoint as (size, note), oldest first."""
        ...

    async def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """The leaf hash at ``index`` and its inclusion proof in the tree of ``size``."""
        ...

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The consistency proof between two tree sizes."""
        ...

    async def entries(self, start: int, end: int) -> list[Entry]:
        """Entries with start <= index < end (end clipped to the log's size)."""
        ...

    async def search(self, query: SearchQuery) -> list[Entry]:
        """Entries matching every non-empty filter, in index order."""
        ...

    async def follow(self, index: int, limit: int) -> list[Entry]:
        """Entry ``index`` and the entries its back-links lead to, newest first: at most
        ``limit``, fewer where a chain ends (a null link). Raises ``OutOfRangeError`` for an
        index past the log."""
        ...

    async def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        """The inclusion proof of each of ``indexes`` in the tree of ``size``, in one read."""
        ...

    async def checkpoint_of(self, size: int) -> bytes | None:
        """The signed checkpoint note of exactly ``size`` entries, or None if none was signed."""
        ...

    async def signed_checkpoint(self, covering: int) -> tuple[int, bytes]:
        """A signed checkpoint (size, note) of at least ``covering`` entries: the newest if it
        does, else one signed now (requests queued together share one signature)."""
        ...

    async def size(self) -> int:
        """How many entries are durably stored."""
        ...
