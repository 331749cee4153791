"""The SQLite audit log refuses to open (or, at run time, to sign) over a damaged store, binds
one origin and one current key per database, and signs idle checkpoints.

Damage is done with plain SQL on the file, as someone with the disk would do it; each refusal
must name the range of entries involved and leave the checkpoints as they were.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import root_of
from gateway.audit.selfcheck import LogDamagedError
from gateway.audit.signer import Ed25519FileSigner
from gateway.errors import StoreUnavailable
from gateway.store import SqliteStore
from gateway.store.sqlite_audit import SqliteAuditLog
from gateway.store.sqlite_keys import LogIdentityError, add_key, recorded_keys
from tests.gateway.store.test_sqlite_audit import (
    HOUR,
    ORIGIN,
    Logs,
    allow_inserts,
    append_each,
    append_in_one_batch,
    fail_inserts,
    records,
    reference_chain,
)


async def written(logs: Logs) -> None:
    """16 entries; checkpoints at 1, 11 (the first batch of the second start) and nothing later.

    Signed checkpoint 11 has the border (3, 0), (1, 4), (0, 10); the stored nodes covering
    [11, 16) are (0, 11) and (2, 3), whose merge completes (1, 5), (2, 2), (3, 1) and (4, 0).
    """
    store, log = logs.open()
    await append_each(log, records(10))
    await store.close()
    store, log = logs.open()
    await append_each(log, records(6, first=10))
    await store.close()


def sql(db: Path, *statements: str) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def flip(db: Path, level: int, index: int) -> None:
    """Flip one bit of the stored hash of node (level, index)."""
    row = ((index + 1) << level) - 1
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        (nodes,) = conn.execute("SELECT nodes FROM audit_entries WHERE idx = ?", (row,)).fetchone()
        changed = bytearray(nodes)
        changed[level * 32 + 7] ^= 0x10
        conn.execute("UPDATE audit_entries SET nodes = ? WHERE idx = ?", (bytes(changed), row))


def lengthen(db: Path, row: int) -> None:
    """32 more bytes after the node hashes of entry ``row``."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        (nodes,) = conn.execute("SELECT nodes FROM audit_entries WHERE idx = ?", (row,)).fetchone()
        conn.execute(
            "UPDATE audit_entries SET nodes = ? WHERE idx = ?", (bytes(nodes) + bytes(32), row)
        )


def stored_checkpoints(db: Path) -> list[tuple[int, bytes]]:
    """Every checkpoint row as stored (whatever its types)."""
    with closing(sqlite3.connect(db)) as conn:
        return list(conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size"))


def set_leaf_index(db: Path, idx: int, named: int) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        (leaf,) = conn.execute("SELECT leaf FROM audit_entries WHERE idx = ?", (idx,)).fetchone()
        changed = bytes(leaf).replace(b'{"i":%d,' % idx, b'{"i":%d,' % named, 1)
        conn.execute("UPDATE audit_entries SET leaf = ? WHERE idx = ?", (changed, idx))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "a border node of the signed tree": (lambda db: flip(db, 1, 4), "[0, 11)"),
    "the signed tree's newest leaf node": (lambda db: flip(db, 0, 10), "[0, 11)"),
    "a node beyond the checkpoint": (lambda db: flip(db, 2, 3), "[8, 16)"),
    "the newest leaf node": (lambda db: flip(db, 0, 15), "[15, 16)"),
    "an inner node the next checkpoint hashes": (lambda db: flip(db, 1, 5), "[10, 12)"),
    "nodes stored as TEXT": (
        lambda db: sql(db, "UPDATE audit_entries SET nodes = 'x' WHERE idx = 9"),
        "[8, 10)",
    ),
    "nodes stored as INTEGER": (
        lambda db: sql(db, "UPDATE audit_entries SET nodes = 7 WHERE idx = 7"),
        "[0, 8)",
    ),
    "nodes stored as TEXT that is not UTF-8": (
        lambda db: sql(db, "UPDATE audit_entries SET nodes = CAST(nodes AS TEXT) WHERE idx = 7"),
        "[0, 8)",
    ),
    "the newest leaf stored as TEXT": (
        lambda db: sql(db, "UPDATE audit_entries SET leaf = CAST(leaf AS TEXT) WHERE idx = 15"),
        "[15, 16)",
    ),
    "a node row missing": (
        lambda db: sql(db, "DELETE FROM audit_entries WHERE idx = 13"),
        "[12, 14)",
    ),
    "the newest entry naming another index": (
        lambda db: set_leaf_index(db, 15, 14),
        "[15, 16)",
    ),
    "entries of the signed tree deleted": (
        lambda db: sql(db, "DELETE FROM audit_entries WHERE idx >= 10"),
        "[10, 11)",
    ),
    "the first entries deleted": (
        lambda db: sql(db, "DELETE FROM audit_entries WHERE idx < 2"),
        "[0, 2)",
    ),
    "every checkpoint deleted (a fork would be signed over anything)": (
        lambda db: sql(db, "DELETE FROM audit_checkpoints"),
        "[0, 16)",
    ),
    "an over-long node row": (
        lambda db: lengthen(db, 15),
        "[12, 16)",  # the first node read from that row covers these entries
    ),
    "the checkpoint note stored as TEXT": (
        lambda db: sql(db, "UPDATE audit_checkpoints SET note = 'x' WHERE size = 11"),
        "[0, 11)",
    ),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_a_damaged_store_refuses_to_open_naming_the_range_and_signs_nothing(
    logs: Logs, kind: str
) -> None:
    await written(logs)
    damage, where = DAMAGE[kind]
    damage(logs.db)
    before = stored_checkpoints(logs.db)
    with pytest.raises(LogDamagedError) as caught:
        logs.open(interval=0)
    message = str(caught.value)
    assert f"entries {where}" in message
    assert "onecard audit verify" in message
    assert "\n" not in message
    assert stored_checkpoints(logs.db) == before


async def test_a_checkpoint_signed_by_another_key_refuses_to_open(
    logs: Logs, tmp_path: Path
) -> None:
    await written(logs)
    other = Ed25519FileSigner.generate(tmp_path / "other.key", ORIGIN)
    store, log = Logs(tmp_path / "other.db", other).open()
    await append_each(log, records(11))
    await log.checkpoint_now()
    (_, forged), *_ = [cp for cp in stored_checkpoints(tmp_path / "other.db") if cp[0] == 11]
    await store.close()
    with closing(sqlite3.connect(logs.db, isolation_level=None)) as conn:
        conn.execute("UPDATE audit_checkpoints SET note = ? WHERE size = 11", (forged,))
    with pytest.raises(LogDamagedError, match=r"entries \[0, 11\): signed checkpoint 11 does"):
        logs.open()


async def test_an_intact_store_reopens_and_its_next_checkpoint_extends_the_signed_one(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    await written(logs)
    _, log = logs.open(interval=0)
    await log.checkpoint_now()
    _, hashes = reference_chain(records(16))
    note = await log.latest_checkpoint()
    assert note is not None
    verifiers = VerifierSet([Verifier.parse(signer.verifier_key())])
    assert open_checkpoint(note, verifiers, ORIGIN) == Checkpoint(ORIGIN, 16, root_of(hashes))


async def test_after_a_rollback_a_damaged_store_fails_every_write_and_signs_nothing(
    logs: Logs,
) -> None:
    store, log = logs.open(interval=0)
    await append_each(log, records(5))
    flip(logs.db, 2, 0)  # under signed checkpoint 5, while the log runs
    fail_inserts(logs.db, "audit_entries")
    failed = await append_in_one_batch(store, log, records(2, first=5))
    assert all(isinstance(outcome, StoreUnavailable) for outcome in failed)
    allow_inserts(logs.db, "audit_entries")
    before = stored_checkpoints(logs.db)

    with pytest.raises(StoreUnavailable):
        await log.append(records(1, first=5)[0])
    with pytest.raises(StoreUnavailable):
        await log.checkpoint_now()
    assert stored_checkpoints(logs.db) == before
    assert await log.size() == 5


async def test_after_a_rollback_an_intact_store_keeps_signing(logs: Logs) -> None:
    store, log = logs.open(interval=0)
    await append_each(log, records(5))
    fail_inserts(logs.db, "audit_entries")
    await append_in_one_batch(store, log, records(2, first=5))
    allow_inserts(logs.db, "audit_entries")
    await append_each(log, records(1, first=5))
    assert max(size for size, _ in stored_checkpoints(logs.db)) == 6


# -- one origin, one current key -------------------------------------------------------------


async def test_the_first_start_records_the_origin_and_key(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    logs.open()
    assert recorded_keys(logs.db) == [(ORIGIN, signer.verifier_key())]


async def test_another_origin_refuses_to_open(logs: Logs, tmp_path: Path) -> None:
    await written(logs)
    other = Ed25519FileSigner.generate(tmp_path / "o.key", "other.example/audit")
    with pytest.raises(LogIdentityError, match=r"'other\.example/audit' is not this log's origin"):
        Logs(logs.db, other).open()
    assert recorded_keys(logs.db) == [(ORIGIN, logs.signer.verifier_key())]


async def test_another_key_refuses_to_open(logs: Logs, tmp_path: Path) -> None:
    await written(logs)
    other = Ed25519FileSigner.generate(tmp_path / "o.key", ORIGIN)
    with pytest.raises(LogIdentityError, match="is not this log's key"):
        Logs(logs.db, other).open()


async def test_after_a_rotation_the_new_key_signs_and_the_retired_one_is_refused(
    logs: Logs, tmp_path: Path
) -> None:
    await written(logs)
    new = Ed25519FileSigner.generate(tmp_path / "new.key", ORIGIN)
    assert add_key(logs.db, new) == [logs.signer.verifier_key(), new.verifier_key()]
    with pytest.raises(LogIdentityError, match="is a retired key of this log"):
        logs.open()
    rotated = Logs(logs.db, new)
    _, log = rotated.open()  # its newest checkpoint, by the old key, still opens
    await log.append(records(1, first=16)[0])
    note = await log.latest_checkpoint()
    assert note is not None
    new_keys = VerifierSet([Verifier.parse(new.verifier_key())])
    assert open_checkpoint(note, new_keys, ORIGIN).size == 17
    await rotated.close_all()


async def test_a_schema_4_log_is_bound_to_the_key_that_signed_it(
    logs: Logs, tmp_path: Path
) -> None:
    await written(logs)
    sql(logs.db, "DROP TABLE audit_keys", "PRAGMA user_version = 4")
    other = Ed25519FileSigner.generate(tmp_path / "o.key", ORIGIN)
    with pytest.raises(LogDamagedError, match="does not open with the log's keys"):
        Logs(logs.db, other).open()
    assert recorded_keys(logs.db) == []
    logs.open()
    assert recorded_keys(logs.db) == [(ORIGIN, logs.signer.verifier_key())]


async def test_a_schema_4_log_refuses_another_origin_before_recording_it(
    logs: Logs, tmp_path: Path
) -> None:
    await written(logs)
    sql(logs.db, "DROP TABLE audit_keys", "PRAGMA user_version = 4")
    other = Ed25519FileSigner.generate(tmp_path / "o.key", "other.example/audit")
    with pytest.raises(LogIdentityError, match="is not the origin of this log's checkpoints"):
        Logs(logs.db, other).open()
    assert recorded_keys(logs.db) == []


# -- idle checkpoints ------------------------------------------------------------------------


async def wait_for_checkpoint(db: Path, size: int, within_s: float = 10.0) -> list[int]:
    """The checkpoint sizes once one of ``size`` exists (or ``within_s`` has passed)."""
    for _ in range(int(within_s / 0.05)):
        sizes = sorted(s for s, _ in stored_checkpoints(db))
        if size in sizes:
            return sizes
        await asyncio.sleep(0.05)
    return sorted(s for s, _ in stored_checkpoints(db))


async def test_an_idle_log_signs_the_entries_no_checkpoint_covers(logs: Logs) -> None:
    _, log = logs.open(interval=0.2)
    await append_each(log, records(3))  # the first batch signs; the others fall in its interval
    assert await wait_for_checkpoint(logs.db, 3) == [1, 3]


async def test_a_reopened_log_signs_the_entries_a_crash_left_uncovered(logs: Logs) -> None:
    store, log = logs.open(interval=HOUR)
    await append_each(log, records(3))
    await store.close()  # no checkpoint on close: as after a crash
    logs.open(interval=0.2)
    assert await wait_for_checkpoint(logs.db, 3) == [1, 3]


async def test_an_idle_log_does_not_sign_before_its_interval(logs: Logs) -> None:
    store = SqliteStore(logs.db)
    log = SqliteAuditLog(store, logs.signer, checkpoint_interval_s=HOUR)
    await append_each(log, records(2))
    await asyncio.sleep(0.2)
    assert sorted(s for s, _ in stored_checkpoints(logs.db)) == [1]
    await store.close()
