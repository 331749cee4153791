"""The audit log on SQLite: sequencing, Merkle nodes, checkpoints, proofs and search.

Appends go through the store's writer thread (group commit). For each batch the writer assigns
indexes in queue order, builds each leaf once (``record.leaf_bytes``), extends the compact range,
and writes the entries and every newly completed node in the same transaction; it signs a
checkpoint when the configured interval has passed. If the transaction fails, the in-memory
range is reloaded from the database, so memory never runs ahead of the disk.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.compact import CompactRange, NodeID, border_ids
from gateway.audit.log import Entry, Receipt, SearchQuery
from gateway.audit.proof import OutOfRangeError, consistency_proof, inclusion_proof
from gateway.audit.record import ZERO_HASH, AuditRecord, leaf_bytes, rfc3339
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Signer
from gateway.store.sqlite import SqliteStore

_INSERT_ENTRY = (
    "INSERT INTO audit_entries (idx, leaf, time, org, rpc, decision, basis, subject, outcome)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_NODE = "INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)"


class SqliteAuditLog:
    """``gateway.audit.log.AuditLog`` on a ``SqliteStore``."""

    def __init__(self, store: SqliteStore, signer: Signer, *, checkpoint_interval_s: float) -> None:
        self.origin = signer.name
        self._store = store
        self._signer = signer
        self._interval = checkpoint_interval_s
        self._range, self._prev, self._checkpointed = self._load(store.reader())
        self._last_checkpoint = float("-inf")  # the first batch after a start is checkpointed

    # -- writing (the writer thread) -------------------------------------------------------

    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
        entries = []
        nodes: list[tuple[int, int, bytes]] = []
        receipts = []
        now = dt.datetime.now(dt.UTC)
        for record, body in payloads:
            index = self._range.size
            leaf = leaf_bytes(index, self._prev, body)
            leaf_hash = hash_leaf(leaf)
            nodes.extend((n.level, n.index, h) for n, h in self._range.append(leaf_hash))
            entries.append(
                (index, leaf, record.time, record.org, record.rpc, record.decision,
                 record.basis, record.subject, record.outcome)
            )  # fmt: skip
            receipts.append(Receipt(index, leaf_hash, self.origin, now))
            self._prev = leaf_hash
        conn.executemany(_INSERT_ENTRY, entries)
        conn.executemany(_INSERT_NODE, nodes)
        return receipts

    def finish_batch(self, conn: sqlite3.Connection) -> None:
        if time.monotonic() - self._last_checkpoint >= self._interval:
            self._checkpoint(conn)

    def rolled_back(self) -> None:
        self._range, self._prev, self._checkpointed = self._load(self._store.reader())

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
        (size,) = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()
        hashes = _read_nodes(conn, border_ids(size))
        prev = _read_nodes(conn, [NodeID(0, size - 1)])[0] if size else ZERO_HASH
        (checkpointed,) = conn.execute(
            "SELECT coalesce(max(size), 0) FROM audit_checkpoints"
        ).fetchone()
        return CompactRange.from_border(size, hashes), prev, checkpointed

    # -- the AuditLog port -----------------------------------------------------------------

    async def append(self, record: AuditRecord) -> Receipt:
        receipt: Receipt = await self._store.submit(self, (record, record.body()))
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
        await self._check_size(size)

        def prove(conn: sqlite3.Connection) -> tuple[bytes, list[bytes]]:
            reader = _Reader(conn)
            return reader.read_nodes([NodeID(0, index)])[0], inclusion_proof(reader, index, size)

        return await self._store.read(prove)

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        await self._check_size(size2)
        return await self._store.read(lambda c: consistency_proof(_Reader(c), size1, size2))

    async def entries(self, start: int, end: int) -> list[Entry]:
        rows = await self._store.read(
            lambda c: c.execute(
                "SELECT idx, leaf FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()
        )
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def search(self, query: SearchQuery) -> list[Entry]:
        clauses = ["idx > ?"]
        args: list[object] = [query.after_index]
        for column, value in (
            ("org", query.org), ("rpc", query.rpc), ("decision", query.decision),
            ("basis", query.basis), ("subject", query.subject),
        ):  # fmt: skip
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        if query.since:
            clauses.append("time >= ?")
            args.append(query.since)
        if query.until:
            clauses.append("time < ?")
            args.append(query.until)
        sql = (
            f"SELECT idx, leaf FROM audit_entries WHERE {' AND '.join(clauses)}"  # noqa: S608 - fixed column names, values bound
            " ORDER BY idx LIMIT ?"
        )
        args.append(query.limit)
        rows = await self._store.read(lambda c: c.execute(sql, args).fetchall())
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def size(self) -> int:
        row = await self._store.read(
            lambda c: c.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()
        )
        return int(row[0])

    async def _check_size(self, size: int) -> None:
        current = await self.size()
        if size > current:
            raise OutOfRangeError(f"tree size {size} is larger than the log ({current} entries)")


class _Reader:
    """``proof.NodeReader`` over the stored nodes: one query per proof."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        return _read_nodes(self._conn, ids)


def _read_nodes(conn: sqlite3.Connection, ids: Sequence[NodeID]) -> list[bytes]:
    if not ids:
        return []
    values = ",".join("(?, ?)" for _ in ids)
    args = [v for node in ids for v in node]
    rows = conn.execute(
        f"SELECT level, idx, hash FROM audit_nodes WHERE (level, idx) IN (VALUES {values})",  # noqa: S608 - placeholders only
        args,
    ).fetchall()
    found = {(level, idx): bytes(h) for level, idx, h in rows}
    try:
        return [found[(node.level, node.index)] for node in ids]
    except KeyError as missing:
        raise LookupError(f"audit node {missing} is not stored: the database is damaged") from None
