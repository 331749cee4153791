"""PostgreSQL store (``store = "postgres"``): the same writer design as SQLite, on a server.

One writer thread owns one connection and group-commits: it takes everything queued, runs it in
one transaction (``synchronous_commit`` stays on: a commit is durable, on the server's WAL),
and only then resolves each request's future. Reads run on a ``psycopg_pool`` pool in worker
threads. The batch handlers are the SQLite store's ``BatchHandler`` shape with a psycopg
connection in place of a sqlite3 one, so the audit log's handler (``pg_audit``) hands each
batch to the store-neutral ``Sequencer`` exactly as the SQLite one does.

Several processes (on one host or several) may serve one log in one schema: each runs its own
writer, and each batch transaction first claims the log (``claim_log``: a transaction-level
advisory lock keyed by the schema, released by the commit or rollback, or by the server the
moment the session dies), so that batches from all processes are sequenced one after the other
(``gateway.audit.sequencer``). Every gateway also holds a shared session lock on the log for as
long as it runs (``hold_log``); `onecard audit rotate-key` takes it exclusively, so it changes
keys only while no gateway writes. A writer session gives up waiting for a claim after
``lock_timeout`` (the batch fails as UNAVAILABLE instead of hanging behind a stuck process) and
the server ends one left idle inside a transaction after ``idle_in_transaction_session_timeout``
or gone silent (TCP keepalives), so a dead host's claim is released within seconds.

The schema is created and migrated only by ``onecard db upgrade`` (``pg_schema``); opening a
store checks its version and refuses one it does not know.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.errors import SetupError, StoreUnavailable
from gateway.store import pg_schema
from gateway.store._writer import WriterQueue
from gateway.store.base import REDEEMED_KEPT_S
from gateway.store.sqlite import resolve_futures

__all__ = [
    "PgBatchHandler",
    "PgConn",
    "PgStore",
    "claim_log",
    "connect",
    "database_error",
    "describe",
    "hold_log",
]

T = TypeVar("T")
PgConn = psycopg.Connection[tuple[Any, ...]]
_log = structlog.get_logger(__name__)
_PRUNE_EVERY_S = 60.0
_CONNECT_TIMEOUT_S = 10
_LOG_LOCK = 0x0C4D  # (class, hashtext(schema)): held shared by each gateway, exclusively to rotate
_APPEND_LOCK = 0x0C4E  # (class, hashtext(schema)): the transaction appending to the log
# A writer session's limits: waiting for another process's claim, idling inside a transaction
# (a stalled or dead process), and silence on its socket (a host gone without closing it).
_WRITER_SETTINGS = (
    "SET lock_timeout = '10s'",
    "SET idle_in_transaction_session_timeout = '10s'",
)
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


class PgBatchHandler(Protocol):
    """Runs all queued payloads of one kind inside the writer's transaction."""

    def run_batch(self, conn: PgConn, payloads: list[Any]) -> list[Any]:
        """Write every payload; return one result per payload, in order."""
        ...

    def finish_batch(self, conn: PgConn) -> None:
        """Last writes of the batch, in the same transaction."""
        ...

    def committed(self) -> None:
        """The transaction is durable (called before any of its results is handed out)."""
        ...

    def rolled_back(self) -> None:
        """The transaction failed: forget in-memory state derived from this batch."""
        ...


def describe(dsn: str) -> str:
    """The database a DSN names, for messages: never its password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL (an unreadable database_url)"
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
    schema = str(parts.get("options") or "").partition("search_path=")[2].split(" ")[0]
    named = f"postgresql://{parts.get('user', '')}@{where}/{parts.get('dbname', '')}"
    return f"{named} (schema {schema})" if schema else named


def connect(dsn: str, **kwargs: Any) -> PgConn:
    """A connection to ``dsn`` (autocommit: transactions are explicit), or a one-line
    ``SetupError`` naming the database without its password."""
    if not dsn:
        raise SetupError(
            'store = "postgres" needs database_url (or ONECARD_DATABASE_URL), e.g. '
            "postgresql://onecard@db.example.org/onecard"
        )
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # its message quotes the DSN, password included
        raise SetupError(
            "database_url is not a PostgreSQL URL or conninfo string psycopg can read (check "
            "its quoting: a % in a password is written %25)"
        ) from None
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S, **kwargs)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SetupError(f"{describe(dsn)}: cannot connect ({first})") from None


def database_error(exc: BaseException) -> str | None:
    """A one-line account of a PostgreSQL error (None: not one), for commands and start-up."""
    if not isinstance(exc, psycopg.Error):
        return None
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def hold_log(conn: PgConn, *, exclusive: bool = False) -> bool:
    """Take the log's session lock on ``conn``: shared (a gateway serving it) or exclusive (a
    command that needs every gateway stopped). False: it is held the other way."""
    how = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
    row = conn.execute(
        f"SELECT {how}(%s, hashtext(current_schema()))",  # one of two names
        (_LOG_LOCK,),
    ).fetchone()
    return bool(row and row[0])


def claim_log(conn: PgConn) -> None:
    """Make ``conn``'s transaction the only one appending to the log until it ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_APPEND_LOCK,))


def _writer_connection(dsn: str, name: str) -> PgConn:
    """A writer's session: the log held shared (refused while a key rotation holds it)."""
    conn = connect(dsn, application_name=f"onecard-writer pid={os.getpid()}", **_KEEPALIVES)
    try:
        pg_schema.check(conn, name)  # the lock is keyed by the schema: it must exist
    except BaseException:
        conn.close()
        raise
    if hold_log(conn):
        for statement in _WRITER_SETTINGS:
            conn.execute(statement)
        return conn
    conn.close()
    raise SetupError(
        f"{name}: `onecard audit rotate-key` holds this log; start the gateway when it is done"
    )


class _Ops:
    def run_batch(self, conn: PgConn, payloads: list[Any]) -> list[Any]:
        return [op(conn) for op in payloads]

    def finish_batch(self, conn: PgConn) -> None:
        pass

    def committed(self) -> None:
        pass

    def rolled_back(self) -> None:
        pass


class PgStore:
    """The gateway's durable state in one PostgreSQL schema (the DSN's ``search_path``)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = describe(dsn)
        self._conn = _writer_connection(dsn, self.name)
        try:
            pg_schema.check(self._conn, self.name)
            self._pool = ConnectionPool(
                dsn,
                min_size=1,
                max_size=8,
                kwargs={"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S},
                open=True,
                name="onecard-readers",
            )
        except BaseException:
            self._conn.close()
            raise
        self._writes: WriterQueue[PgBatchHandler] = WriterQueue(self._commit, "postgres-writer")
        self._closed = False
        self._last_prune = 0.0
        self._ops = _Ops()
        self._on_close: list[Callable[[], Awaitable[None]]] = []
        self._writes.start()

    # -- reads -----------------------------------------------------------------------------

    def read_now(self, query: Callable[[PgConn], T]) -> T:
        """Run ``query`` on a pooled connection, here (a worker or the writer thread)."""
        try:
            with self._pool.connection() as conn:
                return query(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            _log.error("store_read_failed", error_type=type(exc).__name__)
            raise StoreUnavailable("the gateway's database cannot be reached; retry") from None

    async def read(self, query: Callable[[PgConn], T]) -> T:
        """Run ``query`` on a pooled connection in a worker thread."""
        return await asyncio.to_thread(self.read_now, query)

    async def token_redeemed(self, token_id: bytes) -> bool:
        """Whether an exchange has already redeemed this token (the audit log redeems them)."""
        row = await self.read(
            lambda c: c.execute(
                "SELECT 1 FROM redeemed_tokens WHERE token_id = %s", (token_id,)
            ).fetchone()
        )
        return row is not None

    # -- writes ----------------------------------------------------------------------------

    async def write(self, op: Callable[[PgConn], T]) -> T:
        """Run ``op`` in the next group-committed transaction; return once it is durable."""
        result: T = await self.submit(self._ops, op)
        return result

    async def submit(self, handler: PgBatchHandler, payload: Any) -> Any:
        """Queue ``payload`` for ``handler``; return its result once the batch is durable."""
        return await self._writes.submit(handler, payload)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await ``closer`` first when the store closes."""
        self._on_close.append(closer)

    async def close(self) -> None:
        """Finish queued writes, stop the writer thread, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._writes.close()  # queued writes finish; new ones are refused
        for closer in self._on_close:
            await closer()
        await self._writes.stop()
        await asyncio.to_thread(self._pool.close)
        self._conn.close()  # ends the session: its lock on the log is released

    def run_at(self, handler: PgBatchHandler, deadline: float) -> None:
        """Run an empty batch of ``handler`` at ``deadline`` (``WriterQueue.run_at``)."""
        self._writes.run_at(handler, deadline)

    def _writer_conn(self) -> PgConn:
        """The writer's connection; after a lost one, a new one."""
        if not self._conn.closed and not self._conn.broken:
            return self._conn
        self._conn.close()
        try:
            self._conn = _writer_connection(self.dsn, self.name)
        except SetupError as exc:
            raise StoreUnavailable(str(exc)) from None
        return self._conn

    def _commit(
        self,
        batch: list[tuple[PgBatchHandler, Any, asyncio.Future[Any]]],
        idle: list[PgBatchHandler] | None = None,
    ) -> None:
        groups: dict[PgBatchHandler, list[int]] = {handler: [] for handler in idle or ()}
        for position, (handler, _, _) in enumerate(batch):
            groups.setdefault(handler, []).append(position)
        results: list[Any] = [None] * len(batch)
        try:
            conn = self._writer_conn()
            with conn.transaction():
                for handler, positions in groups.items():
                    outs = handler.run_batch(conn, [batch[p][1] for p in positions])
                    for p, out in zip(positions, outs, strict=True):
                        results[p] = out
                for handler in groups:
                    handler.finish_batch(conn)
                self._prune_if_due(conn)
        except Exception as exc:
            _log.error("store_commit_failed", error_type=type(exc).__name__, batch=len(batch))
            for handler in groups:
                handler.rolled_back()
            error = StoreUnavailable("the gateway could not record this request durably; retry")
            resolve_futures([(future, None, error) for _, _, future in batch])
            return
        for handler in groups:
            handler.committed()
        resolve_futures([(f, r, None) for (_, _, f), r in zip(batch, results, strict=True)])

    def _prune_if_due(self, conn: PgConn) -> None:
        now = time.time()
        if now - self._last_prune >= _PRUNE_EVERY_S:
            conn.execute(
                "DELETE FROM redeemed_tokens WHERE expires_at < %s",
                (int(now) - REDEEMED_KEPT_S,),
            )
            self._last_prune = now
