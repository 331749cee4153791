"""PostgreSQL for tests: a schema of its own per test, on the server of the test machine.

The server is ``ONECARD_TEST_DATABASE_URL`` (default: 127.0.0.1:5432, user ``postgres``,
database ``test``, trust auth). When it is unreachable, a test that needs it skips with a
one-line reason, except under ``CI=true``, where it fails: CI promises PostgreSQL.
Each test gets a fresh schema (``fresh_schema``), migrated by ``pg_schema.upgrade`` as
``onecard db upgrade`` does, and dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from gateway.audit.signer import Signer
from gateway.store import Store, open_store, pg_schema

SERVER = os.environ.get("ONECARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ("sqlite", "postgres")
"""The store kinds interface tests run on."""


def unreachable() -> str | None:
    """Why the test server cannot be used, or None."""
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"PostgreSQL at {SERVER} is not reachable ({first})"
    return None


def require_postgres() -> None:
    """Skip (or, with CI=true, fail) the calling test when the server is unreachable."""
    why = unreachable()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI needs it")
    pytest.skip(why)


@contextlib.contextmanager
def fresh_schema(*, upgraded: bool = True) -> Iterator[str]:
    """A DSN whose ``search_path`` is a new, empty schema (migrated unless not ``upgraded``);
    the schema and everything in it is dropped afterwards."""
    require_postgres()
    name = f"onecard_t_{secrets.token_hex(6)}"
    dsn = make_conninfo(SERVER, options=f"-csearch_path={name}")
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        try:
            if upgraded:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    pg_schema.upgrade(conn)
            yield dsn
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE')


@dataclass(frozen=True)
class Place:
    """Where a test's store lives: a data directory, and for PostgreSQL its own schema."""

    kind: str
    data_dir: Path
    database_url: str = ""

    async def open(self, signer: Signer, *, checkpoint_interval_s: float = 3600.0) -> Store:
        """Open (or reopen) the store here with ``signer``, as the gateway does."""
        return await open_store(
            self.kind,
            self.data_dir,
            lambda _keys: signer,
            checkpoint_interval_s=checkpoint_interval_s,
            database_url=self.database_url,
        )


@contextlib.contextmanager
def place_of(kind: str, data_dir: Path) -> Iterator[Place]:
    """A fresh place for a store of ``kind`` (a new schema for PostgreSQL, dropped after)."""
    if kind == "postgres":
        with fresh_schema() as dsn:
            yield Place(kind, data_dir, dsn)
    else:
        yield Place(kind, data_dir)
