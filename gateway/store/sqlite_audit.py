"""The audit log on SQLite: sequencing, Merkle nodes, checkpoints, proofs and search.

Appends go through the store's writer thread (group commit). For each batch the writer assigns
indexes in queue order, builds the leaves and their hashes (``record.chain_leaves``), extends
the compact range (``CompactRange.push_leaves``; both in C where it is built), and writes each
entry with the hashes of the Merkle nodes it completes, in one row, in the same transaction; it
signs a checkpoint when the configured interval has passed. If the transaction fails, the
in-memory range is reloaded from the database, so memory never runs ahead of the disk.

Node (level, k) lives in the row of entry ((k + 1) << level) - 1, at byte 32 * level of its
``nodes``: a proof reads its O(log n) nodes by primary key in one statement.

The search index lives in a database of its own, written by a thread of its own
(``sqlite_search``): each batch is handed to it once durable, and ``search`` asks it to catch up
first, so a search sees every appended entry.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Sequence
from itertools import count
from typing import Any

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.compact import CompactRange, NodeID, border_ids
from gateway.audit.log import Entry, Receipt, Redemption, SearchQuery
from gateway.audit.proof import OutOfRangeError, consistency_proof, inclusion_proof
from gateway.audit.record import ZERO_HASH, AuditRecord, chain_leaves, rfc3339
from gateway.audit.rfc6962 import HASH_SIZE
from gateway.audit.signer import Signer
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_search import SearchIndex, log_size

_INSERT_ENTRY = "INSERT INTO audit_entries (idx, nodes, leaf) VALUES (?, ?, ?)"
_REDEEM = "INSERT OR IGNORE INTO redeemed_tokens (token_id, expires_at) VALUES (?, ?)"


class SqliteAuditLog:
    """``gateway.audit.log.AuditLog`` on a ``SqliteStore``."""

    def __init__(self, store: SqliteStore, signer: Signer, *, checkpoint_interval_s: float) -> None:
        self.origin = signer.name
        self._store = store
        self._signer = signer
        self._interval = checkpoint_interval_s
        self._range, self._prev, self._checkpointed = self._load(store.reader())
        self._last_checkpoint = float("-inf")  # the first batch after a start is checkpointed
        self._durable: list[tuple[int, AuditRecord]] = []  # this batch's, once it commits
        self._search = SearchIndex(store.path)
        store.on_close(self._search.close)

    # -- writing (the writer thread) -------------------------------------------------------

    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
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
        if time.monotonic() - self._last_checkpoint >= self._interval:
            self._checkpoint(conn)

    def committed(self) -> None:
        self._search.add(self._durable)
        self._durable = []

    def rolled_back(self) -> None:
        reader = self._store.reader()
        self._range, self._prev, self._checkpointed = self._load(reader)
        self._last_checkpoint = float("-inf")  # a checkpoint of this batch may be lost
        self._durable = []

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
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
        size = log_size(conn)
        hashes = _read_nodes(conn, border_ids(size))
        prev = _read_nodes(conn, [NodeID(0, size - 1)])[0] if size else ZERO_HASH
        (checkpointed,) = conn.execute(
            "SELECT coalesce(max(size), 0) FROM audit_checkpoints"
        ).fetchone()
        return CompactRange.from_border(size, hashes), prev, checkpointed

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
    """The stored hashes of ``ids``, in order, read by primary key in one statement per 500."""
    found: dict[int, bytes] = {}
    rows = sorted({((node.index + 1) << node.level) - 1 for node in ids})
    for at in range(0, len(rows), 500):
        chunk = rows[at : at + 500]
        sql = f"SELECT idx, nodes FROM audit_entries WHERE idx IN ({','.join('?' * len(chunk))})"  # noqa: S608 - placeholders only
        found.update((idx, bytes(nodes)) for idx, nodes in conn.execute(sql, chunk))
    hashes = []
    for node in ids:
        nodes = found.get(((node.index + 1) << node.level) - 1, b"")
        h = nodes[node.level * HASH_SIZE : (node.level + 1) * HASH_SIZE]
        if len(h) != HASH_SIZE:
            raise LookupError(f"audit node {tuple(node)} is not stored: the database is damaged")
        hashes.append(h)
    return hashes
