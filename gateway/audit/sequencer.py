"""The audit log's sequencing, store-neutral: what every store does to append, byte for byte.

A store (SQLite now, PostgreSQL later) supplies rows (``LogRows``: read and write them inside
its transaction) and a ``RowAccess`` (a consistent read, a write transaction for opening, a
timer); the ``Sequencer`` owns every rule of the log and knows no SQL:

- sequencing: each batch's entries get the next indexes in queue order, their leaves chain from
  the previous leaf hash (``record.chain_leaves``), and the compact range grows over them
  (``CompactRange.push_leaves``; both in C where it is built);
- node placement: each entry is written with the hashes of the Merkle nodes it completes (level
  0, its leaf hash, first): node (level, k) belongs to entry ((k + 1) << level) - 1, so a proof
  reads its O(log n) nodes by entry index;
- back-links: each record of version 3 or later gets the index of the previous entry about
  its ``subject`` (``null`` for the first, and for records without a subject); the subject ->
  newest index map is a table written in the batch's own transaction (``LogRows.subject_heads``
  / ``set_subject_heads``), with a cache in memory that a rolled-back batch empties;
- redemption: an exchange that releases data uses up what it spends in the batch
  (``Redemption``: a card-present token, or one use of a consent); if that fails (the token
  redeemed already, the consent revoked, expired or out of uses meanwhile), ``instead`` is
  logged with the failure as its reason and the receipt says ``replayed`` and names it;
- checkpoint cadence: a checkpoint is signed at the end of a batch once the interval has passed
  since the last, or when a payload of the batch is ``SIGN_NOW`` (a reader needs a checkpoint
  that covers an entry: every such request queued together shares one signature); while
  entries are left uncovered, the store is asked for an empty batch at the end of the interval
  (``RowAccess.wake_at``), where the idle checkpoint is signed;
- identity: opening binds the log's origin and current key (recorded on the first start, after
  the self-check; refused with ``LogIdentityError`` when they differ);
- recovery: whenever the state is built from stored rows (on opening, after a rolled-back batch)
  it is self-checked first (``selfcheck``); a log whose reload failed signs nothing and fails
  every batch until a reload passes;
- hand-off: ``committed`` returns the batch's records that became durable, for the store's
  search index.

- several processes: where a store is shared (PostgreSQL), every process runs a sequencer and
  each batch transaction first claims the log (``LogRows.claim``: a lock that one transaction
  at a time holds, until it commits or rolls back), so that batches from every process are
  sequenced and integrated one after the other, as the integrator of
  transparency-dev/tessera's storage drivers integrates one batch at a time under its
  coordination row. Under the claim, the sequencer catches up with what the other processes
  appended since its own last batch (``_follow``: its compact range is extended by their
  stored nodes, checked by ``selfcheck.check_extension``, and its cache of subject heads is
  dropped), then appends as if it were alone. Each process also looks every interval for
  entries another left uncovered (one killed between its append and its checkpoint) and signs
  them. A store with one writer (SQLite) claims nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Protocol, TypeVar

import structlog

from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    OriginMismatchError,
    open_checkpoint,
    sign_checkpoint,
)
from gateway.audit.compact import CompactRange, NodeID
from gateway.audit.log import Receipt, Redemption, Spend
from gateway.audit.note import NoteError, Verifier, VerifierSet
from gateway.audit.record import NO_BACK, AuditRecord, chain_leaves, rfc3339
from gateway.audit.selfcheck import (
    LogDamagedError,
    StoredTip,
    check_extension,
    check_stored_log,
)
from gateway.audit.signer import Signer
from gateway.errors import SetupError

__all__ = [
    "SIGN_NOW",
    "LogIdentityError",
    "LogRows",
    "RowAccess",
    "Sequencer",
    "SharedHead",
    "check_identity",
    "node_row",
]

T = TypeVar("T")
_log = structlog.get_logger(__name__)
_RETRY_S = 1.0  # after a failed batch, sign the entries it left uncovered this much later at most
_WATCH_S = 0.5  # on a shared log, look for entries others left uncovered at most this often
_HEADS_CACHED = 1 << 20  # subjects whose newest entry is kept in memory (past it: start afresh)
_BACK_LINKED = 3  # the first record version that carries a back-link


SIGN_NOW = "sign-now"
"""A batch payload that asks for a checkpoint of the batch's size at its end (result: None)."""


class LogIdentityError(SetupError):
    """The configured origin or signing key is not the one this data directory's log has."""


@dataclass(frozen=True, slots=True)
class SharedHead:
    """What a log shared by several processes holds when a transaction claims it."""

    size: int  # the highest stored index + 1
    checkpointed: int  # the size of the newest signed checkpoint (0: none)
    key: str = ""  # the log's current verifier key ("": none recorded yet)


class LogRows(Protocol):
    """One log's rows, read and written inside the store's current transaction (or snapshot).

    Node hashes are stored per entry (``node_row``): entry i's ``nodes`` is the concatenation of
    the hashes of the nodes it completes, level 0 first. Reads that find a node missing, too
    short or of another type raise ``selfcheck.UnreadableNodeError``; a checkpoint note stored
    as something other than bytes raises ``selfcheck.LogDamagedError``.
    """

    def claim(self) -> SharedHead | None:
        """Make this transaction the only one appending to the log until it ends (waiting for
        another process's, if one holds it), and say what the log holds now; None where the
        store has one writer (the sequencer's state in memory is then the log's)."""
        ...

    def size(self) -> int:
        """The highest stored index + 1 (0 for an empty log)."""
        ...

    def tip(self) -> StoredTip:
        """The size, the lowest stored index and the newest entry's leaf."""
        ...

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """The stored hashes of ``ids``, in order (a ``proof.NodeReader``)."""
        ...

    def newest_checkpoint(self) -> tuple[int, bytes] | None:
        """The newest stored checkpoint as (its row's size, its signed note), or None."""
        ...

    def insert_entries(self, start: int, nodes: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        """Store entries start, start + 1, ... with their node hashes and leaves."""
        ...

    def insert_checkpoint(self, size: int, note: bytes, created_at: str) -> None:
        """Store a signed checkpoint note of ``size`` entries."""
        ...

    def redeem(self, spend: Spend) -> str:
        """Use up ``spend`` (a token: record it redeemed; a consent: take one use, if it is
        unrevoked, valid at the spend's time and has a use left); "" when it was taken, else
        why not (one of ``log.SPEND_REFUSALS``)."""
        ...

    def subject_heads(self, subjects: Sequence[str]) -> dict[str, int]:
        """The index of the newest entry about each of ``subjects`` that has one."""
        ...

    def set_subject_heads(self, heads: Sequence[tuple[str, int]]) -> None:
        """Record each (subject, index) as the newest entry about that subject."""
        ...

    def keys(self) -> list[tuple[str, str]]:
        """The log's (origin, verifier key) of every key it has had, oldest first."""
        ...

    def add_key(self, origin: str, verifier_key: str, from_size: int, added_at: str) -> None:
        """Record a key as the log's current one."""
        ...


class RowAccess(Protocol):
    """How a sequencer reaches its store outside the batches the store hands it."""

    name: str
    """Where the log lives, for messages (a path; a DSN without its password)."""

    def snapshot(self, read: Callable[[LogRows], T]) -> T:
        """Run ``read`` over one consistent snapshot of the rows."""
        ...

    def transaction(self, write: Callable[[LogRows], T]) -> T:
        """Run ``write`` in one write transaction, committed when it returns (on opening)."""
        ...

    def wake_at(self, deadline: float) -> None:
        """Hand the sequencer an empty batch at ``deadline`` (``time.monotonic()``) or soon
        after (an earlier one already asked for stands)."""
        ...


def node_row(node: NodeID) -> int:
    """The index of the entry whose row holds ``node``'s hash (the entry that completed it)."""
    return ((node.index + 1) << node.level) - 1


def check_identity(where: str | PathLike[str], signer: Signer, keys: list[tuple[str, str]]) -> None:
    """Refuse ``signer`` unless it is the current key (and origin) among the log's ``keys``."""
    origin, current = keys[-1]
    if signer.name != origin:
        raise LogIdentityError(
            f"{where}: audit_origin {signer.name!r} is not this log's origin {origin!r}; one "
            f"data directory keeps one log: set audit_origin = {origin!r} or use another data_dir"
        )
    mine = signer.verifier_key()
    if mine == current:
        return
    what = "a retired key of this log" if mine in [k for _, k in keys] else "not this log's key"
    raise LogIdentityError(
        f"{where}: the audit signing key {_key_name(mine)} is {what}; its current key is "
        f"{_key_name(current)}: restore that key file (keys/audit-log.key), or change keys "
        f"deliberately with `onecard audit rotate-key`"
    )


class Sequencer:
    """The log's in-memory state and rules (see the module docstring).

    The store calls ``open`` once, then ``start`` when it can run batches, then, on its
    writer, ``run_batch`` and ``finish_batch`` inside each transaction and ``committed`` or
    ``rolled_back`` after it. ``clock`` is
    ``time.monotonic`` unless a test drives the cadence.
    """

    def __init__(
        self,
        signer: Signer,
        access: RowAccess,
        *,
        checkpoint_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = signer.name
        self._signer = signer
        self._access = access
        self._interval = checkpoint_interval_s
        self._clock = clock
        self._verifiers = VerifierSet([Verifier.parse(signer.verifier_key())])
        self._binding = False  # while the identity is recorded, another origin is a setup error
        self.verifier_keys: list[str] = []
        self._range = CompactRange()
        self._prev = b""
        self._checkpointed = 0
        self._broken: Exception | None = None  # set when a reload failed: nothing is signed
        self._last_checkpoint = float("-inf")  # the first batch after a start is checkpointed
        self._durable: list[tuple[int, AuditRecord]] = []  # this batch's, once it commits
        self._heads: dict[str, int] = {}  # subject -> newest index: a cache of the stored map
        self._sign_now = False  # a payload of this batch asked for a checkpoint
        self._shared = False  # other processes append to this log too (``LogRows.claim``)

    @property
    def size(self) -> int:
        """Entries sequenced (durable, unless a batch is in flight)."""
        return self._range.size

    def open(self) -> None:
        """Bind the identity and load the checked state; refuses with a one-line
        ``SetupError`` (``LogIdentityError``, ``LogDamagedError``) before anything is signed.

        A log without recorded keys (a new one, or one from before keys were recorded) records
        the signer's, after the self-check (which opens the newest checkpoint with that key)."""
        self._binding = True
        try:
            keys = self._access.transaction(self._bind)
        finally:
            self._binding = False
        check_identity(self._access.name, self._signer, keys)
        self.verifier_keys = [key for _, key in keys]
        self._verifiers = VerifierSet([Verifier.parse(key) for key in self.verifier_keys])
        self._range, self._prev, self._checkpointed = self._access.snapshot(self._load)

    def start(self) -> None:
        """The store runs batches now: entries a crash left uncovered are signed within an
        interval (an idle checkpoint); on a shared log, this process looks every interval."""
        if self._range.size > self._checkpointed or self._shared:
            self._access.wake_at(self._clock() + self._interval)

    def _bind(self, rows: LogRows) -> list[tuple[str, str]]:
        self._shared = rows.claim() is not None  # processes starting together record one key
        keys = rows.keys()
        if keys:
            return keys
        self._load(rows)
        mine = self._signer.verifier_key()
        rows.add_key(self.origin, mine, rows.size(), rfc3339(dt.datetime.now(dt.UTC)))
        return [(self.origin, mine)]

    # -- in the store's transaction -------------------------------------------------------

    def run_batch(self, rows: LogRows, payloads: list[Any]) -> list[Any]:
        """Sequence ``payloads`` ((record, record.body(), redemption or None) each, or
        ``SIGN_NOW``) into ``rows``; a ``Receipt`` per payload (None for ``SIGN_NOW``), in
        order."""
        if self._broken is not None:
            self._reload()
        self._follow(rows)
        if SIGN_NOW in payloads:
            self._sign_now = True
            appended = iter(self._append(rows, [p for p in payloads if p is not SIGN_NOW]))
            return [None if p is SIGN_NOW else next(appended) for p in payloads]
        return self._append(rows, payloads)

    def _follow(self, rows: LogRows) -> None:
        """Claim the log for this transaction; catch up with what other processes appended
        since this one's last batch, checked, before appending or signing over it."""
        head = rows.claim()
        if head is None:
            return
        mine = self._signer.verifier_key()
        if head.key and head.key != mine:
            raise LogIdentityError(  # rotated meanwhile (this process's session was lost)
                f"{self._access.name}: the log's current key is now {_key_name(head.key)}, not "
                f"this process's {_key_name(mine)}; it signs nothing more: restart it with the "
                f"new key file"
            )
        if head.size != self._range.size:
            self._range, self._prev = check_extension(self._range, rows.tip(), rows)
            self._heads = {}  # other processes moved subjects' heads: read the stored map
        self._checkpointed = max(self._checkpointed, head.checkpointed)

    def _append(self, rows: LogRows, payloads: list[Any]) -> list[Receipt]:
        start = self._range.size
        if any(redemption is not None for _, _, redemption in payloads):
            payloads = [_redeem(rows, *payload) for payload in payloads]
        records = [record for record, _, _ in payloads]
        backs = self._back_links(rows, records, start)
        leaves, hashes = chain_leaves([body for _, body, _ in payloads], start, self._prev, backs)
        nodes = self._range.push_leaves(hashes)
        rows.insert_entries(start, nodes, leaves)
        if hashes:
            self._prev = hashes[-1]
        self._durable = list(enumerate(records, start))
        origin, now = self.origin, dt.datetime.now(dt.UTC)
        return [
            Receipt(i, h, origin, now, bool(refusal), refusal or "")
            for (i, h), (_, _, refusal) in zip(enumerate(hashes, start), payloads, strict=True)
        ]

    def _back_links(
        self, rows: LogRows, records: list[AuditRecord], start: int
    ) -> list[int | None]:
        """Each record's back-link (``NO_BACK`` before version 3), and the newest index of each
        subject of the batch moved to its last entry, stored in the batch's transaction."""
        heads = self._heads
        unknown = {r.subject for r in records if r.subject and r.subject not in heads}
        if unknown:
            heads.update(rows.subject_heads(sorted(unknown)))
        backs: list[int | None] = []
        moved: dict[str, int] = {}
        for i, record in enumerate(records, start):
            subject = record.subject
            if record.v < _BACK_LINKED:
                backs.append(NO_BACK)
            else:
                backs.append(heads.get(subject) if subject else None)
            if subject:
                heads[subject] = moved[subject] = i
        if moved:
            rows.set_subject_heads(list(moved.items()))
        return backs

    def finish_batch(self, rows: LogRows) -> None:
        """The batch's last write: a checkpoint, once the interval has passed or when asked."""
        sign_now, self._sign_now = self._sign_now, False
        if sign_now or self._clock() >= self._last_checkpoint + self._interval:
            self.checkpoint(rows)

    def checkpoint(self, rows: LogRows) -> None:
        """Sign and store a checkpoint of the current size (none if it is signed already)."""
        if self._broken is not None:
            raise self._broken
        self._follow(rows)
        size = self._range.size
        if size == self._checkpointed:
            return
        note = sign_checkpoint(Checkpoint(self.origin, size, self._range.root()), self._signer)
        rows.insert_checkpoint(size, note, rfc3339(dt.datetime.now(dt.UTC)))
        self._checkpointed = size
        self._last_checkpoint = self._clock()

    # -- after the transaction -------------------------------------------------------------

    def committed(self) -> list[tuple[int, AuditRecord]]:
        """The batch is durable: its (index, record)s, for the search index."""
        durable, self._durable = self._durable, []
        if len(self._heads) > _HEADS_CACHED:
            self._heads = {}  # bounded: the stored map answers for the subjects it forgot
        if self._range.size > self._checkpointed:  # an idle checkpoint covers it in time
            self._access.wake_at(self._last_checkpoint + self._interval)
        elif self._shared:  # another process may die leaving entries uncovered: look again
            self._access.wake_at(self._clock() + max(self._interval, _WATCH_S))
        return durable

    def rolled_back(self) -> None:
        """The batch is lost: rebuild the state from the stored rows, checked."""
        self._durable = []
        self._sign_now = False
        self._heads = {}  # it may hold this batch's indexes: read the stored map again
        self._last_checkpoint = float("-inf")  # a checkpoint of this batch may be lost
        with contextlib.suppress(Exception):  # logged; the log stays broken until a reload passes
            self._reload()
        if self._broken is None and self._range.size > self._checkpointed:
            self._access.wake_at(self._clock() + max(self._interval, _RETRY_S))

    def _reload(self) -> None:
        """Rebuild the in-memory state from the rows, checked (``selfcheck``).

        If that fails, the log stays broken, signs nothing and fails every batch (each tries
        again: a damaged log stays refused, a passing read error heals).
        """
        try:
            self._range, self._prev, self._checkpointed = self._access.snapshot(self._load)
        except Exception as exc:
            if self._broken is None:
                _log.error("audit_log_reload_failed", error_type=type(exc).__name__, error=str(exc))
            self._broken = exc
            raise
        self._broken = None

    def _load(self, rows: LogRows) -> tuple[CompactRange, bytes, int]:
        """The compact range, newest leaf hash and newest checkpoint's size, self-checked."""
        checkpoint = self._newest_checkpoint(rows)
        rng, prev = check_stored_log(rows.tip(), checkpoint, rows)
        return rng, prev, checkpoint.size if checkpoint is not None else 0

    def _newest_checkpoint(self, rows: LogRows) -> Checkpoint | None:
        stored = rows.newest_checkpoint()
        if stored is None:
            return None
        size, note = stored
        claimed = note.split(b"\n", 1)[0].decode("utf-8", "replace")  # not yet verified
        try:
            checkpoint = open_checkpoint(note, self._verifiers, self.origin)
        except (NoteError, CheckpointError) as exc:
            if self._binding and (claimed != self.origin or isinstance(exc, OriginMismatchError)):
                raise LogIdentityError(
                    f"{self._access.name}: audit_origin {self.origin!r} is not the origin of "
                    f"this log's checkpoints ({claimed!r}); one data directory keeps one log: "
                    f"set audit_origin = {claimed!r} or use another data_dir"
                ) from None
            raise LogDamagedError(
                0, size, f"signed checkpoint {size} does not open with the log's keys ({exc})"
            ) from None
        if checkpoint.size != size:
            raise LogDamagedError(
                0,
                max(size, checkpoint.size),
                f"checkpoint row {size} holds a checkpoint of {checkpoint.size} entries",
            )
        return checkpoint


def _redeem(
    rows: LogRows, record: AuditRecord, body: bytes, redemption: Redemption | None
) -> tuple[AuditRecord, bytes, str | None]:
    """Spend what the exchange uses up in the batch's transaction; if that fails, log
    ``instead`` with the failure as its reason (and name it in the receipt)."""
    if redemption is None:
        return record, body, None
    refusal = rows.redeem(redemption.spend)
    if not refusal:
        return record, body, None
    instead = dataclasses.replace(redemption.instead, reason=refusal)
    return instead, instead.body(), refusal


def _key_name(verifier_key: str) -> str:
    name, _, rest = verifier_key.partition("+")
    return f"{name}+{rest.partition('+')[0]}"
