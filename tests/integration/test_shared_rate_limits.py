"""Rate limits shared by gateway processes on one PostgreSQL: two ``Admission`` objects, each
with its own connection pool as two processes have, on one schema; one organisation floods both
at once, and the calls admitted in total stay within one bucket's bound (plus the leases' slack),
not two buckets'. A gateway whose shared buckets cannot be read refuses calls as UNAVAILABLE.
(Whole gateway processes: tests/integration/test_workers.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from adapters.social_insurance.seed import Population
from gateway.admission import Admission
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.errors import RateLimited
from gateway.orgs import Org, OrgType, RateLimit
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from gateway.shared_buckets import DOWN_S, LEASE_MAX, SharedBuckets
from gateway.store.pg_rate_limits import PgTokenSource
from tests.integration.calls import issue_token
from tests.integration.conftest import CITIZEN_APP
from tests.integration.conftest import HOSPITAL as HOSPITAL_ID
from tests.postgres import fresh_schema

LIMIT = RateLimit(per_s=40, burst=20)
HOSPITAL = Org("hosp-bj-001", OrgType.HOSPITAL, "Hospital", "110105")
FLOOD_S = 1.5
pytestmark = pytest.mark.integration


async def _process(dsn: str) -> Admission:
    return Admission(
        max_in_flight=1000,
        rate_limits=dict.fromkeys(OrgType, LIMIT),
        shared=SharedBuckets(await PgTokenSource.open(dsn)),
    )


async def _flood(admission: Admission, until: float) -> tuple[int, int]:
    """Call as fast as the bucket answers, 8 calls at once, until ``until``: (admitted, shed)."""
    admitted = shed = 0

    async def caller() -> None:
        nonlocal admitted, shed
        while time.monotonic() < until:
            try:
                ticket = await admission.admit_shared(HOSPITAL)
            except RateLimited:
                shed += 1
                await asyncio.sleep(0.001)
                continue
            admitted += 1
            ticket.release()

    await asyncio.gather(*(caller() for _ in range(8)))
    return admitted, shed


async def test_one_org_flooding_two_processes_gets_one_bucket_not_two() -> None:
    with fresh_schema() as dsn:
        one, two = await _process(dsn), await _process(dsn)
        try:
            started = time.monotonic()
            (a1, s1), (a2, s2) = await asyncio.gather(
                _flood(one, started + FLOOD_S), _flood(two, started + FLOOD_S)
            )
            elapsed = time.monotonic() - started
        finally:
            for admission in (one, two):
                assert admission.shared is not None
                await admission.shared.close()
    admitted = a1 + a2
    bound = LIMIT.per_s * elapsed + LIMIT.burst + 2 * LEASE_MAX
    assert admitted <= bound, (admitted, bound)
    # Each process alone would admit up to its own full bucket; both kept calling and both
    # were admitted and shed, so the bucket was the shared one, drained from both sides.
    assert admitted >= LIMIT.burst + LIMIT.per_s * FLOOD_S / 2
    assert min(a1, a2) > 0 and min(s1, s2) > 0


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
async def test_a_gateway_whose_shared_buckets_cannot_be_read_fails_calls_closed(
    gateway_factory: Callable[..., Any],
    database_urls: dict[Path, str],
    pki: PkiLayout,
    population: Population,
) -> None:
    gateway: Gateway = await gateway_factory()
    (dsn,) = database_urls.values()
    card = population.first(card_status=CardStatus.NORMAL).id_number
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL_ID) as hospital,
    ):
        await issue_token(app, card)  # the citizen app's bucket, read from the database
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE rate_buckets RENAME TO rate_buckets_away")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(hospital, card)  # its first call: a round trip, which fails
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE rate_buckets_away RENAME TO rate_buckets")
        await asyncio.sleep(DOWN_S)
        await issue_token(app, card)  # back once the database answers again
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason(info.value) == "rate_limit_unavailable"
    assert "not admitted" in (info.value.details() or "")
