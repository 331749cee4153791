"""A read-only snapshot of the log in a SQLite database, creating no file beside it.

``onecard audit export`` and the demo read a log through it (``gateway.store.read_log``).
Beside a live gateway the database is opened ``mode=ro`` (its ``-wal`` and ``-shm`` files
exist). A stopped gateway's database is opened ``immutable=1``, unless a ``-wal`` holds writes
not yet in it: then it is read through its existing ``-shm``, or, without one or in a read-only
directory, from a private copy of the two files. Everything is read in one transaction: one
snapshot. A database that cannot be read is a one-line ``SetupError``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.errors import SetupError
from gateway.store.sqlite import log_size

__all__ = ["read_only"]


class _Snapshot:
    """``base.LogSnapshot`` on one read transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def checkpoints(self) -> list[tuple[int, bytes]]:
        rows = self._conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size")
        return [(int(size), bytes(note)) for size, note in rows]

    def size(self) -> int:
        return log_size(self._conn)

    def leaves(self, start: int, end: int) -> list[bytes]:
        """The stored leaves as bytes, whatever type a damaged row holds (the verifier judges)."""
        rows = self._conn.execute(
            "SELECT CAST(leaf AS BLOB) FROM audit_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [bytes(leaf) for (leaf,) in rows]


@contextlib.contextmanager
def read_only(database: Path, *, served: bool) -> Iterator[_Snapshot]:
    """The log in ``database``, read-only, in one snapshot (see the module docstring)."""
    if not database.is_file():
        raise SetupError(f"{database}: no gateway database here (see --data-dir)")
    try:
        with _connect(database, served) as conn, conn:
            conn.execute("BEGIN")
            yield _Snapshot(conn)
    except sqlite3.Error as e:
        raise SetupError(f"{database}: cannot read the audit log ({e})") from None


@contextlib.contextmanager
def _connect(database: Path, served: bool) -> Iterator[sqlite3.Connection]:
    wal = database.with_name(database.name + "-wal")
    shm = database.with_name(database.name + "-shm")
    pending = wal.exists() and wal.stat().st_size > 0
    with tempfile.TemporaryDirectory(prefix="onecard-export-") as scratch:
        if served or not pending:
            uri = database.resolve().as_uri() + ("?mode=ro" if served else "?mode=ro&immutable=1")
        elif shm.exists() and os.access(database.parent, os.W_OK) and os.access(shm, os.W_OK):
            uri = database.resolve().as_uri() + "?mode=ro"
        else:
            copy = Path(scratch) / database.name
            shutil.copyfile(database, copy)
            shutil.copyfile(wal, copy.with_name(wal.name))
            uri = copy.as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True)
            names = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        except sqlite3.Error as e:
            raise SetupError(f"{database}: cannot read the database ({e})") from None
        try:
            if ("audit_entries",) not in names:
                raise SetupError(
                    f"{database}: holds no audit log yet (made by an older gateway: start the "
                    "gateway once to upgrade it)"
                )
            yield conn
        finally:
            conn.close()
