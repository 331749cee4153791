"""Rate limits shared by every gateway process: tokens leased from buckets in a shared store.

Owns the process side of the shared token buckets (``store = "postgres"``). The buckets live in
the store (a ``TokenSource``: one round trip refills a bucket by the store's own clock and takes
up to ``want`` whole tokens of it); ``SharedBuckets`` leases them so that a call rarely waits for
a round trip of its own:

- each bucket has a lease in this process: the tokens taken and not spent yet, never more than
  ``LEASE_MAX``, usable for ``LEASE_TTL_S`` after they were taken (then dropped);
- a call that finds its lease empty waits for the round trip already in flight for its bucket,
  or starts one, asking for a token for every call waiting (at least ``lease_size(limit)``, a
  bucket's rate over ``PREFETCH_S``, so that a steady caller needs a round trip every few calls;
  at most ``LEASE_MAX``);
- the bound: a token is spent only after the shared bucket gave it, and a process holds at most
  ``LEASE_MAX`` of a bucket's tokens, so over N processes the calls admitted in any interval of
  t seconds are at most ``per_s * t + burst + N * LEASE_MAX`` (the slack is what the leases held
  at its start);
- a bucket found empty is remembered until it can hold a whole token again (only time refills
  it): calls until then are refused in the process, so a flood costs no round trip per call;
- fail closed: a round trip that fails refuses the call with ``RateLimitUnavailable``
  (UNAVAILABLE), and for ``DOWN_S`` after it calls that need a round trip fail at once, so that an
  outage does not pile calls up behind a dead connection.

Runs on the event loop: the only await is the round trip. Time comes from an injectable
monotonic clock (the lease's age; the buckets themselves use the store's clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import RateLimitUnavailable
from gateway.orgs import RateLimit

__all__ = [
    "DOWN_S",
    "LEASE_MAX",
    "LEASE_TTL_S",
    "Grant",
    "SharedBuckets",
    "TokenSource",
    "lease_size",
    "unavailable",
    "wait_ms",
]

LEASE_MAX = 8  # tokens of one bucket a process may hold: the slack per process
PREFETCH_S = 0.02  # a round trip takes at least the bucket's rate over this long
LEASE_TTL_S = 1.0  # tokens leased and not spent within this are dropped
DOWN_S = 0.5  # after a failed round trip, calls fail at once for this long
_ROUNDS = 8  # round trips one call may wait for while others take the leased tokens


@dataclass(frozen=True, slots=True)
class Grant:
    """What one round trip took: ``granted`` whole tokens; ``left`` tokens stay in the bucket."""

    granted: int
    left: float


class TokenSource(Protocol):
    """Token buckets shared between processes (``gateway.store.pg_rate_limits``)."""

    async def take(self, bucket: str, limit: RateLimit, want: int) -> Grant:
        """Refill ``bucket`` to now and take up to ``want`` whole tokens of it, in one step;
        ``RateLimitUnavailable`` when the store cannot be reached."""
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...


def lease_size(limit: RateLimit) -> int:
    """The fewest tokens a round trip asks for: ``PREFETCH_S`` of the rate, 1 to LEASE_MAX,
    never more than the burst."""
    return max(1, min(LEASE_MAX, limit.burst, math.floor(limit.per_s * PREFETCH_S)))


def wait_ms(left: float, limit: RateLimit) -> int:
    """Milliseconds until a bucket holding ``left`` tokens has a whole one."""
    return max(1, math.ceil((1.0 - left) / limit.per_s * 1000))


@dataclass(slots=True)
class _Lease:
    tokens: int = 0
    expires: float = 0.0
    waiting: int = 0  # calls waiting for ``fetch``
    fetch: asyncio.Task[Grant] | None = None
    empty_until: float = 0.0  # the shared bucket cannot hold a whole token before this


class SharedBuckets:
    """This process's leases of the shared buckets."""

    def __init__(self, source: TokenSource, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._down_until = 0.0

    async def take(self, bucket: str, limit: RateLimit) -> int | None:
        """Take one token of ``bucket``: None when taken, else the milliseconds until the shared
        bucket has one (the call is rate limited). ``RateLimitUnavailable`` when the store
        cannot say."""
        lease = self._leases.get(bucket)
        if lease is None:
            lease = self._leases[bucket] = _Lease()
        grant = Grant(0, 0.0)
        for _ in range(_ROUNDS):
            if self._spend(lease):
                return None
            now = self._clock()
            if now < lease.empty_until:  # refused here: a flood costs the database nothing
                return max(1, math.ceil((lease.empty_until - now) * 1000 - 1e-6))  # float dust
            grant = await self._wait_for_round_trip(bucket, limit, lease)
            if self._spend(lease):
                return None
            if grant.left < 1.0:  # the shared bucket is empty, not just this lease
                return wait_ms(grant.left, limit)
        return wait_ms(min(grant.left, 0.0), limit)

    def give_back(self, bucket: str) -> None:
        """Return a token taken for a call that was shed after all (by a bound in flight)."""
        lease = self._leases.get(bucket)
        if lease is not None and self._clock() < lease.expires:
            lease.tokens = min(LEASE_MAX, lease.tokens + 1)

    async def close(self) -> None:
        """Wait for the round trips in flight, then close the source."""
        for lease in self._leases.values():
            if lease.fetch is not None:
                with contextlib.suppress(Exception):
                    await lease.fetch
        await self._source.close()

    def _spend(self, lease: _Lease) -> bool:
        if lease.tokens >= 1 and self._clock() < lease.expires:
            lease.tokens -= 1
            return True
        return False

    async def _wait_for_round_trip(self, bucket: str, limit: RateLimit, lease: _Lease) -> Grant:
        """The round trip in flight for ``bucket``, or a new one for every call waiting."""
        if lease.fetch is None:
            if self._clock() < self._down_until:
                raise unavailable()
            want = min(LEASE_MAX, max(lease_size(limit), lease.waiting + 1))
            lease.fetch = asyncio.ensure_future(self._round_trip(bucket, limit, want, lease))
            lease.fetch.add_done_callback(_retrieve)
        fetch = lease.fetch
        lease.waiting += 1
        try:
            return await asyncio.shield(fetch)
        finally:
            lease.waiting -= 1

    async def _round_trip(self, bucket: str, limit: RateLimit, want: int, lease: _Lease) -> Grant:
        sent = self._clock()  # no later than the store's reading of the bucket
        try:
            grant = await self._source.take(bucket, limit, want)
        except RateLimitUnavailable:
            self._down_until = self._clock() + DOWN_S
            raise
        finally:
            lease.fetch = None
        lease.tokens = min(LEASE_MAX, grant.granted)  # what was left had expired
        lease.expires = self._clock() + LEASE_TTL_S
        # Only time refills a bucket (other processes only take): with ``left`` < 1 it has no
        # whole token before ``sent`` + the refill time, so calls until then are refused
        # without a round trip (never later than the store would refuse them).
        lease.empty_until = sent + (1.0 - grant.left) / limit.per_s if grant.left < 1.0 else 0.0
        return grant


def unavailable() -> RateLimitUnavailable:
    """The refusal of a call whose shared bucket cannot be read."""
    return RateLimitUnavailable(
        "the rate limits shared between the gateway's processes cannot be read (their database "
        "did not answer), so the call was not admitted; retry shortly"
    )


def _retrieve(task: asyncio.Task[Grant]) -> None:
    """Mark a round trip's failure as seen even when every call waiting for it was cancelled."""
    if not task.cancelled():
        task.exception()
