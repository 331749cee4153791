"""The audit log's identity in its database: its origin and every key that signed it.

A data directory holds one log. The first start records its origin and verifier key in
``audit_keys`` (a log from before schema 5 too, once its newest checkpoint has been checked
against that key); every later start compares, so that another ``audit_origin`` or a key file
that is not the log's current key is refused with one line instead of signing checkpoints that
no published key set verifies. ``add_key`` is the one way to change keys (``onecard audit
rotate-key``): the old keys stay recorded, and published, so that their checkpoints keep
verifying.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from gateway.audit.record import rfc3339
from gateway.audit.signer import Signer
from gateway.errors import SetupError
from gateway.store.sqlite import connect
from gateway.store.sqlite_search import log_size

__all__ = ["LogIdentityError", "add_key", "bind_identity", "check_identity", "recorded_keys"]


class LogIdentityError(SetupError):
    """The configured origin or signing key is not the one this data directory's log has."""


def recorded_keys(db: Path) -> list[tuple[str, str]]:
    """The (origin, verifier key) of every key the log in ``db`` has had, oldest first."""
    with closing(connect(db, readonly=True)) as conn:
        rows = conn.execute("SELECT origin, verifier_key FROM audit_keys ORDER BY seq").fetchall()
    return [(str(origin), str(key)) for origin, key in rows]


def bind_identity(
    db: Path, signer: Signer, load: Callable[[sqlite3.Connection], object]
) -> list[str]:
    """Check ``signer`` against the origin and current key recorded for the log in ``db``.

    A log without recorded keys (a new one, or one from schema 4) records ``signer``'s, after
    ``load`` (the self-check, which opens the newest checkpoint with that key) has passed.
    Returns every verifier key of the log, oldest first (the published key set).
    """
    mine = signer.verifier_key()
    with closing(connect(db)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute("SELECT origin, verifier_key FROM audit_keys ORDER BY seq")
            keys = [(str(origin), str(key)) for origin, key in rows]
            if not keys:
                load(conn)
                conn.execute(
                    "INSERT INTO audit_keys (origin, verifier_key, from_size, added_at) "
                    "VALUES (?, ?, ?, ?)",
                    (signer.name, mine, log_size(conn), _now()),
                )
                keys = [(signer.name, mine)]
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    check_identity(db, signer, keys)
    return [key for _, key in keys]


def check_identity(db: Path, signer: Signer, keys: list[tuple[str, str]]) -> None:
    """Refuse ``signer`` unless it is the current key (and origin) among the log's ``keys``."""
    origin, current = keys[-1]
    if signer.name != origin:
        raise LogIdentityError(
            f"{db}: audit_origin {signer.name!r} is not this log's origin {origin!r}; one data "
            f"directory keeps one log: set audit_origin = {origin!r} or use another data_dir"
        )
    mine = signer.verifier_key()
    if mine == current:
        return
    what = "a retired key of this log" if mine in [k for _, k in keys] else "not this log's key"
    raise LogIdentityError(
        f"{db}: the audit signing key {_key_name(mine)} is {what}; its current key is "
        f"{_key_name(current)}: restore that key file (keys/audit-log.key), or change keys "
        f"deliberately with `onecard audit rotate-key`"
    )


def add_key(db: Path, signer: Signer) -> list[str]:
    """Record ``signer`` as the log's current key (the log must be stopped); every key, oldest
    first. The old keys stay: their checkpoints keep verifying."""
    with closing(connect(db)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            keys = [str(k) for (k,) in conn.execute("SELECT verifier_key FROM audit_keys")]
            conn.execute(
                "INSERT INTO audit_keys (origin, verifier_key, from_size, added_at) "
                "VALUES (?, ?, ?, ?)",
                (signer.name, signer.verifier_key(), log_size(conn), _now()),
            )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    return [*keys, signer.verifier_key()]


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


def _key_name(verifier_key: str) -> str:
    name, _, rest = verifier_key.partition("+")
    return f"{name}+{rest.partition('+')[0]}"
