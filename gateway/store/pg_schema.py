"""The PostgreSQL schema: versioned migrations, applied by ``onecard db upgrade``, checked on start.

Migrations are the numbered SQL files of ``gateway/store/pg_migrations`` (``0001_initial.sql``,
...): ``upgrade`` applies those newer than the database's version in order, each in one
transaction together with its row in ``schema_version``, under a transaction-level advisory
lock so that two upgrades never interleave. Nothing else writes DDL: a gateway only checks
(``check``) and refuses a schema older than it knows ("run onecard db upgrade") or newer
(another, newer gateway migrated it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from gateway.errors import SetupError

__all__ = ["LATEST", "MIGRATIONS", "Migration", "check", "current_version", "upgrade"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_UPGRADE_LOCK = 0x0C_A2_D0_01  # pg_advisory_xact_lock key of `onecard db upgrade`
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step of the schema."""

    version: int
    name: str
    sql: str


def _migrations() -> tuple[Migration, ...]:
    found = []
    for item in resources.files("gateway.store.pg_migrations").iterdir():
        match = _NAME.match(item.name)
        if match:
            found.append(Migration(int(match[1]), match[2], item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("gateway/store/pg_migrations: versions must count up from 0001")
    return tuple(found)


MIGRATIONS = _migrations()
LATEST = MIGRATIONS[-1].version
"""The schema version this gateway serves on."""


def current_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The database's schema version (0: never upgraded)."""
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def upgrade(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, list[Migration]]:
    """Apply every migration newer than the database's schema, each in one transaction;
    (the version before, the migrations applied). Refuses a schema newer than this gateway's."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
        conn.execute(_VERSION_TABLE)
        before = current_version(conn)
    _refuse_newer(before)
    applied = []
    for migration in MIGRATIONS[before:]:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
            if current_version(conn) >= migration.version:  # another upgrade got there first
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        applied.append(migration)
    return before, applied


def check(conn: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """Refuse to serve on a schema this gateway does not know (one-line ``SetupError``)."""
    found = conn.execute("SELECT current_schema() IS NOT NULL").fetchone()
    if not found or not found[0]:
        raise SetupError(
            f"{where}: no schema of its search_path exists; create it (CREATE SCHEMA) and run "
            f"`onecard db upgrade` (with the same database_url)"
        )
    version = current_version(conn)
    _refuse_newer(version, where)
    if version < LATEST:
        state = "has no OneCard schema" if version == 0 else f"has schema version {version}"
        raise SetupError(
            f"{where}: the database {state}; this gateway needs version {LATEST}: run "
            f"`onecard db upgrade` (with the same database_url) first"
        )


def _refuse_newer(version: int, where: str = "the database") -> None:
    if version > LATEST:
        raise SetupError(
            f"{where}: database schema version {version} is newer than this gateway "
            f"({LATEST}); a newer gateway migrated it: upgrade the gateway"
        )
