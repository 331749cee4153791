"""The shared token buckets' SQL (``gateway.store.pg_rate_limits``) on real PostgreSQL: a bucket
starts full, refills by the server's clock and never beyond its burst, a taker with an older
clock reading makes no tokens, concurrent takers from separate pools never take more than the
bucket holds, and a failure is UNAVAILABLE. Elapsed time is made by moving ``updated_at`` back
in the database, not by sleeping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest

from gateway.errors import RateLimitUnavailable, SetupError
from gateway.orgs import RateLimit
from gateway.store.pg_rate_limits import PgTokenSource
from tests.postgres import fresh_schema

LIMIT = RateLimit(per_s=10, burst=5)


@contextlib.asynccontextmanager
async def _source(dsn: str) -> AsyncIterator[PgTokenSource]:
    source = await PgTokenSource.open(dsn)
    try:
        yield source
    finally:
        await source.close()


def _age(dsn: str, bucket: str, seconds: float) -> None:
    """Make ``bucket`` last updated ``seconds`` earlier (negative: later) than it says."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE rate_buckets SET updated_at = updated_at - make_interval(secs => %s)"
            " WHERE bucket = %s",
            (seconds, bucket),
        )


def _row(dsn: str, bucket: str) -> tuple[float, object]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT tokens, updated_at FROM rate_buckets WHERE bucket = %s", (bucket,)
        ).fetchone()
    assert row is not None
    return float(row[0]), row[1]


async def test_a_new_bucket_starts_full_and_gives_no_more_than_it_holds() -> None:
    with fresh_schema() as dsn:
        async with _source(dsn) as source:
            first = await source.take("lib", LIMIT, 3)
            second = await source.take("lib", LIMIT, 3)
            third = await source.take("lib", LIMIT, 3)
    assert (first.granted, first.left) == (3, 2.0)
    assert second.granted == 2 and second.left < 1.0
    assert third.granted == 0 and third.left < 1.0


async def test_a_bucket_refills_at_its_rate_by_the_servers_clock_up_to_its_burst() -> None:
    with fresh_schema() as dsn:
        async with _source(dsn) as source:
            await source.take("lib", LIMIT, 5)  # empty
            _age(dsn, "lib", 0.3)  # 3 tokens at 10/s
            refilled = await source.take("lib", LIMIT, 8)
            _age(dsn, "lib", 3600)
            full = await source.take("lib", LIMIT, 8)
    assert refilled.granted == 3 and refilled.left < 0.2
    assert (full.granted, full.left) == (5, 0.0)


async def test_a_taker_whose_clock_reading_is_older_than_the_rows_makes_no_tokens() -> None:
    """As a taker that waited for the row's lock: its clock_timestamp() precedes updated_at."""
    with fresh_schema() as dsn:
        async with _source(dsn) as source:
            await source.take("lib", LIMIT, 5)
            _age(dsn, "lib", -2.0)  # updated "2 s from now"
            _, before = _row(dsn, "lib")
            late = await source.take("lib", LIMIT, 5)
            tokens, after = _row(dsn, "lib")
    assert late.granted == 0
    assert tokens < 1.0
    assert after == before  # updated_at never moves back


async def test_takers_on_separate_pools_never_take_more_than_the_bucket_holds() -> None:
    limit = RateLimit(per_s=0.001, burst=50)  # refills 1 token in 1,000 s: none during the test
    with fresh_schema() as dsn:
        async with _source(dsn) as one, _source(dsn) as two:
            grants = await asyncio.gather(
                *(source.take("hosp", limit, 2) for source in (one, two) for _ in range(40))
            )
    assert sum(g.granted for g in grants) == 50


async def test_the_table_is_unlogged_and_the_sessions_skip_the_wal_flush() -> None:
    with fresh_schema() as dsn:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT relpersistence FROM pg_class WHERE oid = 'rate_buckets'::regclass"
            ).fetchone()
        async with _source(dsn) as source, source._pool.connection() as conn:
            setting = await (await conn.execute("SHOW synchronous_commit")).fetchone()
    assert row == ("u",)
    assert setting == ("off",)


async def test_a_failing_database_is_unavailable_not_unlimited() -> None:
    with fresh_schema() as dsn:
        async with _source(dsn) as source:
            await source.take("lib", LIMIT, 1)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP TABLE rate_buckets")
            with pytest.raises(RateLimitUnavailable) as info:
                await source.take("lib", LIMIT, 1)
    assert info.value.code.name == "UNAVAILABLE"
    assert info.value.reason == "rate_limit_unavailable"


async def test_an_unreachable_database_stops_start_up_in_one_line() -> None:
    with pytest.raises(SetupError) as info:
        await PgTokenSource.open("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=1)
    assert "127.0.0.1:1" in str(info.value)
    assert "shared rate limits cannot be opened" in str(info.value)
    assert "\n" not in str(info.value)
