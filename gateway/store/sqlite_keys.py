"""The audit log's identity in its SQLite database, read and changed while the log is stopped.

A data directory holds one log. Its origin and every key that signed it are rows of
``audit_keys``; the log records them on its first start and compares them on every later one
(``gateway.audit.sequencer``: ``Sequencer.open``, ``check_identity``). ``add_key`` is the one
way to change keys (``onecard audit rotate-key``): the old keys stay recorded, and published,
so that their checkpoints keep verifying.
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from pathlib import Path

from gateway.audit.record import rfc3339
from gateway.audit.sequencer import LogIdentityError, check_identity
from gateway.audit.signer import Signer
from gateway.store.sqlite import connect, log_size

__all__ = ["LogIdentityError", "add_key", "check_identity", "recorded_keys"]


def recorded_keys(db: Path) -> list[tuple[str, str]]:
    """The (origin, verifier key) of every key the log in ``db`` has had, oldest first."""
    with closing(connect(db, readonly=True)) as conn:
        rows = conn.execute("SELECT origin, verifier_key FROM audit_keys ORDER BY seq").fetchall()
    return [(str(origin), str(key)) for origin, key in rows]


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
