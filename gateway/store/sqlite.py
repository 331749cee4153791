"""SQLite store, the embedded default: WAL journal, synchronous=FULL, one writer thread.

Requests hand their writes to the writer thread through a queue; the thread takes everything
queued, runs it in one transaction, commits (one fsync), and only then resolves each request's
future. A request therefore never sees its write acknowledged before it is on disk, and many
concurrent requests share one fsync (group commit, as Trillian's sequencer batches leaves).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.errors import StoreUnavailable

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

_log = structlog.get_logger(__name__)
_MAX_BATCH = 1024
_PRUNE_EVERY_S = 60.0
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS redeemed_tokens (
    token_id   BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS redeemed_tokens_expiry ON redeemed_tokens (expires_at);
"""
_STOP = object()


def connect(path: Path) -> sqlite3.Connection:
    """Open a connection with the durability settings every writer must use."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class SqliteStore:
    """The gateway's durable state in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = connect(path)
        self._migrate()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._last_prune = 0.0
        self._writer = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._writer.start()

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: database schema version {version} is newer than this gateway "
                f"({_SCHEMA_VERSION}); upgrade the gateway"
            )
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    async def redeem_token(self, token_id: bytes, expires_at: int) -> bool:
        """Record a redeemed token id; False if it was already there (a replay)."""

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO redeemed_tokens (token_id, expires_at) VALUES (?, ?)",
                (token_id, expires_at),
            )
            return cur.rowcount == 1

        result: bool = await self.write(op)
        return result

    async def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in the next group-committed transaction; return once it is durable."""
        if self._closed:
            raise StoreUnavailable("the gateway is shutting down; retry on another instance")
        future: Future[T] = Future()
        self._queue.put((op, future))
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        """Finish queued writes, stop the writer thread and close the database."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._writer.join)
        self._conn.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[tuple[Op, Future[Any]]] = []
            stop = item is _STOP
            if not stop:
                batch.append(item)  # type: ignore[arg-type]
            while len(batch) < _MAX_BATCH and not stop:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                else:
                    batch.append(nxt)  # type: ignore[arg-type]
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Op, Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            results.extend(op(self._conn) for op, _ in batch)
            self._prune_if_due()
            self._conn.execute("COMMIT")
        except Exception as exc:
            _log.error("store_commit_failed", error_type=type(exc).__name__, batch=len(batch))
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for _, future in batch:
                future.set_exception(
                    StoreUnavailable("the gateway could not record this request durably; retry")
                )
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _prune_if_due(self) -> None:
        now = time.time()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            self._conn.execute("DELETE FROM redeemed_tokens WHERE expires_at < ?", (int(now),))
            self._last_prune = now
