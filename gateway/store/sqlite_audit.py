"""The audit log on SQLite: its rows, the writer-thread glue, proofs and search.

The log's rules (sequencing, node placement, checkpoint cadence, token redemption, identity,
recovery after a rolled-back batch) are the store-neutral ``gateway.audit.sequencer``; this
module reads and writes its rows (``_Rows``, a ``LogRows``) in SQLite transactions. Appends go
through the store's writer thread (group commit): the writer hands each batch's payloads to the
sequencer inside its transaction and tells it whether the batch committed; the sequencer's
timers are the store's ``run_at`` (an empty batch at a given time, where the idle checkpoint is
signed).

Node (level, k) lives in the row of entry ((k + 1) << level) - 1 (``sequencer.node_row``), at
byte 32 * level of its ``nodes``: a proof reads its O(log n) nodes by primary key in one
statement.

A consent use is taken in the batch's transaction too (``_Rows.redeem``:
``sqlite_consents.take_use``), beside the entry of the exchange that released data on it.

The search index lives in a database of its own, written by a thread of its own
(``sqlite_search``): each batch is handed to it once durable, and ``search`` asks it to catch up
first, so a search sees every appended entry.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

from gateway.audit.compact import NodeID
from gateway.audit.log import (
    ConsentGrant,
    ConsentRevocation,
    ConsentSpend,
    Entry,
    Receipt,
    Redemption,
    SearchQuery,
    Spend,
    TokenSpend,
)
from gateway.audit.proof import OutOfRangeError, consistency_proof, inclusion_proof
from gateway.audit.record import AuditRecord, leaf_link
from gateway.audit.rfc6962 import HASH_SIZE
from gateway.audit.selfcheck import LogDamagedError, StoredTip, UnreadableNodeError
from gateway.audit.sequencer import SIGN_NOW, Sequencer, node_row
from gateway.audit.signer import Signer
from gateway.store.base import SignerFor
from gateway.store.sqlite import SqliteStore, connect, log_size
from gateway.store.sqlite_consents import (
    SqliteConsents,
    insert_consent,
    revoke_consent,
    take_use,
)
from gateway.store.sqlite_keys import recorded_keys
from gateway.store.sqlite_search import SearchIndex

T = TypeVar("T")
_INSERT_ENTRY = "INSERT INTO audit_entries (idx, nodes, leaf) VALUES (?, ?, ?)"
_REDEEM = "INSERT OR IGNORE INTO redeemed_tokens (token_id, expires_at) VALUES (?, ?)"
_SET_HEAD = (  # an upsert changes the row in place (OR REPLACE deletes and inserts)
    "INSERT INTO audit_subject_heads (subject, idx) VALUES (?, ?)"
    " ON CONFLICT (subject) DO UPDATE SET idx = excluded.idx"
)


class SqliteAuditLog:
    """``gateway.audit.log.AuditLog`` on a ``SqliteStore``, sequenced by a ``Sequencer``.

    Opening it binds the log's identity (the origin and current key recorded in the database)
    and runs the self-check (``selfcheck``): either refuses with a one-line ``SetupError``
    before anything is signed.
    """

    def __init__(self, store: SqliteStore, signer: Signer, *, checkpoint_interval_s: float) -> None:
        self.origin = signer.name
        self._store = store
        self._sequencer = Sequencer(
            signer, _Access(self, store), checkpoint_interval_s=checkpoint_interval_s
        )
        self._sequencer.open()
        self.verifier_keys = self._sequencer.verifier_keys
        self._search = SearchIndex(store.path)
        store.on_close(self._search.close)
        self._sequencer.start()

    # -- the store's BatchHandler (the writer thread) --------------------------------------

    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
        return self._sequencer.run_batch(_Rows(conn), payloads)

    def finish_batch(self, conn: sqlite3.Connection) -> None:
        self._sequencer.finish_batch(_Rows(conn))

    def committed(self) -> None:
        self._search.add(self._sequencer.committed())

    def rolled_back(self) -> None:
        self._sequencer.rolled_back()

    # -- the AuditLog port -----------------------------------------------------------------

    async def append(self, record: AuditRecord, redemption: Redemption | None = None) -> Receipt:
        receipt: Receipt = await self._store.submit(self, (record, record.body(), redemption))
        return receipt

    async def checkpoint_now(self) -> None:
        """Sign a checkpoint for the current size now (on shutdown, or when asked)."""

        def sign(conn: sqlite3.Connection) -> None:
            self._sequencer.checkpoint(_Rows(conn))

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
            reader = _proof_reader(conn, size)
            return reader.read_nodes([NodeID(0, index)])[0], inclusion_proof(reader, index, size)

        return await self._store.read(prove)

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return await self._store.read(
            lambda c: consistency_proof(_proof_reader(c, size2), size1, size2)
        )

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

    async def follow(self, index: int, limit: int) -> list[Entry]:
        def walk(conn: sqlite3.Connection) -> list[Entry]:
            with _snapshot(conn):
                found: list[Entry] = []
                at: int | None = index
                while at is not None and len(found) < limit:
                    row = conn.execute(
                        "SELECT CAST(leaf AS BLOB) FROM audit_entries WHERE idx = ?", (at,)
                    ).fetchone()
                    if row is None:
                        raise OutOfRangeError(f"entry {at} is not in the log")
                    leaf = bytes(row[0])
                    found.append(Entry(at, leaf))
                    stored, _, at = leaf_link(leaf)
                    if stored != found[-1].index:
                        row_at = found[-1].index
                        raise LogDamagedError(row_at, row_at + 1, f"it holds entry {stored}")
                return found

        return await self._store.read(walk)

    async def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[bytes]]:
        for index in indexes:
            if not 0 <= index < size:
                raise OutOfRangeError(f"leaf index {index} is not in a tree of size {size}")

        def prove(conn: sqlite3.Connection) -> list[list[bytes]]:
            with _snapshot(conn):
                reader = _proof_reader(conn, size)
                return [inclusion_proof(reader, index, size) for index in indexes]

        return await self._store.read(prove)

    async def checkpoint_of(self, size: int) -> bytes | None:
        row = await self._store.read(
            lambda c: c.execute(
                "SELECT note FROM audit_checkpoints WHERE size = ?", (size,)
            ).fetchone()
        )
        return bytes(row[0]) if row else None

    async def signed_checkpoint(self, covering: int) -> tuple[int, bytes]:
        newest = await self._newest_checkpoint()
        if newest is None or newest[0] < covering:
            await self._store.submit(self, SIGN_NOW)  # queued together: one signature
            newest = await self._newest_checkpoint()
        if newest is None or newest[0] < covering:
            raise OutOfRangeError(f"the log has fewer than {covering} entries to sign")
        return newest

    async def _newest_checkpoint(self) -> tuple[int, bytes] | None:
        return await self._store.read(lambda c: _Rows(c).newest_checkpoint())

    async def size(self) -> int:
        return await self._store.read(log_size)


class _Access:
    """The sequencer's ``RowAccess`` on a ``SqliteStore``."""

    def __init__(self, handler: SqliteAuditLog, store: SqliteStore) -> None:
        self.name = str(store.path)
        self._handler = handler
        self._store = store

    def snapshot(self, read: Callable[[_Rows], T]) -> T:
        conn = self._store.reader()
        with _snapshot(conn):
            return read(_Rows(conn))

    def transaction(self, write: Callable[[_Rows], T]) -> T:
        return _in_transaction(self._store.path, lambda conn: write(_Rows(conn)))

    def wake_at(self, deadline: float) -> None:
        self._store.run_at(self._handler, deadline)


class _Rows:
    """The log's ``LogRows`` on one SQLite connection (in its current transaction)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def claim(self) -> None:
        return None  # one process writes a SQLite log: the sequencer's state is the log's

    def size(self) -> int:
        return log_size(self._conn)

    def tip(self) -> StoredTip:
        conn = self._conn
        # Two queries: SQLite reads min() or max() of the primary key from one end of the
        # B-tree only when the statement has a single such aggregate (together they scan).
        (last,) = conn.execute("SELECT max(idx) FROM audit_entries").fetchone()
        if last is None:
            return StoredTip(0, 0, None)
        (first,) = conn.execute("SELECT min(idx) FROM audit_entries").fetchone()
        leaf, kind = conn.execute(
            "SELECT CAST(leaf AS BLOB), typeof(leaf) FROM audit_entries WHERE idx = ?", (last,)
        ).fetchone()
        return StoredTip(int(last) + 1, int(first), leaf if kind == "blob" else None)

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        return _read_nodes(self._conn, ids)

    def newest_checkpoint(self) -> tuple[int, bytes] | None:
        row = self._conn.execute(
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
        return int(size), bytes(note)

    def insert_entries(self, start: int, nodes: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        self._conn.executemany(_INSERT_ENTRY, zip(count(start), nodes, leaves, strict=False))

    def insert_checkpoint(self, size: int, note: bytes, created_at: str) -> None:
        self._conn.execute(
            "INSERT INTO audit_checkpoints (size, note, created_at) VALUES (?, ?, ?)",
            (size, note, created_at),
        )

    def redeem(self, spend: Spend) -> str:
        conn = self._conn
        match spend:
            case TokenSpend():
                rows = conn.execute(_REDEEM, (spend.token_id, spend.expires_at)).rowcount
                return "" if rows == 1 else "token_replayed"
            case ConsentSpend():
                return take_use(conn, spend.consent_id, spend.at_us)
            case ConsentGrant():
                return insert_consent(conn, spend.consent)
            case ConsentRevocation():
                return revoke_consent(conn, spend.consent_id, spend.subject, spend.at_us)

    def subject_heads(self, subjects: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for at in range(0, len(subjects), 500):
            chunk = subjects[at : at + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT subject, idx FROM audit_subject_heads WHERE subject IN ({marks})"  # noqa: S608 - placeholders only
            found.update((str(s), int(i)) for s, i in self._conn.execute(sql, chunk))
        return found

    def set_subject_heads(self, heads: Sequence[tuple[str, int]]) -> None:
        self._conn.executemany(_SET_HEAD, heads)

    def keys(self) -> list[tuple[str, str]]:
        rows = self._conn.execute("SELECT origin, verifier_key FROM audit_keys ORDER BY seq")
        return [(str(origin), str(key)) for origin, key in rows]

    def add_key(self, origin: str, verifier_key: str, from_size: int, added_at: str) -> None:
        self._conn.execute(
            "INSERT INTO audit_keys (origin, verifier_key, from_size, added_at) "
            "VALUES (?, ?, ?, ?)",
            (origin, verifier_key, from_size, added_at),
        )


def _in_transaction(db: Path, write: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``write`` in one immediate transaction on a connection of its own; commit."""
    with contextlib.closing(connect(db)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = write(conn)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    return result


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


def _proof_reader(conn: sqlite3.Connection, size: int) -> _Rows:
    """The stored nodes of a tree of ``size`` (the log only grows: they never change)."""
    current = log_size(conn)
    if size > current:
        raise OutOfRangeError(f"tree size {size} is larger than the log ({current} entries)")
    return _Rows(conn)


def _read_nodes(conn: sqlite3.Connection, ids: Sequence[NodeID]) -> list[bytes]:
    """The stored hashes of ``ids``, in order, read by primary key in one statement per 500.

    Raises ``UnreadableNodeError`` for a node whose row is missing, too short, or not a BLOB.
    """
    found: dict[int, tuple[bytes, str]] = {}
    rows = sorted({node_row(node) for node in ids})
    for at in range(0, len(rows), 500):
        chunk = rows[at : at + 500]
        marks = ",".join("?" * len(chunk))
        # Read as a BLOB whatever it holds (TEXT that is not UTF-8 would not even decode), and
        # tell a node that was stored as something else by its type.
        sql = f"SELECT idx, CAST(nodes AS BLOB), typeof(nodes) FROM audit_entries WHERE idx IN ({marks})"  # noqa: S608, E501 - placeholders only
        found.update((idx, (nodes, kind)) for idx, nodes, kind in conn.execute(sql, chunk))
    hashes = []
    for node in ids:
        row = node_row(node)
        nodes, kind = found.get(row, (b"", "missing"))
        if kind != "blob":
            why = "is not stored" if kind == "missing" else f"is stored as {kind.upper()}"
            raise UnreadableNodeError(node, f"{why}, not a BLOB")
        if len(nodes) != _row_bytes(row):  # entry i completes levels 0 to ctz(i + 1)
            raise UnreadableNodeError(
                node, f"is in a row of {len(nodes)} bytes, not {_row_bytes(row)}"
            )
        hashes.append(nodes[node.level * HASH_SIZE : (node.level + 1) * HASH_SIZE])
    return hashes


def _row_bytes(idx: int) -> int:
    """The size of entry ``idx``'s ``nodes``: one hash per node it completes."""
    return HASH_SIZE * ((idx + 1) & -(idx + 1)).bit_length()


class SqliteLogStore:
    """The ``Store`` on SQLite: the writer (``SqliteStore``) and the audit log on it."""

    def __init__(self, store: SqliteStore, audit_log: SqliteAuditLog) -> None:
        self.sqlite = store
        self.audit_log = audit_log
        self.consents = SqliteConsents(store)
        self.path = store.path

    @classmethod
    async def open(
        cls, path: Path, signer_for: SignerFor, *, checkpoint_interval_s: float
    ) -> SqliteLogStore:
        """Open (or create) the database at ``path`` and its log; closed again on failure."""
        store = SqliteStore(path)
        try:
            signer = signer_for(recorded_keys(path))
            audit_log = SqliteAuditLog(store, signer, checkpoint_interval_s=checkpoint_interval_s)
        except BaseException:
            await store.close()
            raise
        return cls(store, audit_log)

    async def token_redeemed(self, token_id: bytes) -> bool:
        return await self.sqlite.token_redeemed(token_id)

    async def close(self) -> None:
        await self.sqlite.close()
