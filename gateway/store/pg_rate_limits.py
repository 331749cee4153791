"""The shared token buckets on PostgreSQL (table ``rate_buckets``, migration 0002): a
``TokenSource`` for ``gateway.shared_buckets``.

One round trip per ``take``: one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` that refills
the bucket from its stored (tokens, updated_at) by the server's clock (``clock_timestamp()``,
read once per statement, so processes on hosts with skewed clocks agree), takes up to ``want``
whole tokens and returns how many it took and how many are left. A bucket seen for the first
time starts full. The row lock of the update serialises concurrent takers; a taker whose clock
reading is older than the row's (it waited for that lock) refills nothing and leaves
``updated_at`` where it is, so no token is ever made twice.

The table is UNLOGGED and the sessions run with ``synchronous_commit = off``: a rate limit is not
worth a WAL flush per call, and a crash of the server refills every bucket once. The connections
are a psycopg ``AsyncConnectionPool`` on the event loop (no thread hop); a round trip that cannot
finish within ``ROUND_TRIP_S`` raises ``RateLimitUnavailable`` (fail closed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from gateway.errors import SetupError
from gateway.orgs import RateLimit
from gateway.shared_buckets import Grant, unavailable
from gateway.store.postgres import database_error, describe

__all__ = ["ROUND_TRIP_S", "PgTokenSource"]

_log = structlog.get_logger(__name__)
ROUND_TRIP_S = 1.0  # a connection from the pool and the statement, together
_CONNECT_TIMEOUT_S = 5

_TAKE = """
INSERT INTO rate_buckets AS b (bucket, tokens, granted, updated_at)
SELECT %(bucket)s, %(burst)s::float8 - least(%(want)s, %(burst)s), least(%(want)s, %(burst)s),
       now.t
FROM (SELECT clock_timestamp() AS t) AS now
ON CONFLICT (bucket) DO UPDATE SET
    (granted, tokens) = (
        SELECT least(%(want)s::float8, floor(refilled))::integer,
               refilled - least(%(want)s::float8, floor(refilled))
        FROM (
            SELECT least(%(burst)s::float8, b.tokens + %(per_s)s::float8
                   * greatest(0, extract(epoch FROM EXCLUDED.updated_at - b.updated_at)::float8))
        ) AS r (refilled)
    ),
    updated_at = greatest(b.updated_at, EXCLUDED.updated_at)
RETURNING granted, tokens
"""


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET synchronous_commit = off")
    await conn.execute(f"SET statement_timeout = {int(ROUND_TRIP_S * 1000)}")


class PgTokenSource:
    """Token buckets in the ``rate_buckets`` table of the schema ``dsn`` names."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, dsn: str, *, connect_timeout_s: float = _CONNECT_TIMEOUT_S
    ) -> PgTokenSource:
        """A source with its pool open (on the running loop); a one-line ``SetupError`` if the
        database cannot be reached."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S},
            configure=_configure,
            timeout=ROUND_TRIP_S,
            open=False,
            name="onecard-rate-limits",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg.Error as exc:
            await pool.close()
            raise SetupError(
                f"{describe(dsn)}: the shared rate limits cannot be opened ({database_error(exc)})"
            ) from None
        return cls(pool)

    async def take(self, bucket: str, limit: RateLimit, want: int) -> Grant:
        """Refill ``bucket`` and take up to ``want`` tokens of it, in one round trip."""
        params = {"bucket": bucket, "burst": limit.burst, "per_s": limit.per_s, "want": want}
        try:
            async with asyncio.timeout(ROUND_TRIP_S), self._pool.connection() as conn:
                row = await (await conn.execute(_TAKE, params)).fetchone()
        except (psycopg.Error, TimeoutError) as exc:
            _log.error("rate_limit_store_failed", bucket=bucket, error_type=type(exc).__name__)
            raise unavailable() from None
        if row is None:  # RETURNING always returns the row it wrote
            raise RuntimeError("rate_buckets: the upsert returned no row")
        return Grant(int(row[0]), float(row[1]))

    async def close(self) -> None:
        await self._pool.close()
