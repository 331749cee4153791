"""The audit log on SQLite: sequencing, Merkle nodes, checkpoints, proofs and search.

Appends go through the store's writer thread (group commit). For each batch the writer assigns
indexes in queue order, builds the leaves and their hashes (``record.chain_leaves``), extends
the compact range (``CompactRange.push_leaves``; both in C where it is built), and writes each
entry with the hashes of the Merkle nodes it completes, in one row, in the same transaction; it
signs a checkpoint when the configured interval has passed. If the transaction fails, the
in-memory range is reloaded from the database, so memory never runs ahead of the disk.

Node (level, k) lives in the row of entry ((k + 1) << level) - 1, at byte 32 * level of its
``nodes``: a proof reads its O(log n) nodes by primary key in one statement.

The search index (``audit_search``) is derived from the leaves and kept off the durable path:
the writer thread fills it in transactions without an fsync, in chunks of ``_INDEX_CHUNK``
entries between batches while appends keep coming (a B-tree costs far less per row in large
transactions), and with whatever is left once no append has come for a moment; within a batch
only when ``_MAX_PENDING`` entries are waiting. After a crash it is rebuilt from the leaves
past its last row. ``search`` first brings it up to date, so a search sees every appended entry.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from itertools import count, islice
from typing import Any

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.compact import CompactRange, NodeID, border_ids
from gateway.audit.log import Entry, Receipt, SearchQuery
from gateway.audit.proof import OutOfRangeError, consistency_proof, inclusion_proof
from gateway.audit.record import ZERO_HASH, AuditRecord, chain_leaves, rfc3339
from gateway.audit.rfc6962 import HASH_SIZE
from gateway.audit.signer import Signer
from gateway.store.sqlite import SqliteStore

_INSERT_ENTRY = "INSERT INTO audit_entries (idx, nodes, leaf) VALUES (?, ?, ?)"
_INSERT_SEARCH = (
    "INSERT OR REPLACE INTO audit_search"
    " (idx, time, org, rpc, decision, basis, outcome, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SEARCH = "SELECT e.idx, e.leaf FROM audit_search s JOIN audit_entries e ON e.idx = s.idx"
_TERM = "(SELECT id FROM audit_terms WHERE term = ?)"
_INDEX_CHUNK = 4096  # search rows per transaction
_MAX_PENDING = 20_000  # beyond this, a batch indexes inside its own transaction
_CATCH_UP = object()  # a payload that asks the writer to bring the search index up to date
_SearchRow = tuple[int, str, int, int, int, int, int, int]


class _Terms(dict[str, int]):
    """The ids of the values of the coded search fields (``audit_terms``), as far as known.

    A value not seen before is inserted on ``conn``, in the transaction that indexes it: set
    ``conn`` before use, and ``reload`` after a rollback.
    """

    conn: sqlite3.Connection

    def __missing__(self, term: str) -> int:
        insert = "INSERT INTO audit_terms (term) VALUES (?) RETURNING id"
        (term_id,) = self.conn.execute(insert, (term,)).fetchone()
        self[term] = term_id
        return int(term_id)

    def reload(self, conn: sqlite3.Connection) -> None:
        self.clear()
        self.update(conn.execute("SELECT term, id FROM audit_terms"))


class SqliteAuditLog:
    """``gateway.audit.log.AuditLog`` on a ``SqliteStore``."""

    def __init__(self, store: SqliteStore, signer: Signer, *, checkpoint_interval_s: float) -> None:
        self.origin = signer.name
        self._store = store
        self._signer = signer
        self._interval = checkpoint_interval_s
        self._range, self._prev, self._checkpointed = self._load(store.reader())
        self._last_checkpoint = float("-inf")  # the first batch after a start is checkpointed
        self._pending: deque[tuple[int, AuditRecord]] = deque()  # not yet in audit_search
        self._indexed = _indexed_size(store.reader())
        self._terms = _Terms()
        self._terms.reload(store.reader())
        store.when_idle(self._index_when_idle)

    # -- writing (the writer thread) -------------------------------------------------------

    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
        appends = [payload for payload in payloads if payload is not _CATCH_UP]
        start = self._range.size
        leaves, hashes = chain_leaves([body for _, body in appends], start, self._prev)
        nodes = self._range.push_leaves(hashes)
        conn.executemany(_INSERT_ENTRY, zip(count(start), nodes, leaves, strict=False))
        if hashes:
            self._prev = hashes[-1]
        self._pending.extend(enumerate((record for record, _ in appends), start))
        origin, now = self.origin, dt.datetime.now(dt.UTC)
        receipts = iter([Receipt(i, h, origin, now) for i, h in enumerate(hashes, start)])
        if len(appends) < len(payloads):  # a search waits for the index to catch up
            self._index_all(conn)
            return [None if payload is _CATCH_UP else next(receipts) for payload in payloads]
        return list(receipts)

    def finish_batch(self, conn: sqlite3.Connection) -> None:
        if time.monotonic() - self._last_checkpoint >= self._interval:
            self._checkpoint(conn)
        if len(self._pending) > _MAX_PENDING:
            self._index_all(conn)

    def rolled_back(self) -> None:
        reader = self._store.reader()
        self._range, self._prev, self._checkpointed = self._load(reader)
        self._last_checkpoint = float("-inf")  # a checkpoint of this batch may be lost
        self._indexed = _indexed_size(reader)
        self._terms.reload(reader)
        size = self._range.size
        self._pending = deque(item for item in self._pending if item[0] < size)

    # -- the search index (the writer thread) ----------------------------------------------

    def _index(self, conn: sqlite3.Connection, limit: int) -> bool:
        """Write search rows for up to ``limit`` entries from ``_indexed`` on; True if more remain.

        Rows come from memory for entries this process appended, and from the leaves for any
        entries before those (a backlog after a restart).
        """
        pending = self._pending
        while pending and pending[0][0] < self._indexed:
            pending.popleft()
        upto = pending[0][0] if pending else self._range.size
        terms = self._terms
        terms.conn = conn
        if self._indexed < upto:
            leaves = conn.execute(
                "SELECT idx, leaf FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx"
                " LIMIT ?",
                (self._indexed, upto, limit),
            ).fetchall()
            rows = [_search_row(terms, idx, _leaf_record(leaf)) for idx, leaf in leaves]
        else:
            rows = [_search_row(terms, idx, record) for idx, record in islice(pending, limit)]
        if rows:
            conn.executemany(_INSERT_SEARCH, rows)
            self._indexed = rows[-1][0] + 1
        return self._indexed < self._range.size

    def _index_all(self, conn: sqlite3.Connection) -> None:
        while self._index(conn, _INDEX_CHUNK):
            pass

    def _index_when_idle(self, conn: sqlite3.Connection, quiet: bool) -> bool:
        backlog = self._range.size - self._indexed
        if backlog <= 0 or (backlog < _INDEX_CHUNK and not quiet):
            return False
        conn.execute("BEGIN IMMEDIATE")
        try:
            more = self._index(conn, _INDEX_CHUNK)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._indexed = _indexed_size(conn)
            self._terms.reload(conn)
            raise
        return more

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
        size = _size(conn)
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
        await self._store.submit(self, _CATCH_UP)  # index every entry appended so far
        clauses = ["s.idx > ?"]
        args: list[object] = [query.after_index]
        for column, value in (
            ("org", query.org), ("rpc", query.rpc), ("decision", query.decision),
            ("basis", query.basis),
        ):  # fmt: skip
            if value:
                clauses.append(f"s.{column} = {_TERM}")
                args.append(value)
        if query.subject:
            clauses.append("s.subject = ? AND json_extract(e.leaf, '$.r.subject') = ?")
            args += [_subject_key(query.subject), query.subject]
        if query.since:
            clauses.append("s.time >= ?")
            args.append(query.since)
        if query.until:
            clauses.append("s.time < ?")
            args.append(query.until)
        where = " AND ".join(clauses)  # fixed column names; every value is bound
        sql = f"{_SEARCH} WHERE {where} ORDER BY s.idx LIMIT ?"
        args.append(query.limit)
        rows = await self._store.read(lambda c: c.execute(sql, args).fetchall())
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def size(self) -> int:
        return await self._store.read(_size)


class _Reader:
    """``proof.NodeReader`` over the stored nodes of a tree of ``size``: one query per proof."""

    def __init__(self, conn: sqlite3.Connection, size: int) -> None:
        current = _size(conn)  # the log only grows: nodes below this size never change
        if size > current:
            raise OutOfRangeError(f"tree size {size} is larger than the log ({current} entries)")
        self._conn = conn

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        return _read_nodes(self._conn, ids)


def _size(conn: sqlite3.Connection) -> int:
    (size,) = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()
    return int(size)


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


def _indexed_size(conn: sqlite3.Connection) -> int:
    """How many entries the search index covers (it is always a prefix of the log)."""
    (size,) = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_search").fetchone()
    return int(size)


def _leaf_record(leaf: bytes) -> AuditRecord:
    """The search fields of the record in a stored leaf (the others left empty)."""
    r = json.loads(leaf)["r"]
    return AuditRecord(
        time=str(r.get("time", "")), request_id="", org=str(r.get("org", "")), org_type="",
        cert_sha256="", rpc=str(r.get("rpc", "")), outcome=str(r.get("outcome", "")),
        reason="", released_sha256="", latency_us=0, basis=str(r.get("basis", "")),
        subject=str(r.get("subject", "")), decision=str(r.get("decision", "")),
    )  # fmt: skip


def _search_row(terms: _Terms, idx: int, r: AuditRecord) -> _SearchRow:
    return (idx, r.time, terms[r.org], terms[r.rpc], terms[r.decision], terms[r.basis],
            terms[r.outcome], _subject_key(r.subject))  # fmt: skip


def _subject_key(subject: str) -> int:
    """The indexed key of a subject: its first 16 hex digits as a signed 64-bit integer.

    A pseudonym is an HMAC, so these bits spread evenly; anything else (no subject, or not
    hex) is 0. Two subjects may share a key: a search also compares the whole subject.
    """
    try:
        return int(subject[:16], 16) % (1 << 64) - (1 << 63)
    except ValueError:
        return 0
