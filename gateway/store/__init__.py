"""Durable stores. One interface (``base``), implementations per database (SQLite, PostgreSQL).

Every write that a response depends on (a redeemed token, an audit entry) is durable before the
response is released; writes from concurrent requests are group-committed (one transaction and
one fsync for many records). The log's rules are the store-neutral ``gateway.audit.sequencer``;
a store reads and writes its rows.

``open_store`` and ``read_log`` pick the implementation by ``Settings.store``: ``"sqlite"``
(``DATA_DIR/onecard.db``, the embedded default) or ``"postgres"`` (the database
``Settings.database_url`` names, migrated by ``onecard db upgrade``: ``pg_schema``); anything
else is a one-line ``SetupError``. The PostgreSQL modules are imported only when chosen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from gateway.errors import SetupError
from gateway.store.base import LogSnapshot, SignerFor, Store, StoredLog
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_audit import SqliteLogStore
from gateway.store.sqlite_snapshot import read_only

__all__ = [
    "STORE_KINDS",
    "LogSnapshot",
    "SignerFor",
    "SqliteStore",
    "Store",
    "StoredLog",
    "database_path",
    "describe_store",
    "open_store",
    "read_log",
]

STORE_KINDS = ("sqlite", "postgres")


def _known(kind: str) -> None:
    if kind not in STORE_KINDS:
        raise SetupError(
            f"store = {kind!r}: not a store this gateway has (it has: {', '.join(STORE_KINDS)})"
        )


def database_path(kind: str, data_dir: Path) -> Path:
    """Where the SQLite store keeps the log of ``data_dir``; refuses any other kind."""
    _known(kind)
    if kind != "sqlite":
        raise SetupError(f"store = {kind!r} keeps no database file in {data_dir}")
    return data_dir / "onecard.db"


def describe_store(kind: str, data_dir: Path, database_url: str = "") -> str:
    """Where the log is, for messages: the SQLite file, or the database without a password."""
    _known(kind)
    if kind == "postgres":
        from gateway.store.postgres import describe  # noqa: PLC0415 - only when chosen

        return describe(database_url)
    return str(database_path(kind, data_dir))


async def open_store(
    kind: str,
    data_dir: Path,
    signer_for: SignerFor,
    *,
    checkpoint_interval_s: float,
    database_url: str = "",
) -> Store:
    """Open the store of ``kind`` (``data_dir``'s file, or ``database_url``): its log's
    identity bound and self-checked. Nothing stays open if that fails."""
    _known(kind)
    if kind == "postgres":
        from gateway.store.pg_audit import PgLogStore  # noqa: PLC0415 - only when chosen

        return await PgLogStore.open(
            database_url, signer_for, checkpoint_interval_s=checkpoint_interval_s
        )
    return await SqliteLogStore.open(
        database_path(kind, data_dir), signer_for, checkpoint_interval_s=checkpoint_interval_s
    )


@contextlib.contextmanager
def read_log(
    kind: str, data_dir: Path, *, served: bool, database_url: str = ""
) -> Iterator[LogSnapshot]:
    """One read-only snapshot of the log of ``data_dir`` (or ``database_url``), creating no
    file there (``served``: a live gateway writes it meanwhile). Refuses with a one-line
    ``SetupError``."""
    _known(kind)
    if kind == "postgres":
        from gateway.store.pg_audit import read_only as pg_read_only  # noqa: PLC0415

        with pg_read_only(database_url) as pg_snapshot:
            yield pg_snapshot
        return
    with read_only(database_path(kind, data_dir), served=served) as snapshot:
        yield snapshot
