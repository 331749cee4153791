import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.errors import SetupError, StoreUnavailable
from gateway.store import SqliteStore


async def test_a_redeemed_token_stays_redeemed_after_reopening(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onecard.db")
    assert await store.redeem_token(b"a" * 16, 2_000_000_000)
    assert not await store.redeem_token(b"a" * 16, 2_000_000_000)
    await store.close()

    reopened = SqliteStore(tmp_path / "onecard.db")
    assert not await reopened.redeem_token(b"a" * 16, 2_000_000_000)
    assert await reopened.redeem_token(b"b" * 16, 2_000_000_000)
    await reopened.close()


async def test_concurrent_writes_are_all_durable_and_share_transactions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onecard.db")
    ids = [i.to_bytes(16, "big") for i in range(500)]
    results = await asyncio.gather(*(store.redeem_token(i, 2_000_000_000) for i in ids))
    assert all(results)
    # A duplicate inside the same burst is refused exactly once.
    again = await asyncio.gather(*(store.redeem_token(ids[0], 2_000_000_000) for _ in range(5)))
    assert again == [False] * 5
    await store.close()
    with sqlite3.connect(tmp_path / "onecard.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM redeemed_tokens").fetchone()
    assert count == 500


async def test_a_failing_batch_fails_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onecard.db")

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(StoreUnavailable):
        await store.write(broken)
    # The store keeps working after a failed batch.
    assert await store.redeem_token(b"c" * 16, 2_000_000_000)
    await store.close()
    with pytest.raises(StoreUnavailable, match="shutting down"):
        await store.redeem_token(b"d" * 16, 2_000_000_000)


def test_a_database_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "onecard.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(SetupError, match="newer than this gateway"):
        SqliteStore(path)
