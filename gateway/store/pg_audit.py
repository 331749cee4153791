"""The audit log, consents and keys on PostgreSQL: rows for the store-neutral ``Sequencer``.

``_Rows`` is the log's ``LogRows`` on one psycopg connection (in the writer's transaction, or a
snapshot); ``PgAuditLog`` is the writer's batch handler and the ``AuditLog`` port, as
``sqlite_audit.SqliteAuditLog`` is on SQLite. Every rule of the log (sequencing, node placement,
back-links, redemption of tokens and consent uses, checkpoint cadence, identity, recovery) is
the sequencer's; this module only reads and writes rows.

Spends are taken in the batch's transaction (``_Rows.redeem``): a token is a row inserted
``ON CONFLICT DO NOTHING``, a consent use a conditional update, a grant an insert, a revocation
an update, each beside the audit entry that records it, so racing requests get one answer.

Search reads ``audit_search``, whose rows the server extracts from each batch's leaves in the
batch's own transaction (``insert_entries``): a search sees every entry whose append returned.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
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
from gateway.audit.record import AuditRecord, leaf_link, rfc3339
from gateway.audit.rfc6962 import HASH_SIZE
from gateway.audit.selfcheck import LogDamagedError, StoredTip, UnreadableNodeError
from gateway.audit.sequencer import SIGN_NOW, Sequencer, SharedHead, node_row
from gateway.audit.signer import Signer
from gateway.consents import Consent, Grantee, Justification, Kept
from gateway.errors import SetupError
from gateway.store import pg_schema
from gateway.store.base import SignerFor
from gateway.store.postgres import PgConn, PgStore, claim_log, connect, describe, hold_log

__all__ = [
    "PgAuditLog",
    "PgConsents",
    "PgLogStore",
    "add_key",
    "read_justifications",
    "read_only",
    "recorded_keys",
]

T = TypeVar("T")
# A batch's entries, and their search fields read from the leaves by the server, in one
# statement (one round trip: the arrays travel as binary parameters).
_INSERT_ENTRIES = """
WITH stored AS (
    INSERT INTO audit_entries (idx, nodes, leaf)
    SELECT * FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[])
    RETURNING idx, leaf
)
INSERT INTO audit_search (idx, time, org, rpc, decision, basis, outcome, subject)
SELECT idx, coalesce(r->>'time', ''), coalesce(r->>'org', ''), coalesce(r->>'rpc', ''),
       coalesce(r->>'decision', ''), coalesce(r->>'basis', ''), coalesce(r->>'outcome', ''),
       coalesce(r->>'subject', '')
FROM (SELECT idx, convert_from(leaf, 'UTF8')::jsonb -> 'r' AS r FROM stored) AS batch
"""
_HEAD = (
    "SELECT coalesce((SELECT max(idx) + 1 FROM audit_entries), 0),"
    " coalesce((SELECT max(size) FROM audit_checkpoints), 0),"
    " coalesce((SELECT verifier_key FROM audit_keys ORDER BY seq DESC LIMIT 1), '')"
)
_SEARCH = "SELECT e.idx, e.leaf FROM audit_search s JOIN audit_entries e ON e.idx = s.idx"
_REDEEM = (
    "INSERT INTO redeemed_tokens (token_id, expires_at) VALUES (%s, %s)"
    " ON CONFLICT (token_id) DO NOTHING"
)
_SET_HEADS = (
    "INSERT INTO audit_subject_heads (subject, idx) SELECT * FROM unnest(%s::text[], %s::bigint[])"
    " ON CONFLICT (subject) DO UPDATE SET idx = excluded.idx"
)
_COLUMNS = (
    "consent_id, subject, card_binding, grantee_org, grantee_type, grantee_district, "
    "categories, purposes, valid_from, valid_until, max_uses, uses, granted_at, revoked_at"
)
_INSERT_CONSENT = f"INSERT INTO consents ({_COLUMNS}) VALUES ({', '.join(['%s'] * 14)})"  # noqa: S608 - constant
_SELECT_CONSENT = f"SELECT {_COLUMNS} FROM consents"  # noqa: S608 - constant
_TAKE = (
    "UPDATE consents SET uses = uses + 1 WHERE consent_id = %s AND revoked_at IS NULL "
    "AND valid_from <= %s AND %s < valid_until AND (max_uses = 0 OR uses < max_uses)"
)
_REVOKE = (
    "UPDATE consents SET revoked_at = %s WHERE consent_id = %s AND subject = %s "
    "AND revoked_at IS NULL"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# -- the log's rows ----------------------------------------------------------------------------


class _Rows:
    """The log's ``LogRows`` on one connection (in its current transaction)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: PgConn) -> None:
        self._conn = conn

    def claim(self) -> SharedHead:
        claim_log(self._conn)  # then read: this statement's snapshot follows the lock
        size, checkpointed, key = self._conn.execute(_HEAD).fetchone() or (0, 0, "")
        return SharedHead(int(size), int(checkpointed), str(key))

    def size(self) -> int:
        return _log_size(self._conn)

    def tip(self) -> StoredTip:
        row = self._conn.execute(
            "SELECT idx, leaf FROM audit_entries ORDER BY idx DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return StoredTip(0, 0, None)
        first = self._conn.execute("SELECT min(idx) FROM audit_entries").fetchone()
        lowest = int(first[0]) if first is not None else int(row[0])  # a row was just read
        return StoredTip(int(row[0]) + 1, lowest, bytes(row[1]))

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        rows = sorted({node_row(node) for node in ids})
        found = {
            int(idx): bytes(nodes)
            for idx, nodes in self._conn.execute(
                "SELECT idx, nodes FROM audit_entries WHERE idx = ANY(%s)", (rows,)
            )
        }
        hashes = []
        for node in ids:
            row = node_row(node)
            nodes = found.get(row)
            if nodes is None:
                raise UnreadableNodeError(node, "is not stored")
            if len(nodes) != _row_bytes(row):
                raise UnreadableNodeError(
                    node, f"is in a row of {len(nodes)} bytes, not {_row_bytes(row)}"
                )
            hashes.append(nodes[node.level * HASH_SIZE : (node.level + 1) * HASH_SIZE])
        return hashes

    def newest_checkpoint(self) -> tuple[int, bytes] | None:
        row = self._conn.execute(
            "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def insert_entries(self, start: int, nodes: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        if not leaves:
            return
        indexes = list(range(start, start + len(leaves)))
        self._conn.execute(_INSERT_ENTRIES, (indexes, list(nodes), list(leaves)))

    def insert_checkpoint(self, size: int, note: bytes, created_at: str) -> None:
        self._conn.execute(
            "INSERT INTO audit_checkpoints (size, note, created_at) VALUES (%s, %s, %s)",
            (size, note, created_at),
        )

    def redeem(self, spend: Spend) -> str:
        conn = self._conn
        match spend:
            case TokenSpend():
                rows = conn.execute(_REDEEM, (spend.token_id, spend.expires_at)).rowcount
                return "" if rows == 1 else "token_replayed"
            case ConsentSpend():
                return _take_use(conn, spend.consent_id, spend.at_us)
            case ConsentGrant():
                cur = conn.execute(
                    _INSERT_CONSENT + " ON CONFLICT (consent_id) DO NOTHING",
                    _consent_row(spend.consent),
                )
                return "" if cur.rowcount == 1 else "consent_conflict"
            case ConsentRevocation():
                conn.execute(_REVOKE, (spend.at_us, spend.consent_id, spend.subject))
                return ""

    def subject_heads(self, subjects: Sequence[str]) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT subject, idx FROM audit_subject_heads WHERE subject = ANY(%s)",
            (list(subjects),),
        )
        return {str(s): int(i) for s, i in rows}

    def set_subject_heads(self, heads: Sequence[tuple[str, int]]) -> None:
        self._conn.execute(_SET_HEADS, ([s for s, _ in heads], [i for _, i in heads]))

    def keys(self) -> list[tuple[str, str]]:
        return _keys(self._conn)

    def add_key(self, origin: str, verifier_key: str, from_size: int, added_at: str) -> None:
        self._conn.execute(
            "INSERT INTO audit_keys (origin, verifier_key, from_size, added_at)"
            " VALUES (%s, %s, %s, %s)",
            (origin, verifier_key, from_size, added_at),
        )


def _log_size(conn: PgConn) -> int:
    row = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()
    return int(row[0]) if row else 0


def _keys(conn: PgConn) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT origin, verifier_key FROM audit_keys ORDER BY seq")
    return [(str(origin), str(key)) for origin, key in rows]


def _row_bytes(idx: int) -> int:
    """The size of entry ``idx``'s ``nodes``: one hash per node it completes."""
    return HASH_SIZE * ((idx + 1) & -(idx + 1)).bit_length()


@contextlib.contextmanager
def _snapshot(conn: PgConn) -> Iterator[None]:
    """Read in one repeatable-read transaction: one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _proof_reader(conn: PgConn, size: int) -> _Rows:
    current = _log_size(conn)
    if size > current:
        raise OutOfRangeError(f"tree size {size} is larger than the log ({current} entries)")
    return _Rows(conn)


# -- the audit log -----------------------------------------------------------------------------


class PgAuditLog:
    """``gateway.audit.log.AuditLog`` on a ``PgStore``, sequenced by a ``Sequencer``."""

    def __init__(self, store: PgStore, signer: Signer, *, checkpoint_interval_s: float) -> None:
        self.origin = signer.name
        self._store = store
        self._sequencer = Sequencer(
            signer, _Access(self, store), checkpoint_interval_s=checkpoint_interval_s
        )
        self._sequencer.open()
        self.verifier_keys = self._sequencer.verifier_keys
        self._sequencer.start()

    # -- the store's batch handler (the writer thread) -------------------------------------

    def run_batch(self, conn: PgConn, payloads: list[Any]) -> list[Any]:
        return self._sequencer.run_batch(_Rows(conn), payloads)

    def finish_batch(self, conn: PgConn) -> None:
        self._sequencer.finish_batch(_Rows(conn))

    def committed(self) -> None:
        self._sequencer.committed()  # the search rows are already in the batch's transaction

    def rolled_back(self) -> None:
        self._sequencer.rolled_back()

    # -- the AuditLog port -----------------------------------------------------------------

    async def append(self, record: AuditRecord, redemption: Redemption | None = None) -> Receipt:
        receipt: Receipt = await self._store.submit(self, (record, record.body(), redemption))
        return receipt

    async def checkpoint_now(self) -> None:
        """Sign a checkpoint for the current size now (on shutdown, or when asked)."""

        def sign(conn: PgConn) -> None:
            self._sequencer.checkpoint(_Rows(conn))

        await self._store.write(sign)

    async def latest_checkpoint(self) -> bytes | None:
        newest = await self._store.read(lambda c: _Rows(c).newest_checkpoint())
        return None if newest is None else newest[1]

    async def checkpoints(self) -> Sequence[tuple[int, bytes]]:
        rows = await self._store.read(
            lambda c: c.execute("SELECT size, note FROM audit_checkpoints ORDER BY size").fetchall()
        )
        return [(int(size), bytes(note)) for size, note in rows]

    async def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        if not 0 <= index < size:
            raise OutOfRangeError(f"leaf index {index} is not in a tree of size {size}")

        def prove(conn: PgConn) -> tuple[bytes, list[bytes]]:
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
                "SELECT idx, leaf FROM audit_entries WHERE idx >= %s AND idx < %s ORDER BY idx",
                (start, end),
            ).fetchall()
        )
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def search(self, query: SearchQuery) -> list[Entry]:
        clauses = ["s.idx > %s"]
        args: list[object] = [query.after_index]
        for column, value in (
            ("org", query.org), ("rpc", query.rpc), ("decision", query.decision),
            ("basis", query.basis), ("subject", query.subject),
        ):  # fmt: skip
            if value:
                clauses.append(f"s.{column} = %s")
                args.append(value)
        if query.since:
            clauses.append("s.time >= %s")
            args.append(query.since)
        if query.until:
            clauses.append("s.time < %s")
            args.append(query.until)
        where = " AND ".join(clauses)  # fixed column names; every value is bound
        sql = f"{_SEARCH} WHERE {where} ORDER BY s.idx LIMIT %s"
        rows = await self._store.read(lambda c: c.execute(sql, [*args, query.limit]).fetchall())
        return [Entry(int(i), bytes(leaf)) for i, leaf in rows]

    async def follow(self, index: int, limit: int) -> list[Entry]:
        def walk(conn: PgConn) -> list[Entry]:
            found: list[Entry] = []
            at: int | None = index
            while at is not None and len(found) < limit:
                row = conn.execute(
                    "SELECT leaf FROM audit_entries WHERE idx = %s", (at,)
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

        def prove(conn: PgConn) -> list[list[bytes]]:
            reader = _proof_reader(conn, size)
            return [inclusion_proof(reader, index, size) for index in indexes]

        return await self._store.read(prove)

    async def checkpoint_of(self, size: int) -> bytes | None:
        row = await self._store.read(
            lambda c: c.execute(
                "SELECT note FROM audit_checkpoints WHERE size = %s", (size,)
            ).fetchone()
        )
        return bytes(row[0]) if row else None

    async def signed_checkpoint(self, covering: int) -> tuple[int, bytes]:
        newest = await self._store.read(lambda c: _Rows(c).newest_checkpoint())
        if newest is None or newest[0] < covering:
            await self._store.submit(self, SIGN_NOW)  # queued together: one signature
            newest = await self._store.read(lambda c: _Rows(c).newest_checkpoint())
        if newest is None or newest[0] < covering:
            raise OutOfRangeError(f"the log has fewer than {covering} entries to sign")
        return newest

    async def size(self) -> int:
        return await self._store.read(_log_size)


class _Access:
    """The sequencer's ``RowAccess`` on a ``PgStore``."""

    def __init__(self, handler: PgAuditLog, store: PgStore) -> None:
        self.name = store.name
        self._handler = handler
        self._store = store

    def snapshot(self, read: Callable[[_Rows], T]) -> T:
        def in_snapshot(conn: PgConn) -> T:
            with _snapshot(conn):
                return read(_Rows(conn))

        return self._store.read_now(in_snapshot)

    def transaction(self, write: Callable[[_Rows], T]) -> T:
        def in_transaction(conn: PgConn) -> T:
            with conn.transaction():
                return write(_Rows(conn))

        return self._store.read_now(in_transaction)

    def wake_at(self, deadline: float) -> None:
        self._store.run_at(self._handler, deadline)


# -- consents ----------------------------------------------------------------------------------


def _micros(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _moment(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _take_use(conn: PgConn, consent_id: str, at_us: int) -> str:
    """Take one use in ``conn``'s transaction: "" if taken, else why not."""
    if conn.execute(_TAKE, (consent_id, at_us, at_us)).rowcount == 1:
        return ""
    row = conn.execute(
        "SELECT revoked_at, valid_from, valid_until FROM consents WHERE consent_id = %s",
        (consent_id,),
    ).fetchone()
    if row is None or row[0] is not None:
        return "consent_revoked"  # a consent is never deleted; gone counts as withdrawn
    if not row[1] <= at_us < row[2]:
        return "consent_expired"
    return "consent_exhausted"


def _consent_row(consent: Consent) -> tuple[Any, ...]:
    g = consent.grantee
    return (
        consent.consent_id,
        consent.subject,
        consent.card_binding,
        g.org_id,
        g.org_type,
        g.district,
        json.dumps(list(consent.categories)),
        json.dumps(list(consent.purposes)),
        _micros(consent.valid_from),
        _micros(consent.valid_until),
        consent.max_uses,
        consent.uses,
        _micros(consent.granted_at),
        None if consent.revoked_at is None else _micros(consent.revoked_at),
    )


def _consent(row: Sequence[Any]) -> Consent:
    (cid, subject, binding, org, org_type, district, cats, purposes) = row[:8]
    valid_from, valid_until, max_uses, uses, granted_at, revoked_at = row[8:]
    return Consent(
        consent_id=str(cid),
        subject=str(subject),
        card_binding=str(binding),
        grantee=Grantee(str(org), str(org_type), str(district)),
        categories=tuple(json.loads(cats)),
        purposes=tuple(json.loads(purposes)),
        valid_from=_moment(int(valid_from)),
        valid_until=_moment(int(valid_until)),
        max_uses=int(max_uses),
        uses=int(uses),
        granted_at=_moment(int(granted_at)),
        revoked_at=None if revoked_at is None else _moment(int(revoked_at)),
    )


class PgConsents:
    """``gateway.consents.ConsentStore`` on a ``PgStore`` (writes are group-committed)."""

    def __init__(self, store: PgStore) -> None:
        self._store = store

    async def add(self, consent: Consent) -> None:
        row = _consent_row(consent)
        await self._store.write(lambda c: c.execute(_INSERT_CONSENT, row))

    async def get(self, consent_id: str) -> Consent | None:
        row = await self._store.read(
            lambda c: c.execute(
                f"{_SELECT_CONSENT} WHERE consent_id = %s", (consent_id,)
            ).fetchone()
        )
        return None if row is None else _consent(row)

    async def of_subject(self, subject: str) -> list[Consent]:
        rows = await self._store.read(
            lambda c: c.execute(
                f"{_SELECT_CONSENT} WHERE subject = %s ORDER BY granted_at DESC, consent_id",
                (subject,),
            ).fetchall()
        )
        return [_consent(row) for row in rows]

    async def revoke(self, consent_id: str, subject: str, at: dt.datetime) -> Consent | None:
        def revoke(conn: PgConn) -> tuple[Any, ...] | None:
            conn.execute(_REVOKE, (_micros(at), consent_id, subject))
            return conn.execute(
                f"{_SELECT_CONSENT} WHERE consent_id = %s AND subject = %s", (consent_id, subject)
            ).fetchone()

        row = await self._store.write(revoke)
        return None if row is None else _consent(row)

    async def keep_justification(self, about: Justification, text: str) -> None:
        row = (about.request_id, about.org, about.reason, about.digest, text, _micros(about.at))
        await self._store.write(
            lambda c: c.execute(
                "INSERT INTO emergency_justifications (request_id, org, reason, digest,"
                " justification, recorded_at) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (request_id, digest) DO NOTHING",
                row,
            )
        )

    async def justifications(self, since: dt.datetime, until: dt.datetime) -> Kept:
        """(request id, digest) -> justification of the emergency accesses kept in
        [since, until)."""
        rows = await self._store.read(
            lambda c: c.execute(
                "SELECT request_id, digest, justification FROM emergency_justifications "
                "WHERE recorded_at >= %s AND recorded_at < %s",
                (_micros(since), _micros(until)),
            ).fetchall()
        )
        return {(str(rid), str(digest)): str(text) for rid, digest, text in rows}


# -- the Store ---------------------------------------------------------------------------------


class PgLogStore:
    """The ``Store`` on PostgreSQL: the writer (``PgStore``) and the audit log on it."""

    def __init__(self, store: PgStore, audit_log: PgAuditLog) -> None:
        self.postgres = store
        self.audit_log = audit_log
        self.consents = PgConsents(store)

    @classmethod
    async def open(
        cls, dsn: str, signer_for: SignerFor, *, checkpoint_interval_s: float
    ) -> PgLogStore:
        """Open the log in the database ``dsn`` names (migrated by ``onecard db upgrade``);
        closed again on failure."""
        store = PgStore(dsn)
        try:
            signer = signer_for(store.read_now(_keys))
            audit_log = PgAuditLog(store, signer, checkpoint_interval_s=checkpoint_interval_s)
        except BaseException:
            await store.close()
            raise
        return cls(store, audit_log)

    async def token_redeemed(self, token_id: bytes) -> bool:
        return await self.postgres.token_redeemed(token_id)

    async def close(self) -> None:
        await self.postgres.close()


# -- while no gateway runs: keys, export, report -----------------------------------------------


def recorded_keys(dsn: str) -> list[tuple[str, str]]:
    """The (origin, verifier key) of every key the log in ``dsn`` has had, oldest first."""
    with contextlib.closing(connect(dsn)) as conn:
        pg_schema.check(conn, describe(dsn))
        return _keys(conn)


def add_key(dsn: str, signer: Signer) -> list[str]:
    """Record ``signer`` as the log's current key (every gateway on it must be stopped: this
    holds the log exclusively); every key, oldest first."""
    with contextlib.closing(connect(dsn)) as conn:
        pg_schema.check(conn, describe(dsn))
        if not hold_log(conn, exclusive=True):
            raise SetupError(
                f"{describe(dsn)}: a gateway is serving this log; stop every gateway process "
                f"on it first"
            )
        with conn.transaction():
            claim_log(conn)  # between batches: a gateway whose session was lost reads it next
            keys = [key for _, key in _keys(conn)]
            _Rows(conn).add_key(
                signer.name,
                signer.verifier_key(),
                _log_size(conn),
                rfc3339(dt.datetime.now(dt.UTC)),
            )
    return [*keys, signer.verifier_key()]


class _Snapshot:
    """``base.LogSnapshot`` on one repeatable-read transaction."""

    def __init__(self, conn: PgConn) -> None:
        self._conn = conn

    def checkpoints(self) -> list[tuple[int, bytes]]:
        rows = self._conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size")
        return [(int(size), bytes(note)) for size, note in rows]

    def size(self) -> int:
        return _log_size(self._conn)

    def leaves(self, start: int, end: int) -> list[bytes]:
        rows = self._conn.execute(
            "SELECT leaf FROM audit_entries WHERE idx >= %s AND idx < %s ORDER BY idx",
            (start, end),
        )
        return [bytes(leaf) for (leaf,) in rows]


@contextlib.contextmanager
def read_only(dsn: str) -> Iterator[_Snapshot]:
    """The log in ``dsn``, read-only, in one snapshot (beside a live gateway or not)."""
    with contextlib.closing(connect(dsn)) as conn:
        pg_schema.check(conn, describe(dsn))
        with _snapshot(conn):
            yield _Snapshot(conn)


def read_justifications(dsn: str) -> Kept:
    """(request id, digest) -> justification of every emergency access kept in ``dsn``."""
    with contextlib.closing(connect(dsn)) as conn:
        pg_schema.check(conn, describe(dsn))
        rows = conn.execute(
            "SELECT request_id, digest, justification FROM emergency_justifications"
        )
        return {(str(rid), str(digest)): str(text) for rid, digest, text in rows}
