"""Leases of shared token buckets (``gateway.shared_buckets``) with a fake token source and a fake
clock: round trips saved, shared by the calls waiting, the bound on what a process holds, and
failing closed. The SQL of the real source is tested in tests/gateway/store/test_pg_rate_limits.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.admission import Admission
from gateway.errors import OrgBusy, RateLimited, RateLimitUnavailable
from gateway.orgs import Org, OrgType, RateLimit
from gateway.shared_buckets import (
    DOWN_S,
    LEASE_MAX,
    LEASE_TTL_S,
    Grant,
    SharedBuckets,
    lease_size,
    wait_ms,
)

SLOW = RateLimit(per_s=10, burst=20)  # lease_size 1
FAST = RateLimit(per_s=200, burst=400)  # lease_size 4
LIBRARY = Org("lib-bj-001", OrgType.LIBRARY, "Library", "110101")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    """A bucket per key that never refills: ``left`` tokens each; records every round trip."""

    def __init__(self, left: float = 100.0) -> None:
        self.left: dict[str, float] = {}
        self.initial = left
        self.asked: list[tuple[str, int]] = []
        self.failing = False
        self.gate: asyncio.Event | None = None  # when set, round trips wait for it

    async def take(self, bucket: str, limit: RateLimit, want: int) -> Grant:
        self.asked.append((bucket, want))
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise RateLimitUnavailable("down")
        left = self.left.get(bucket, self.initial)
        granted = min(want, int(left))
        self.left[bucket] = left - granted
        return Grant(granted, left - granted)

    async def close(self) -> None:
        pass


async def _settle() -> None:
    """Let every task ready to run get to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lease_asks_for_a_fiftieth_of_a_second_of_the_rate_within_bounds() -> None:
    assert lease_size(SLOW) == 1
    assert lease_size(FAST) == 4
    assert lease_size(RateLimit(per_s=100_000, burst=100_000)) == LEASE_MAX
    assert lease_size(RateLimit(per_s=100_000, burst=3)) == 3  # never beyond the burst
    assert wait_ms(0.5, SLOW) == 50
    assert wait_ms(0.9999, SLOW) == 1


async def test_leased_tokens_are_spent_without_a_round_trip() -> None:
    source = FakeSource()
    buckets = SharedBuckets(source, FakeClock())
    for _ in range(8):
        assert await buckets.take("hosp", FAST) is None
    assert source.asked == [("hosp", 4), ("hosp", 4)]  # 8 calls, 2 round trips of 4


async def test_calls_waiting_share_one_round_trip_that_asks_for_all_of_them() -> None:
    source = FakeSource()
    source.gate = asyncio.Event()
    buckets = SharedBuckets(source, FakeClock())
    calls = [asyncio.ensure_future(buckets.take("lib", SLOW)) for _ in range(6)]
    await _settle()
    assert source.asked == [("lib", 1)]  # the first started it; five more joined
    source.gate.set()
    results = await asyncio.gather(*calls)
    assert results == [None] * 6
    assert source.asked == [("lib", 1), ("lib", 5)]  # the second asked for every call waiting


async def test_an_empty_shared_bucket_rate_limits_with_its_own_wait() -> None:
    source, clock = FakeSource(left=2.0), FakeClock()
    buckets = SharedBuckets(source, clock)
    assert await buckets.take("lib", SLOW) is None
    assert await buckets.take("lib", SLOW) is None
    assert await buckets.take("lib", SLOW) == 100  # no token left: 1 token at 10/s
    clock.now += 0.1
    source.left["lib"] = 0.75  # refilled by then, and another process took a token
    assert await buckets.take("lib", SLOW) == 25


async def test_a_process_never_holds_more_than_lease_max_tokens() -> None:
    source = FakeSource()
    source.gate = asyncio.Event()
    buckets = SharedBuckets(source, FakeClock())
    first = asyncio.ensure_future(buckets.take("lib", SLOW))
    await _settle()
    waiting = [asyncio.ensure_future(buckets.take("lib", SLOW)) for _ in range(3 * LEASE_MAX)]
    await _settle()
    source.gate.set()
    await asyncio.gather(first, *waiting)
    assert max(want for _, want in source.asked) == LEASE_MAX
    for _ in range(3 * LEASE_MAX):
        buckets.give_back("lib")  # calls shed after taking a token give it back, up to a cap
    before = len(source.asked)
    for _ in range(LEASE_MAX):
        assert await buckets.take("lib", SLOW) is None
    assert len(source.asked) == before  # the cap's worth spent locally...
    assert await buckets.take("lib", SLOW) is None
    assert len(source.asked) == before + 1  # ...and not one more


async def test_leased_tokens_expire() -> None:
    source = FakeSource()
    clock = FakeClock()
    buckets = SharedBuckets(source, clock)
    assert await buckets.take("hosp", FAST) is None  # 3 left in the lease
    clock.now += LEASE_TTL_S
    assert await buckets.take("hosp", FAST) is None
    assert len(source.asked) == 2


async def test_a_failed_round_trip_fails_closed_and_fast_until_it_may_retry() -> None:
    source = FakeSource()
    source.failing = True
    clock = FakeClock()
    buckets = SharedBuckets(source, clock)
    with pytest.raises(RateLimitUnavailable):
        await buckets.take("lib", SLOW)
    with pytest.raises(RateLimitUnavailable) as info:
        await buckets.take("lib", SLOW)
    assert len(source.asked) == 1  # refused without a round trip
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert "not admitted" in info.value.message
    source.failing = False
    clock.now += DOWN_S
    assert await buckets.take("lib", SLOW) is None
    assert len(source.asked) == 2


def _admission(source: FakeSource, **kwargs: int) -> Admission:
    return Admission(
        max_in_flight=kwargs.get("max_in_flight", 100),
        max_in_flight_per_org=kwargs.get("per_org", 0),
        rate_limits=dict.fromkeys(OrgType, SLOW),
        shared=SharedBuckets(source, FakeClock()),
    )


async def test_admit_shared_says_what_admit_says_when_the_shared_bucket_is_empty() -> None:
    source = FakeSource(left=1.0)
    admission = _admission(source)
    (await admission.admit_shared(LIBRARY)).release()
    with pytest.raises(RateLimited) as info:
        await admission.admit_shared(LIBRARY)
    assert info.value.retry_after_ms == 100
    assert info.value.message == (
        "rate limit of organisation lib-bj-001 reached (10 calls/s, bursts of 20); "
        "retry after 100 ms"
    )
    assert [(c.org, c.reason, c.calls) for c in admission.take_shed()] == [
        ("lib-bj-001", "rate_limited", 1)
    ]


async def test_a_call_shed_in_flight_gives_its_shared_token_back() -> None:
    source = FakeSource(left=2.0)
    admission = _admission(source, per_org=1)
    held = await admission.admit_shared(LIBRARY)
    with pytest.raises(OrgBusy):
        await admission.admit_shared(LIBRARY)  # took the second token, gave it back
    held.release()
    (await admission.admit_shared(LIBRARY)).release()  # the token given back
    assert source.left["lib-bj-001"] == 0.0
    assert len(source.asked) == 2


async def test_a_bucket_found_empty_refuses_in_the_process_until_it_can_refill() -> None:
    source, clock = FakeSource(left=0.5), FakeClock()
    buckets = SharedBuckets(source, clock)
    first = await buckets.take("lib", SLOW)  # 10/s: half a token left, 50 ms to a whole one
    assert (first, len(source.asked)) == (50, 1)
    clock.now += 0.03
    assert await buckets.take("lib", SLOW) == 20  # refused here, no round trip
    assert len(source.asked) == 1
    clock.now += 0.02
    source.left["lib"] = 1.0  # refilled by then
    assert await buckets.take("lib", SLOW) is None
    assert len(source.asked) == 2
