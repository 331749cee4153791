"""SQLite store, the embedded default: WAL journal, synchronous=FULL, one writer thread.

Requests hand their writes to the writer thread through a queue; the thread takes everything
queued, runs it in one transaction, commits (one fsync), and only then resolves each request's
future. A request therefore never sees its write acknowledged before it is on disk, and many
concurrent requests share one fsync (group commit, as Trillian's sequencer batches leaves).

Writes go through ``BatchHandler``s: each handler gets all of its queued payloads of one batch
at once (one ``executemany`` rather than many statements), may finish the batch inside the same
transaction (``finish_batch``: the audit log signs a checkpoint there), and is told whether the
transaction became durable (``committed``, before any result is handed out: the audit log then
passes the batch to its search index) or was rolled back (``rolled_back``, so it can drop
in-memory state that never reached the disk). A handler can also ask for a batch of its own at a
given time (``run_at``, an empty one: the audit log signs its idle checkpoints there); the writer
thread sleeps on its queue until the earliest such time, so nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from gateway.errors import SetupError, StoreUnavailable
from gateway.store._writer import WriterQueue
from gateway.store.base import REDEEMED_KEPT_S

T = TypeVar("T")

_log = structlog.get_logger(__name__)
_PRUNE_EVERY_S = 60.0
_SCHEMA_VERSION = 8
LOOKUP_WAIT_S = 0.05  # how long ``lookup`` waits on a locked database before using a thread
_JUSTIFICATIONS = """
-- Emergency (break-glass) justifications, by request id and digest: the audit entry names only
-- the reason code and a digest of the text (which may name the patient); the regulator's report
-- reads it. A caller may reuse a request id (retries), so the digest is part of the key: a later
-- access never replaces the text of an earlier one.
CREATE TABLE IF NOT EXISTS emergency_justifications (
    request_id    TEXT NOT NULL,
    org           TEXT NOT NULL,
    reason        TEXT NOT NULL,
    digest        TEXT NOT NULL,
    justification TEXT NOT NULL,
    recorded_at   INTEGER NOT NULL,
    PRIMARY KEY (request_id, digest)
) WITHOUT ROWID;
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS redeemed_tokens (
    token_id   BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS redeemed_tokens_expiry ON redeemed_tokens (expires_at);

-- The log itself: each entry's leaf bytes, and the hashes of the Merkle nodes the entry
-- completes (level 0, its leaf hash, first; node (level, k) is completed by entry
-- ((k + 1) << level) - 1, so every node is stored exactly once, in the row that completed it).
CREATE TABLE IF NOT EXISTS audit_entries (
    idx   INTEGER PRIMARY KEY,
    nodes BLOB NOT NULL,
    leaf  BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size       INTEGER PRIMARY KEY,
    note       BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- The log's identity: its origin and every key that has signed its checkpoints, oldest first;
-- the newest row is the current key (the first start records it, `onecard audit rotate-key`
-- adds one). Start-up refuses another origin or key.
CREATE TABLE IF NOT EXISTS audit_keys (
    seq          INTEGER PRIMARY KEY,
    origin       TEXT NOT NULL,
    verifier_key TEXT NOT NULL UNIQUE,
    from_size    INTEGER NOT NULL,
    added_at     TEXT NOT NULL
);

-- Standing consents (gateway.consents). The citizen appears only as pseudonyms: the card
-- holder's audit pseudonym and a keyed hash of the card number. Times are unix microseconds.
-- The status is derived when a consent is read; `uses` grows only in the transaction of the
-- audit entry of an exchange that released data on it (sqlite_consents.take_use).
CREATE TABLE IF NOT EXISTS consents (
    consent_id       TEXT PRIMARY KEY,
    subject          TEXT NOT NULL,
    card_binding     TEXT NOT NULL,
    grantee_org      TEXT NOT NULL,
    grantee_type     TEXT NOT NULL,
    grantee_district TEXT NOT NULL,
    categories       TEXT NOT NULL,
    purposes         TEXT NOT NULL,
    valid_from       INTEGER NOT NULL,
    valid_until      INTEGER NOT NULL,
    max_uses         INTEGER NOT NULL,
    uses             INTEGER NOT NULL DEFAULT 0,
    granted_at       INTEGER NOT NULL,
    revoked_at       INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS consents_subject ON consents (subject, granted_at);

{justifications}

-- The newest entry about each citizen (by pseudonym): the back-link of the next one. Written
-- in the same transaction as the entries (gateway.audit.sequencer).
CREATE TABLE IF NOT EXISTS audit_subject_heads (
    subject TEXT PRIMARY KEY,
    idx     INTEGER NOT NULL
) WITHOUT ROWID;
""".replace("{justifications}", _JUSTIFICATIONS.strip())


class BatchHandler(Protocol):
    """Runs all queued payloads of one kind inside the writer's transaction."""

    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
        """Write every payload; return one result per payload, in order."""
        ...

    def finish_batch(self, conn: sqlite3.Connection) -> None:
        """Last writes of the batch, in the same transaction."""
        ...

    def committed(self) -> None:
        """The transaction is durable (called before any of its results is handed out)."""
        ...

    def rolled_back(self) -> None:
        """The transaction failed: forget in-memory state derived from this batch."""
        ...


def connect(path: Path, *, readonly: bool = False, timeout: float = 30) -> sqlite3.Connection:
    """Open a connection with the durability settings every writer must use."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


def _rekey_justifications(conn: sqlite3.Connection) -> None:
    """Schema 6 and 7 keyed emergency justifications by request id alone, so a second access
    under a reused request id replaced the first one's text; copy them into the table keyed by
    request id and digest (in the migration's transaction)."""
    conn.execute("ALTER TABLE emergency_justifications RENAME TO emergency_justifications_v7")
    conn.execute(_JUSTIFICATIONS)
    conn.execute(
        "INSERT INTO emergency_justifications (request_id, org, reason, digest, justification, "
        "recorded_at) SELECT request_id, org, reason, digest, justification, recorded_at "
        "FROM emergency_justifications_v7"
    )
    conn.execute("DROP TABLE emergency_justifications_v7")


def _fill_subject_heads(conn: sqlite3.Connection) -> None:
    """Record the newest entry about each subject among the stored entries (schema 5 -> 6)."""
    heads: dict[str, int] = {}
    for idx, leaf in conn.execute("SELECT idx, leaf FROM audit_entries ORDER BY idx"):
        try:
            subject = json.loads(leaf)["r"].get("subject", "")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SetupError(
                f"audit entry {idx} is not a leaf of the audit format; the back-links of "
                f"citizens' entries cannot be started: run `onecard audit verify` on an export"
            ) from None
        if subject:
            heads[subject] = int(idx)
    conn.executemany(
        "INSERT OR REPLACE INTO audit_subject_heads (subject, idx) VALUES (?, ?)", heads.items()
    )


def log_size(conn: sqlite3.Connection) -> int:
    """How many entries the audit log holds (its highest index + 1)."""
    (size,) = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()
    return int(size)


class _Stateless:
    """A ``BatchHandler`` with nothing to finish and no state to keep or forget."""

    def finish_batch(self, conn: sqlite3.Connection) -> None:
        pass

    def committed(self) -> None:
        pass

    def rolled_back(self) -> None:
        pass


class _Ops(_Stateless):
    def run_batch(self, conn: sqlite3.Connection, payloads: list[Any]) -> list[Any]:
        return [op(conn) for op in payloads]


class SqliteStore:
    """The gateway's durable state in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = connect(path)
        self._migrate()
        self._writes: WriterQueue[BatchHandler] = WriterQueue(self._commit, "sqlite-writer")
        self._closed = False
        self._last_prune = 0.0
        self._ops = _Ops()
        self._readers = threading.local()
        self._lookup_conn: sqlite3.Connection | None = None  # ``lookup``'s, on the loop's thread
        self._on_close: list[Callable[[], Awaitable[None]]] = []
        self._writes.start()

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise SetupError(
                f"{self.path}: database schema version {version} is newer than this gateway "
                f"({_SCHEMA_VERSION}); upgrade the gateway"
            )
        if version == 3:  # the search index moved to a file of its own (sqlite_search)
            self._conn.execute("DROP TABLE IF EXISTS audit_search")
        elif 0 < version < 3:
            raise SetupError(
                f"{self.path}: database schema version {version} is from a development build "
                f"whose audit log layout was replaced before any release; move the data "
                f"directory aside (or delete it) and start again"
            )
        # Version 4 -> 5 adds audit_keys; the audit log records its origin and key there on its
        # first start (after checking that the existing checkpoints are theirs).
        # Version 5 -> 6 adds consents and emergency_justifications (empty at first); 6 -> 7
        # adds audit_subject_heads, filled from the entries already stored; 7 -> 8 keys
        # emergency_justifications by request id and digest (``_rekey_justifications``).
        self._conn.executescript(_SCHEMA)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if version < 7:
                _fill_subject_heads(self._conn)
            if 6 <= version < 8:
                _rekey_justifications(self._conn)
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        finally:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def reader(self) -> sqlite3.Connection:
        """A read-only connection for this thread (in WAL mode readers run beside the writer)."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._readers.conn = conn
        return conn

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` on a reader connection in a worker thread."""
        return await asyncio.to_thread(lambda: query(self.reader()))

    async def lookup(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query``, a lookup of one row by its primary key, on the calling thread.

        For the per-request point reads (a token redeemed? a consent by id?): a hop to a worker
        thread costs far more than the read itself (it was about a fifth of the gateway's CPU
        per card-present call, `bench/gateway_bench.py` with py-spy). A WAL reader does not
        wait for the writer; should the database be locked anyway (recovery, a checkpoint
        restart), the lookup gives up after ``LOOKUP_WAIT_S`` and runs in a thread instead,
        so the event loop is never held for long. Never for scans: use ``read``.
        """
        conn = self._lookup_conn
        if conn is None:
            conn = self._lookup_conn = connect(self.path, readonly=True, timeout=LOOKUP_WAIT_S)
        try:
            return query(conn)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return await self.read(query)

    async def token_redeemed(self, token_id: bytes) -> bool:
        """Whether an exchange has already redeemed this token (the audit log redeems them)."""
        row = await self.lookup(
            lambda c: c.execute(
                "SELECT 1 FROM redeemed_tokens WHERE token_id = ?", (token_id,)
            ).fetchone()
        )
        return row is not None

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in the next group-committed transaction; return once it is durable."""
        result: T = await self.submit(self._ops, op)
        return result

    async def submit(self, handler: BatchHandler, payload: Any) -> Any:
        """Queue ``payload`` for ``handler``; return its result once the batch is durable."""
        return await self._writes.submit(handler, payload)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await ``closer`` first when the store closes (a companion such as a search index)."""
        self._on_close.append(closer)

    async def close(self) -> None:
        """Finish queued writes, stop the writer thread and close the database."""
        if self._closed:
            return
        self._closed = True
        self._writes.close()  # queued writes finish; new ones are refused
        for closer in self._on_close:
            await closer()
        await self._writes.stop()
        if self._lookup_conn is not None:
            self._lookup_conn.close()
        self._conn.close()

    def run_at(self, handler: BatchHandler, deadline: float) -> None:
        """Run an empty batch of ``handler`` at ``deadline`` (``WriterQueue.run_at``)."""
        self._writes.run_at(handler, deadline)

    def _commit(
        self,
        batch: list[tuple[BatchHandler, Any, asyncio.Future[Any]]],
        idle: list[BatchHandler] | None = None,
    ) -> None:
        groups: dict[BatchHandler, list[int]] = {handler: [] for handler in idle or ()}
        for position, (handler, _, _) in enumerate(batch):
            groups.setdefault(handler, []).append(position)
        results: list[Any] = [None] * len(batch)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for handler, positions in groups.items():
                outs = handler.run_batch(self._conn, [batch[p][1] for p in positions])
                for p, out in zip(positions, outs, strict=True):
                    results[p] = out
            for handler in groups:
                handler.finish_batch(self._conn)
            self._prune_if_due()
            self._conn.execute("COMMIT")
        except Exception as exc:
            _log.error("store_commit_failed", error_type=type(exc).__name__, batch=len(batch))
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for handler in groups:
                handler.rolled_back()
            error = StoreUnavailable("the gateway could not record this request durably; retry")
            resolve_futures([(future, None, error) for _, _, future in batch])
            return
        for handler in groups:
            handler.committed()
        resolve_futures([(f, r, None) for (_, _, f), r in zip(batch, results, strict=True)])

    def _prune_if_due(self) -> None:
        now = time.time()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._conn.execute(
                "DELETE FROM redeemed_tokens WHERE expires_at < ?",
                (int(now) - REDEEMED_KEPT_S,),
            )
            self._last_prune = now


def resolve_futures(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Hand results to the futures' event loops: one wake-up per loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
