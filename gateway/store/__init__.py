"""Durable stores. One interface (``base``), implementations per database (SQLite here).

Every write that a response depends on (a redeemed token, an audit entry) is durable before the
response is released; writes from concurrent requests are group-committed (one transaction and
one fsync for many records). The log's rules are the store-neutral ``gateway.audit.sequencer``;
a store reads and writes its rows.

``open_store`` and ``read_log`` pick the implementation by ``Settings.store`` (only
``"sqlite"`` today: ``DATA_DIR/onecard.db``); anything else is a one-line ``SetupError``.
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
    "open_store",
    "read_log",
]

STORE_KINDS = ("sqlite",)


def database_path(kind: str, data_dir: Path) -> Path:
    """Where a store of ``kind`` keeps the log of ``data_dir``; refuses an unknown kind."""
    if kind != "sqlite":
        raise SetupError(
            f"store = {kind!r}: not a store this gateway has (it has: {', '.join(STORE_KINDS)})"
        )
    return data_dir / "onecard.db"


async def open_store(
    kind: str, data_dir: Path, signer_for: SignerFor, *, checkpoint_interval_s: float
) -> Store:
    """Open the store of ``kind`` for ``data_dir``: its log's identity bound and self-checked.

    Nothing stays open if that fails."""
    return await SqliteLogStore.open(
        database_path(kind, data_dir), signer_for, checkpoint_interval_s=checkpoint_interval_s
    )


@contextlib.contextmanager
def read_log(kind: str, data_dir: Path, *, served: bool) -> Iterator[LogSnapshot]:
    """One read-only snapshot of the log in ``data_dir``, creating no file there (``served``:
    a live gateway writes it meanwhile). Refuses with a one-line ``SetupError``."""
    with read_only(database_path(kind, data_dir), served=served) as snapshot:
        yield snapshot
