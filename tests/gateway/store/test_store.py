import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import SetupError, StoreUnavailable
from gateway.store import SqliteStore


async def test_concurrent_writes_are_all_durable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onecard.db")

    def insert(i: int) -> Callable[[sqlite3.Connection], int]:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO redeemed_tokens VALUES (?, ?)", (i.to_bytes(16, "big"), 2_000_000_000)
            )
            return i

        return op

    assert await asyncio.gather(*(store.write(insert(i)) for i in range(500))) == list(range(500))
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
    assert await store.write(lambda conn: conn.execute("SELECT 7").fetchone()[0]) == 7
    await store.close()
    with pytest.raises(StoreUnavailable, match="shutting down"):
        await store.write(lambda conn: None)


def test_a_database_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "onecard.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(SetupError, match="newer than this gateway"):
        SqliteStore(path)


async def test_a_lookup_runs_on_the_callers_thread_and_sees_what_was_written(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "onecard.db")
    token = b"t" * 16
    assert not await store.token_redeemed(token)
    await store.write(
        lambda c: c.execute("INSERT INTO redeemed_tokens VALUES (?, ?)", (token, 2_000_000_000))
    )
    assert await store.token_redeemed(token)  # committed writes are seen at once
    here = threading.get_ident()
    assert await store.lookup(lambda c: threading.get_ident()) == here
    await store.close()


async def test_a_lookup_on_a_locked_database_moves_to_a_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onecard.db")
    here, tries = threading.get_ident(), []

    def query(conn: sqlite3.Connection) -> int:
        tries.append(threading.get_ident())
        if len(tries) == 1:
            raise sqlite3.OperationalError("database is locked")
        return 7

    assert await store.lookup(query) == 7
    assert tries[0] == here and tries[1] != here  # the retry ran in a worker thread
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store.lookup(lambda c: c.execute("SELECT * FROM no_such_table").fetchone())
    await store.close()
