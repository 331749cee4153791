"""The store under a test's gateway, reached directly: SQLite's file or PostgreSQL's schema.

Integration tests run on both stores (``conftest.pytest_generate_tests``); these helpers let a
test read or damage the rows it needs whichever store its gateway used. ``urls`` is the
``database_urls`` fixture: the PostgreSQL DSN of each data directory (none on SQLite).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["config_file", "database_text", "execute", "query", "refusing_audit_appends"]

_REFUSE_PG = """
CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries
FOR EACH ROW EXECUTE FUNCTION refuse_audit();
"""
_REFUSE_SQLITE = (
    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
)


def config_file(path: Path, data: Path, database_url: str = "") -> Path:
    """A command's settings file at ``path`` for the log in ``data``: on PostgreSQL when a
    ``database_url`` is given (a test's ``database_urls.get(data)``), else on SQLite."""
    store = f'store = "postgres"\ndatabase_url = "{database_url}"\n' if database_url else ""
    path.write_text(f'data_dir = "{data}"\n{store}')
    return path


def query(
    data: Path, urls: Mapping[Path, str], sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (``?`` placeholders) on the store of data directory ``data``."""
    dsn = urls.get(data)
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params)]
    with contextlib.closing(sqlite3.connect(data / "onecard.db")) as db:
        rows = db.execute(sql, params).fetchall()
        db.commit()
        return rows


def execute(data: Path, urls: Mapping[Path, str], sql: str) -> None:
    """Run ``sql`` (one statement, no parameters; several on PostgreSQL) on the store."""
    dsn = urls.get(data)
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # a test's literal SQL
        return
    with contextlib.closing(sqlite3.connect(data / "onecard.db")) as db:
        db.execute(sql)
        db.commit()


@contextlib.contextmanager
def refusing_audit_appends(data: Path, urls: Mapping[Path, str]) -> Iterator[None]:
    """A full or failing disk for audit appends only: every insert into the log is refused."""
    if urls.get(data):
        execute(data, urls, _REFUSE_PG)
        try:
            yield
        finally:
            execute(data, urls, "DROP TRIGGER refuse_audit ON audit_entries")
            execute(data, urls, "DROP FUNCTION refuse_audit()")
        return
    execute(data, urls, _REFUSE_SQLITE)
    try:
        yield
    finally:
        execute(data, urls, "DROP TRIGGER refuse_audit")


def database_text(data: Path, urls: Mapping[Path, str]) -> bytes:
    """Everything the store holds, as bytes to search: the SQLite files, or every row of every
    table of the schema (binary columns as their UTF-8 text where they are text, so that leaves
    read as the JSON they are)."""
    dsn = urls.get(data)
    if not dsn:
        return b"".join(p.read_bytes() for p in data.glob("onecard.db*"))
    parts: list[bytes] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        for (table,) in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value))
                    else:
                        parts.append(json.dumps(value, default=str, ensure_ascii=False).encode())
    return b"\n".join(parts)
