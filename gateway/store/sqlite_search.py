"""The audit log's search index: a SQLite database of its own, written by a thread of its own.

The index is derived data (every row can be rebuilt from the leaves), so it stays off the
durable path and out of the log's database: ``onecard.db`` keeps the log, ``onecard.search.db``
the index, and writing one never waits for, or holds up, the other. On a 2-core machine the
index's B-tree work then runs beside the log's group commit instead of after it.

The log's writer thread hands over each batch once it is durable (``add``). This thread writes
the index in transactions of ``CHUNK`` entries while batches keep coming (a B-tree costs far
less per row in large transactions), and everything it holds once none has come for
``QUIET_S``. Its commits do not fsync (WAL, synchronous=NORMAL): after a crash it rebuilds what
it lost from the leaves past its last row, and it drops rows past the end of the log. If a
write fails, the error is logged and the next attempt starts again from the leaves.

``search`` first asks the thread to index everything handed over before it (``catch_up``), so a
search sees every entry whose append has returned; it then reads the index with the log's
database attached. Small integer keys keep the B-trees small: org, rpc, decision, basis and
outcome by their id in ``audit_terms``, the subject by the first 64 bits of its pseudonym (a
search compares the whole pseudonym on the leaf). The subject B-tree is keyed by span first
(``SPAN_BITS``): random subjects then land in the pages of one span's subtree, not all over an
ever larger tree, and a search by subject walks the spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.audit.log import Entry, SearchQuery
from gateway.audit.record import AuditRecord
from gateway.errors import SetupError, StoreUnavailable
from gateway.store.sqlite import connect, log_size, resolve_futures

__all__ = ["CHUNK", "QUIET_S", "SPAN_BITS", "SearchIndex", "index_path", "subject_key"]

_log = structlog.get_logger(__name__)

CHUNK = 4096
"""Entries per transaction of the index while appends keep coming."""
QUIET_S = 0.05
"""No batch for this long: index whatever is waiting."""
_RETRY_S = 5.0  # after a failed write, wait this long before trying again unasked
_MAX_BUFFER = 200_000  # entries held in memory at most; past that, they are read from the log
SPAN_BITS = 16
"""The subject index is split by spans of 2**16 entries of the log (``span`` = idx >> 16)."""
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_terms (
    id   INTEGER PRIMARY KEY,
    term TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS audit_search (
    idx      INTEGER PRIMARY KEY,
    time     TEXT NOT NULL,
    org      INTEGER NOT NULL,
    rpc      INTEGER NOT NULL,
    decision INTEGER NOT NULL,
    basis    INTEGER NOT NULL,
    outcome  INTEGER NOT NULL,
    subject  INTEGER NOT NULL,
    span     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_search_subject ON audit_search (span, subject, idx);
CREATE INDEX IF NOT EXISTS audit_search_org ON audit_search (org, idx);
CREATE INDEX IF NOT EXISTS audit_search_time ON audit_search (time);
"""
# One statement per chunk, its rows in one JSON array: SQLite inserts them all in one call, with
# the GIL released throughout (``executemany`` takes the GIL back after every row, and trading it
# with the event loop 4,096 times per chunk slowed the appends by a tenth).
_INSERT = (
    "INSERT OR REPLACE INTO audit_search"
    " (idx, time, org, rpc, decision, basis, outcome, subject, span)"
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),"
    " json_extract(value, '$[8]')"
    " FROM json_each(?)"
)
_SEARCH = "SELECT e.idx, e.leaf FROM audit_search s JOIN log.audit_entries e ON e.idx = s.idx"
_TERM = "(SELECT id FROM audit_terms WHERE term = ?)"
_FIELDS = ("time", "org", "rpc", "decision", "basis", "outcome", "subject")
_SIDE = ("-wal", "-shm")  # SQLite's files beside a database in WAL mode
_STOP = object()
_Row = tuple[int, str, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _CatchUp:
    future: asyncio.Future[None]


def index_path(log_db: Path) -> Path:
    """The search index of the log in ``log_db``: ``onecard.db`` → ``onecard.search.db``."""
    return log_db.with_name(f"{log_db.stem}.search{log_db.suffix}")


class SearchIndex:
    """The search index of the audit log in ``log_db``, kept up to date by its own thread."""

    def __init__(self, log_db: Path) -> None:
        self.path = index_path(log_db)
        self._log_db = log_db
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:  # not a database (any more): it is only derived
            _log.warning("audit_search_index_rebuilt", reason=str(exc))
            for stale in (self.path, *(self.path.with_name(self.path.name + s) for s in _SIDE)):
                stale.unlink(missing_ok=True)
            self._conn = self._open()
        try:
            self._conn.execute("SELECT json_extract('[1]', '$[0]')")
        except sqlite3.OperationalError:
            self._conn.close()
            raise SetupError(
                f"the SQLite library here ({sqlite3.sqlite_version}) has no JSON functions, "
                f"which the audit search index needs: use SQLite 3.38 or newer"
            ) from None
        self._leaves = connect(log_db, readonly=True)  # the thread's view of the log
        self._target = log_size(self._leaves)  # index entries up to here
        self._conn.execute("DELETE FROM audit_search WHERE idx >= ?", (self._target,))
        self._indexed = _indexed_size(self._conn)
        self._terms = _Terms(self._conn)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._readers = threading.local()
        self._closed = self._dead = False
        self._thread = threading.Thread(target=self._run, name="audit-search-index", daemon=True)
        self._thread.start()

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < _SCHEMA_VERSION:  # an older layout: it is rebuilt from the log
                conn.executescript("DROP TABLE IF EXISTS audit_search")
            if version <= _SCHEMA_VERSION:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        if version > _SCHEMA_VERSION:
            conn.close()
            raise SetupError(
                f"{self.path}: search index version {version} is newer than this gateway; "
                f"upgrade the gateway, or delete the file (it is rebuilt from the log)"
            )
        return conn

    # -- the log's side --------------------------------------------------------------------

    def add(self, entries: list[tuple[int, AuditRecord]]) -> None:
        """Index these durable entries (consecutive, ascending) soon; called by the log's writer."""
        if entries:
            self._queue.put(entries)

    async def catch_up(self) -> None:
        """Return once every entry added before this call is in the index."""
        if self._closed:
            raise StoreUnavailable("the gateway is shutting down; retry on another instance")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put(_CatchUp(future))
        if self._dead:
            self._refuse([])
        await future

    async def search(self, query: SearchQuery) -> list[Entry]:
        """Entries matching every non-empty filter of ``query``, in index order."""
        await self.catch_up()
        clauses = ["s.idx > ?"]
        args: list[object] = [query.after_index]
        for column, value in (
            ("org", query.org), ("rpc", query.rpc), ("decision", query.decision),
            ("basis", query.basis),
        ):  # fmt: skip
            if value:
                clauses.append(f"s.{column} = {_TERM}")
                args.append(value)
        if query.since:
            clauses.append("s.time >= ?")
            args.append(query.since)
        if query.until:
            clauses.append("s.time < ?")
            args.append(query.until)
        if query.subject:  # span by span, each through the subject index
            clauses.append("s.span = ? AND s.subject = ?")
            clauses.append("json_extract(e.leaf, '$.r.subject') = ?")  # the whole pseudonym
        where = " AND ".join(clauses)  # fixed column names; every value is bound
        sql = f"{_SEARCH} WHERE {where} ORDER BY s.idx LIMIT ?"
        key = subject_key(query.subject)

        def read() -> list[tuple[int, bytes]]:
            conn = self._reader()
            if not query.subject:
                return list(conn.execute(sql, [*args, query.limit]))
            found: list[tuple[int, bytes]] = []
            conn.execute("BEGIN")  # one snapshot for every span
            try:
                (last,) = conn.execute("SELECT coalesce(max(idx), -1) FROM audit_search").fetchone()
                first = max(query.after_index + 1, 0) >> SPAN_BITS
                for span in range(first, (last >> SPAN_BITS) + 1):
                    if len(found) >= query.limit:
                        break
                    more = [span, key, query.subject, query.limit - len(found)]
                    found += conn.execute(sql, [*args, *more])
            finally:
                conn.execute("COMMIT")
            return found

        rows = await asyncio.to_thread(read)
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def close(self) -> None:
        """Write what is waiting (if it can) and stop the thread; a search is refused after."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._refuse([])  # a search from another thread may have slipped in behind the stop
        self._conn.close()
        self._leaves.close()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            conn.execute("ATTACH DATABASE ? AS log", (str(self._log_db),))
            self._readers.conn = conn
        return conn

    # -- the index's thread ----------------------------------------------------------------

    def _run(self) -> None:
        waiting: list[_CatchUp] = []
        try:
            self._loop(waiting)
        except BaseException as exc:  # a bug: searches fail from now on, instead of hanging
            _log.critical("audit_search_index_stopped", error_type=type(exc).__name__)
            self._dead = True
            self._refuse(waiting)

    def _loop(self, waiting: list[_CatchUp]) -> None:
        buffer: deque[tuple[int, AuditRecord]] = deque()
        failed_at = float("-inf")
        while True:
            behind = self._target > self._indexed
            failing = time.monotonic() - failed_at < _RETRY_S
            try:
                timeout = (_RETRY_S if failing else QUIET_S) if behind else None
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None  # quiet: write what is waiting
            if item is _STOP:  # a clean stop leaves a complete index, unless that is long
                if self._target - self._indexed <= 4 * CHUNK:
                    with contextlib.suppress(Exception):
                        self._write(buffer)
                self._refuse(waiting)
                return
            if isinstance(item, _CatchUp):
                waiting.append(item)
            elif item is not None:
                self._target = max(self._target, item[-1][0] + 1)
                if not failing and len(buffer) < _MAX_BUFFER:  # else the leaves are read
                    buffer.extend(item)
                if self._target - self._indexed < CHUNK or failing:
                    continue
            try:
                self._write(buffer)
            except Exception as exc:  # logged; a search gets UNAVAILABLE, never a partial answer
                _log.error("audit_search_index_failed", error_type=type(exc).__name__)
                failed_at = time.monotonic()
                buffer.clear()
                error: BaseException | None = StoreUnavailable(
                    "the audit search index cannot be written; the log itself is intact; retry"
                )
            else:
                failed_at = float("-inf")
                error = None
            resolve_futures([(w.future, None, error) for w in waiting])
            waiting.clear()

    def _refuse(self, waiting: list[_CatchUp]) -> None:
        """Fail the searches waiting, and any that came in after the stop (or the crash)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _CatchUp):
                waiting.append(item)
        if self._dead:
            error = StoreUnavailable(
                "the audit search index stopped on an error; restart the gateway"
            )
        else:
            error = StoreUnavailable("the gateway is shutting down; retry on another instance")
        resolve_futures([(w.future, None, error) for w in waiting])

    def _write(self, buffer: deque[tuple[int, AuditRecord]]) -> None:
        """Index entries up to ``_target``, ``CHUNK`` per transaction: from ``buffer`` where
        it holds them (it may start late, after a failure), else from the leaves."""
        while self._indexed < self._target:
            while buffer and buffer[0][0] < self._indexed:
                buffer.popleft()
            start = self._indexed
            if buffer and buffer[0][0] == start:
                chunk = [buffer.popleft() for _ in range(min(CHUNK, len(buffer)))]
            else:
                upto = min(self._target, buffer[0][0] if buffer else self._target, start + CHUNK)
                chunk = [
                    (int(idx), _leaf_record(leaf))
                    for idx, leaf in self._leaves.execute(
                        "SELECT idx, leaf FROM audit_entries WHERE idx >= ? AND idx < ?"
                        " ORDER BY idx",
                        (start, upto),
                    )
                ]
                if not chunk:  # the log is shorter than asked (cannot happen; never loop)
                    self._target = start
                    return
            self._commit([_row(self._terms, idx, record) for idx, record in chunk])

    def _commit(self, rows: list[_Row]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_INSERT, (json.dumps(rows),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._terms.reload()
            self._indexed = _indexed_size(conn)
            raise
        self._indexed = rows[-1][0] + 1


class _Terms(dict[str, int]):
    """The ids of the values of the coded search fields (``audit_terms``); a value not seen
    before is inserted in the transaction that indexes it (``reload`` after a rollback)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn
        self.reload()

    def __missing__(self, term: str) -> int:
        insert = "INSERT INTO audit_terms (term) VALUES (?) RETURNING id"
        (term_id,) = self._conn.execute(insert, (term,)).fetchone()
        self[term] = term_id
        return int(term_id)

    def reload(self) -> None:
        self.clear()
        self.update(self._conn.execute("SELECT term, id FROM audit_terms"))


def _row(terms: _Terms, idx: int, r: AuditRecord) -> _Row:
    return (idx, r.time, terms[r.org], terms[r.rpc], terms[r.decision], terms[r.basis],
            terms[r.outcome], subject_key(r.subject), idx >> SPAN_BITS)  # fmt: skip


def _leaf_record(leaf: bytes) -> AuditRecord:
    """The search fields of the record in a stored leaf (the others left empty)."""
    r = json.loads(leaf)["r"]
    at, org, rpc, decision, basis, outcome, subject = (str(r.get(f, "")) for f in _FIELDS)
    return AuditRecord(
        time=at, request_id="", org=org, org_type="", cert_sha256="", rpc=rpc,
        outcome=outcome, reason="", released_sha256="", latency_us=0, basis=basis,
        subject=subject, decision=decision,
    )  # fmt: skip


def subject_key(subject: str) -> int:
    """The indexed key of a subject: its first 16 hex digits as a signed 64-bit integer.

    A pseudonym is an HMAC, so these bits spread evenly; anything else (no subject, or not
    hex) is 0. Two subjects may share a key: a search also compares the whole subject.
    """
    try:
        return int(subject[:16], 16) % (1 << 64) - (1 << 63)
    except ValueError:
        return 0


def _indexed_size(conn: sqlite3.Connection) -> int:
    """How many entries the index covers (it is always a prefix of the log)."""
    (size,) = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_search").fetchone()
    return int(size)
