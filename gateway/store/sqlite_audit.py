"""The audit log on SQLite: sequencing, Merkle nodes, checkpoints, proofs and search.

Appends go through the store's writer thread (group commit). For each batch the writer assigns
indexes in queue order, builds the leaves and their hashes (``record.chain_leaves``), extends
the compact range (``CompactRange.push_leaves``; both in C where it is built), and writes each
entry with the hashes of the Merkle nodes it completes, in one row, in the same transaction; it
signs a checkpoint when the configured interval has passed, and when the log goes quiet with
entries no checkpoint covers, it asks the writer for an empty batch at the end of the interval
(``SqliteStore.run_at``) and signs there. If the transaction fails, the in-memory range is
reloaded from the database, so memory never runs ahead of the disk.

Whenever the range is built from the database (on opening, after a rolled-back batch) it is
self-checked against the newest signed checkpoint first (``gateway.audit.selfcheck``); a log
that fails signs nothing more. Its origin and current key are bound on opening
(``sqlite_keys``).

Node (level, k) lives in the row of entry ((k + 1) << level) - 1, at byte 32 * level of its
``nodes``: a proof reads its O(log n) nodes by primary key in one statement.

The search index lives in a database of its own, written by a thread of its own
(``sqlite_search``): each batch is handed to it once durable, and ``search`` asks it to catch up
first, so a search sees every appended entry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import Iterator, Sequence
from itertools import count
from typing import Any

import structlog

from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    OriginMismatchError,
    open_checkpoint,
    sign_checkpoint,
)
from gateway.audit.compact import CompactRange, NodeID
from gateway.audit.log import Entry, Receipt, Redemption, SearchQuery
from gateway.audit.note import NoteError, Verifier, VerifierSet
from gateway.audit.proof import OutOfRangeError, consistency_proof, inclusion_proof
from gateway.audit.record import AuditRecord, chain_leaves, rfc3339
from gateway.audit.rfc6962 import HASH_SIZE
from gateway.audit.selfcheck import (
    LogDamagedError,
    StoredTip,
    UnreadableNodeError,
    check_stored_log,
)
from gateway.audit.signer import Signer
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_keys import LogIdentityError, bind_identity
from gateway.store.sqlite_search import SearchIndex, log_size

_log = structlog.get_logger(__name__)
_INSERT_ENTRY = "INSERT INTO audit_entries (idx, nodes, leaf) VALUES (?, ?, ?)"
_REDEEM = "INSERT OR IGNORE INTO redeemed_tokens (token_id, expires_at) VALUES (?, ?)"
_RETRY_S = 1.0  # after a failed batch, sign the entries it left uncovered this much later at most


class SqliteAuditLog:
    """``gateway.audit.log.AuditLog`` on a ``SqliteStore``.

    Opening it binds the log's identity (``bind_identity``: the origin and current key recorded
    in the database) and runs the self-check (``selfcheck``): either refuses with a one-line
    ``SetupError`` before anything is signed.
    """

    def __init__(self, store: SqliteStore, signer: Signer, *, checkpoint_interval_s: float) -> None:
        self.origin = signer.name
        self._store = store
        self._signer = signer
        self._interval = checkpoint_interval_s
        self._verifiers = VerifierSet([Verifier.parse(signer.verifier_key())])
        self._binding = True  # until the identity is recorded, another origin is a setup error
        self.verifier_keys = bind_identity(store.path, signer, self._load)
        self._binding = False
        self._verifiers = VerifierSet([Verifier.parse(key) for key in self.verifier_keys])
        self._range, self._prev, self._checkpointed = self._load(store.reader())
        self._broken: Exception | None = None  # set when a reload failed: nothing is signed
        self._last_checkpoint = float("-inf")  # the first batch after a start is checkpointed
        self._durable: list[tuple[int, AuditRecord]] = []  # this batch's, once it commits
        self._search = SearchIndex(store.path)
        store.on_close(self._search.close)
        if self._range.size > self._checkpointed:  # left by a crash: signed within an interval
            store.run_at(self, time.monotonic() + self._interval)

    # -- writing (the writer thread) -------------------------------------------------------

    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
        if self._broken is not None:
            self._reload()
        start = self._range.size
        if any(redemption is not None for _, _, redemption in payloads):
            payloads = [_redeem(conn, *payload) for payload in payloads]
        leaves, hashes = chain_leaves([body for _, body, _ in payloads], start, self._prev)
        nodes = self._range.push_leaves(hashes)
        conn.executemany(_INSERT_ENTRY, zip(count(start), nodes, leaves, strict=False))
        if hashes:
            self._prev = hashes[-1]
        self._durable = list(enumerate([record for record, _, _ in payloads], start))
        origin, now = self.origin, dt.datetime.now(dt.UTC)
        return [
            Receipt(i, h, origin, now, replayed is True)
            for (i, h), (_, _, replayed) in zip(enumerate(hashes, start), payloads, strict=True)
        ]

    def finish_batch(self, conn: sqlite3.Connection) -> None:
        if time.monotonic() >= self._last_checkpoint + self._interval:
            self._checkpoint(conn)

    def committed(self) -> None:
        self._search.add(self._durable)
        self._durable = []
        if self._range.size > self._checkpointed:  # an idle checkpoint covers it in time
            self._store.run_at(self, self._last_checkpoint + self._interval)

    def rolled_back(self) -> None:
        self._durable = []
        self._last_checkpoint = float("-inf")  # a checkpoint of this batch may be lost
        with contextlib.suppress(Exception):  # logged; the log stays broken until a reload passes
            self._reload()
        if self._broken is None and self._range.size > self._checkpointed:
            self._store.run_at(self, time.monotonic() + max(self._interval, _RETRY_S))

    def _reload(self) -> None:
        """Rebuild the in-memory state from the database, checked (``selfcheck``).

        If that fails, the log stays broken, signs nothing and fails every batch (each tries
        again: a damaged log stays refused, a passing read error heals).
        """
        try:
            self._range, self._prev, self._checkpointed = self._load(self._store.reader())
        except Exception as exc:
            if self._broken is None:
                _log.error("audit_log_reload_failed", error_type=type(exc).__name__, error=str(exc))
            self._broken = exc
            raise
        self._broken = None

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        if self._broken is not None:
            raise self._broken
        size = self._range.size
        if size == self._checkpointed:
            return
        note = sign_checkpoint(Checkpoint(self.origin, size, self._range.root()), self._signer)
        conn.execute(
            "INSERT INTO audit_checkpoints (size, note, created_at) VALUES (?, ?, ?)",
            (size, note, rfc3339(dt.datetime.now(dt.UTC))),
        )
        self._checkpointed = size
        self._last_checkpoint = time.monotonic()

    def _load(self, conn: sqlite3.Connection) -> tuple[CompactRange, bytes, int]:
        """The compact range, newest leaf hash and newest checkpoint's size, self-checked."""
        with _snapshot(conn):
            checkpoint = self._newest_checkpoint(conn)
            tip = _tip(conn)
            rng, prev = check_stored_log(tip, checkpoint, _Reader(conn, tip.size))
        return rng, prev, checkpoint.size if checkpoint is not None else 0

    def _newest_checkpoint(self, conn: sqlite3.Connection) -> Checkpoint | None:
        row = conn.execute(
            "SELECT size, CAST(note AS BLOB), typeof(note) FROM audit_checkpoints"
            " ORDER BY size DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        size, note, kind = row
        if kind != "blob":
            raise LogDamagedError(
                0, size, f"signed checkpoint {size}'s note is stored as {kind.upper()}, not a BLOB"
            )
        claimed = note.split(b"\n", 1)[0].decode("utf-8", "replace")  # not yet verified
        try:
            checkpoint = open_checkpoint(note, self._verifiers, self.origin)
        except (NoteError, CheckpointError) as exc:
            if self._binding and (claimed != self.origin or isinstance(exc, OriginMismatchError)):
                raise LogIdentityError(
                    f"{self._store.path}: audit_origin {self.origin!r} is not the origin of "
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

    # -- the AuditLog port -----------------------------------------------------------------

    async def append(self, record: AuditRecord, redemption: Redemption | None = None) -> Receipt:
        receipt: Receipt = await self._store.submit(self, (record, record.body(), redemption))
        return receipt

    async def checkpoint_now(self) -> None:
        """Sign a checkpoint for the current size now (on shutdown, or when asked)."""

        def sign(conn: sqlite3.Connection) -> None:
            self._checkpoint(conn)

        await self._store.write(sign)

    async def latest_checkpoint(self) -> bytes | None:
        row = await self._store.read(
            lambda c: c.execute(
                "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        )
        return bytes(row[0]) if row else None

    async def checkpoints(self) -> Sequence[tuple[int, bytes]]:
        rows = await self._store.read(
            lambda c: c.execute("SELECT size, note FROM audit_checkpoints ORDER BY size").fetchall()
        )
        return [(int(size), bytes(note)) for size, note in rows]

    async def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        if not 0 <= index < size:
            raise OutOfRangeError(f"leaf index {index} is not in a tree of size {size}")

        def prove(conn: sqlite3.Connection) -> tuple[bytes, list[bytes]]:
            reader = _Reader(conn, size)
            return reader.read_nodes([NodeID(0, index)])[0], inclusion_proof(reader, index, size)

        return await self._store.read(prove)

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return await self._store.read(lambda c: consistency_proof(_Reader(c, size2), size1, size2))

    async def entries(self, start: int, end: int) -> list[Entry]:
        rows = await self._store.read(
            lambda c: c.execute(
                "SELECT idx, leaf FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()
        )
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def search(self, query: SearchQuery) -> list[Entry]:
        return await self._search.search(query)

    async def size(self) -> int:
        return await self._store.read(log_size)


def _redeem(
    conn: sqlite3.Connection, record: AuditRecord, body: bytes, redemption: Redemption | None
) -> tuple[AuditRecord, bytes, bool | None]:
    """Redeem the exchange's token in the batch's transaction; a replay logs ``instead``."""
    if redemption is None:
        return record, body, None
    if conn.execute(_REDEEM, (redemption.token_id, redemption.expires_at)).rowcount == 1:
        return record, body, False
    return redemption.instead, redemption.instead.body(), True


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Read in one transaction (one snapshot of the WAL), unless one is already open."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _tip(conn: sqlite3.Connection) -> StoredTip:
    # Two queries: SQLite reads min() or max() of the primary key from one end of the B-tree
    # only when the statement has a single such aggregate (together they scan the table).
    (last,) = conn.execute("SELECT max(idx) FROM audit_entries").fetchone()
    if last is None:
        return StoredTip(0, 0, None)
    (first,) = conn.execute("SELECT min(idx) FROM audit_entries").fetchone()
    leaf, kind = conn.execute(
        "SELECT CAST(leaf AS BLOB), typeof(leaf) FROM audit_entries WHERE idx = ?", (last,)
    ).fetchone()
    return StoredTip(int(last) + 1, int(first), leaf if kind == "blob" else None)


class _Reader:
    """``proof.NodeReader`` over the stored nodes of a tree of ``size``: one query per proof."""

    def __init__(self, conn: sqlite3.Connection, size: int) -> None:
        current = log_size(conn)  # the log only grows: nodes below this size never change
        if size > current:
            raise OutOfRangeError(f"tree size {size} is larger than the log ({current} entries)")
        self._conn = conn

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        return _read_nodes(self._conn, ids)


def _read_nodes(conn: sqlite3.Connection, ids: Sequence[NodeID]) -> list[bytes]:
    """The stored hashes of ``ids``, in order, read by primary key in one statement per 500.

    Raises ``UnreadableNodeError`` for a node whose row is missing, too short, or not a BLOB.
    """
    found: dict[int, tuple[bytes, str]] = {}
    rows = sorted({((node.index + 1) << node.level) - 1 for node in ids})
    for at in range(0, len(rows), 500):
        chunk = rows[at : at + 500]
        marks = ",".join("?" * len(chunk))
        # Read as a BLOB whatever it holds (TEXT that is not UTF-8 would not even decode), and
        # tell a node that was stored as something else by its type.
        sql = f"SELECT idx, CAST(nodes AS BLOB), typeof(nodes) FROM audit_entries WHERE idx IN ({marks})"  # noqa: S608, E501 - placeholders only
        found.update((idx, (nodes, kind)) for idx, nodes, kind in conn.execute(sql, chunk))
    hashes = []
    for node in ids:
        nodes, kind = found.get(((node.index + 1) << node.level) - 1, (b"", "missing"))
        if kind != "blob":
            why = "is not stored" if kind == "missing" else f"is stored as {kind.upper()}"
            raise UnreadableNodeError(node, f"{why}, not a BLOB")
        h = nodes[node.level * HASH_SIZE : (node.level + 1) * HASH_SIZE]
        if len(h) != HASH_SIZE:
            raise UnreadableNodeError(node, "is not stored (its row's nodes are too short)")
        hashes.append(h)
    return hashes
