"""Consents on SQLite: the ``ConsentStore`` port, and taking a use in the log's transaction.

Consents live in the same database as the audit log (``onecard.db``, tables ``consents`` and
``emergency_justifications``), so that one transaction can write an audit entry and what the
exchange changes: a grant (``insert_consent``), a revocation (``revoke_consent``) or the consent
use it released data on (``take_use``), all called by the log's ``LogRows.redeem``. The
use is a conditional update: it succeeds only while the consent is unrevoked, valid at the
exchange's time and has a use left, so requests racing for the last use get exactly one answer
between them, whichever process they run in.

Nothing is cached: every ``get`` reads the row as it is now.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

from gateway.consents import Consent, Grantee, Justification, Kept
from gateway.store.sqlite import SqliteStore

__all__ = [
    "SqliteConsents",
    "insert_consent",
    "read_justifications",
    "revoke_consent",
    "take_use",
]

_COLUMNS = (
    "consent_id, subject, card_binding, grantee_org, grantee_type, grantee_district, "
    "categories, purposes, valid_from, valid_until, max_uses, uses, granted_at, revoked_at"
)
_INSERT = f"INSERT INTO consents ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"  # noqa: S608 - constant
_INSERT_NEW = _INSERT.replace("INSERT", "INSERT OR IGNORE", 1)
_SELECT = f"SELECT {_COLUMNS} FROM consents"  # noqa: S608 - constant
_TAKE = (
    "UPDATE consents SET uses = uses + 1 WHERE consent_id = ? AND revoked_at IS NULL "
    "AND valid_from <= ? AND ? < valid_until AND (max_uses = 0 OR uses < max_uses)"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(moment: dt.datetime) -> int:
    """Unix microseconds of an aware datetime."""
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _moment(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def take_use(conn: sqlite3.Connection, consent_id: str, at_us: int) -> str:
    """Take one use of the consent in ``conn``'s transaction: "" if taken, else why not
    (``consent_revoked``, ``consent_expired``, ``consent_exhausted``)."""
    if conn.execute(_TAKE, (consent_id, at_us, at_us)).rowcount == 1:
        return ""
    row = conn.execute(
        "SELECT revoked_at, valid_from, valid_until FROM consents WHERE consent_id = ?",
        (consent_id,),
    ).fetchone()
    if row is None or row[0] is not None:
        return "consent_revoked"  # a consent is never deleted; gone counts as withdrawn
    if not row[1] <= at_us < row[2]:
        return "consent_expired"
    return "consent_exhausted"


def insert_consent(conn: sqlite3.Connection, consent: Consent) -> str:
    """Record a granted consent in ``conn``'s transaction: "" if recorded, else
    ``consent_conflict`` (its id is taken: with 120 random bits, never in practice)."""
    cursor = conn.execute(_INSERT_NEW, _row(consent))
    return "" if cursor.rowcount == 1 else "consent_conflict"


def revoke_consent(conn: sqlite3.Connection, consent_id: str, subject: str, at_us: int) -> str:
    """Revoke the holder's consent in ``conn``'s transaction, unless it already is (""; a
    revocation is never refused here: the consent ends either way)."""
    conn.execute(
        "UPDATE consents SET revoked_at = ? WHERE consent_id = ? AND subject = ? "
        "AND revoked_at IS NULL",
        (at_us, consent_id, subject),
    )
    return ""


def _row(consent: Consent) -> tuple[Any, ...]:
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
        micros(consent.valid_from),
        micros(consent.valid_until),
        consent.max_uses,
        consent.uses,
        micros(consent.granted_at),
        None if consent.revoked_at is None else micros(consent.revoked_at),
    )


def _consent(row: tuple[Any, ...]) -> Consent:
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


class SqliteConsents:
    """``gateway.consents.ConsentStore`` on a ``SqliteStore`` (writes are group-committed)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def add(self, consent: Consent) -> None:
        row = _row(consent)
        await self._store.write(lambda c: c.execute(_INSERT, row))

    async def get(self, consent_id: str) -> Consent | None:
        row = await self._store.lookup(
            lambda c: c.execute(f"{_SELECT} WHERE consent_id = ?", (consent_id,)).fetchone()
        )
        return None if row is None else _consent(row)

    async def of_subject(self, subject: str) -> list[Consent]:
        rows = await self._store.read(
            lambda c: c.execute(
                f"{_SELECT} WHERE subject = ? ORDER BY granted_at DESC, consent_id", (subject,)
            ).fetchall()
        )
        return [_consent(row) for row in rows]

    async def revoke(self, consent_id: str, subject: str, at: dt.datetime) -> Consent | None:
        def revoke(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            conn.execute(
                "UPDATE consents SET revoked_at = ? WHERE consent_id = ? AND subject = ? "
                "AND revoked_at IS NULL",
                (micros(at), consent_id, subject),
            )
            row: tuple[Any, ...] | None = conn.execute(
                f"{_SELECT} WHERE consent_id = ? AND subject = ?", (consent_id, subject)
            ).fetchone()
            return row

        row = await self._store.write(revoke)
        return None if row is None else _consent(row)

    async def keep_justification(self, about: Justification, text: str) -> None:
        row = (about.request_id, about.org, about.reason, about.digest, text, micros(about.at))
        await self._store.write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO emergency_justifications (request_id, org, reason, "
                "digest, justification, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def justifications(self, since: dt.datetime, until: dt.datetime) -> Kept:
        """(request id, digest) -> justification of the emergency accesses kept in
        [since, until)."""
        rows = await self._store.read(
            lambda c: c.execute(
                "SELECT request_id, digest, justification FROM emergency_justifications "
                "WHERE recorded_at >= ? AND recorded_at < ?",
                (micros(since), micros(until)),
            ).fetchall()
        )
        return {(str(rid), str(digest)): str(text) for rid, digest, text in rows}


def read_justifications(db: Path) -> Kept:
    """(request id, digest) -> justification of every emergency access kept in ``db``,
    read-only (a database without the table, from before consents, has none)."""
    if not db.is_file():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            rows = conn.execute(
                "SELECT request_id, digest, justification FROM emergency_justifications"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
    return {(str(rid), str(digest)): str(text) for rid, digest, text in rows}
