"""Admission control with a fake clock: the in-flight bound, token buckets, the shed tally and
its aggregate audit entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence

import grpc
import pytest

from gateway.admission import Admission, ShedAudit, ShedCount, shed_record
from gateway.audit.log import Receipt
from gateway.audit.record import RECORD_VERSION, AuditRecord
from gateway.errors import OrgBusy, Overloaded, RateLimited
from gateway.metrics import Metrics
from gateway.orgs import Org, OrgType, RateLimit

T0 = dt.datetime(2026, 11, 25, 16, 0, 0, 250000, tzinfo=dt.UTC)
LIMITS = {kind: RateLimit(per_s=10, burst=3) for kind in OrgType}
LIBRARY = Org("lib-bj-001", OrgType.LIBRARY, "Library", "110101")
HOSPITAL = Org("hosp-bj-001", OrgType.HOSPITAL, "Hospital", "110105")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(max_in_flight: int = 100, **limits: RateLimit) -> tuple[Admission, FakeClock]:
    clock = FakeClock()
    rates = dict(LIMITS) | {OrgType(kind): limit for kind, limit in limits.items()}
    admission = Admission(
        max_in_flight=max_in_flight,
        rate_limits=rates,
        metrics=Metrics.create(),
        clock=clock,
        wall_clock=lambda: T0,
    )
    return admission, clock


def shed_metric(admission: Admission, org: str, reason: str) -> float:
    assert admission.metrics is not None
    value = admission.metrics.registry.get_sample_value(
        "onecard_shed_calls_total", {"org": org, "reason": reason}
    )
    return value or 0.0


# -- token buckets ---------------------------------------------------------------------------


def test_a_burst_is_admitted_and_the_next_call_is_rate_limited() -> None:
    admission, _ = make()
    for _ in range(3):
        admission.admit(LIBRARY).release()
    with pytest.raises(RateLimited) as info:
        admission.admit(LIBRARY)
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.reason == "rate_limited"
    assert info.value.retry_after_ms == 100  # one token at 10 a second
    assert "lib-bj-001" in info.value.message
    assert "10 calls/s, bursts of 3" in info.value.message
    assert "retry after 100 ms" in info.value.message


def test_tokens_come_back_at_the_rate_and_no_more_than_the_burst() -> None:
    admission, clock = make()
    for _ in range(3):
        admission.admit(LIBRARY).release()
    clock.now += 0.25  # 2.5 tokens
    admission.admit(LIBRARY).release()
    admission.admit(LIBRARY).release()
    with pytest.raises(RateLimited) as info:
        admission.admit(LIBRARY)
    assert info.value.retry_after_ms == 50  # half a token left
    clock.now += 3600  # an hour idle refills to the burst, not to 36,000
    for _ in range(3):
        admission.admit(LIBRARY).release()
    with pytest.raises(RateLimited):
        admission.admit(LIBRARY)


def test_each_organisation_has_its_own_bucket() -> None:
    admission, _ = make()
    for _ in range(3):
        admission.admit(LIBRARY).release()
    with pytest.raises(RateLimited):
        admission.admit(LIBRARY)
    admission.admit(HOSPITAL).release()  # the library's flood leaves the hospital alone


def test_the_org_type_default_applies_unless_the_registry_overrides_it() -> None:
    admission, _ = make(hospital=RateLimit(per_s=1, burst=1))
    admission.admit(HOSPITAL).release()
    with pytest.raises(RateLimited):
        admission.admit(HOSPITAL)
    own = dataclasses.replace(HOSPITAL, org_id="hosp-big", rate_limit=RateLimit(per_s=1, burst=5))
    assert admission.limit_of(own) == RateLimit(per_s=1, burst=5)
    for _ in range(5):
        admission.admit(own).release()
    with pytest.raises(RateLimited):
        admission.admit(own)


def test_a_clock_that_goes_nowhere_adds_no_tokens() -> None:
    admission, clock = make()
    for _ in range(3):
        admission.admit(LIBRARY).release()
    clock.now -= 5  # a monotonic clock never does this; the bucket must not go wrong if it did
    with pytest.raises(RateLimited):
        admission.admit(LIBRARY)


# -- calls in flight -------------------------------------------------------------------------


def test_beyond_max_in_flight_calls_are_overloaded_until_one_ends() -> None:
    admission, _ = make(max_in_flight=2)
    first, second = admission.admit(LIBRARY), admission.admit(HOSPITAL)
    assert admission.in_flight == 2
    with pytest.raises(Overloaded) as info:
        admission.admit(HOSPITAL)
    assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.reason == "overloaded"
    assert "limit of 2 calls in flight" in info.value.message
    assert "retry after" in info.value.message
    first.release()
    first.release()  # twice is harmless: it gives back one place, not two
    assert admission.in_flight == 1
    admission.admit(HOSPITAL).release()
    second.release()
    assert admission.in_flight == 0


def test_releasing_a_ticket_twice_gives_one_place_back() -> None:
    admission, _ = make(max_in_flight=2)
    first, second = admission.admit(LIBRARY), admission.admit(LIBRARY)
    first.release()
    first.release()
    assert admission.in_flight == 1
    second.release()
    assert admission.in_flight == 0


def test_a_call_shed_as_overloaded_does_not_use_up_a_token() -> None:
    admission, _ = make(max_in_flight=1)
    held = admission.admit(LIBRARY)  # 2 tokens left
    for _ in range(5):
        with pytest.raises(Overloaded):
            admission.admit(LIBRARY)
    held.release()
    admission.admit(LIBRARY).release()
    admission.admit(LIBRARY).release()
    with pytest.raises(RateLimited):
        admission.admit(LIBRARY)


def test_a_rate_limited_org_is_told_about_its_own_limit_even_when_the_gateway_is_full() -> None:
    admission, _ = make(max_in_flight=3)
    held = [admission.admit(LIBRARY) for _ in range(3)]
    with pytest.raises(RateLimited):
        admission.admit(LIBRARY)
    with pytest.raises(Overloaded):
        admission.admit(HOSPITAL)
    for ticket in held:
        ticket.release()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        Admission(max_in_flight=0, rate_limits=LIMITS)
    with pytest.raises(ValueError, match="library"):
        Admission(max_in_flight=1, rate_limits={OrgType.HOSPITAL: RateLimit(1, 1)})
    with pytest.raises(ValueError, match="per_s > 0"):
        RateLimit(per_s=0, burst=1)


# -- the tally, metrics and the aggregate audit entries ----------------------------------------


def test_shed_calls_are_tallied_per_org_and_reason_and_counted_in_metrics() -> None:
    admission, _ = make(max_in_flight=3)
    held = [admission.admit(LIBRARY) for _ in range(3)]
    for _ in range(4):
        with pytest.raises(RateLimited):
            admission.admit(LIBRARY)
    for _ in range(2):
        with pytest.raises(Overloaded):
            admission.admit(HOSPITAL)
    assert shed_metric(admission, "lib-bj-001", "rate_limited") == 4
    assert shed_metric(admission, "hosp-bj-001", "overloaded") == 2
    assert sorted(admission.take_shed(), key=lambda c: c.org) == [
        ShedCount("hosp-bj-001", "hospital", "overloaded", 2, T0),
        ShedCount("lib-bj-001", "library", "rate_limited", 4, T0),
    ]
    assert admission.take_shed() == []  # the tally restarts; the metric does not
    assert shed_metric(admission, "lib-bj-001", "rate_limited") == 4
    for ticket in held:
        ticket.release()


def test_a_shed_record_says_who_how_many_and_why_and_nothing_else() -> None:
    rec = shed_record(ShedCount("lib-bj-001", "library", "rate_limited", 7312, T0))
    body = json.loads(rec.body())
    assert body["calls"] == 7312
    assert body["v"] == RECORD_VERSION
    assert (body["org"], body["org_type"], body["rpc"]) == ("lib-bj-001", "library", "")
    assert (body["outcome"], body["reason"]) == ("RESOURCE_EXHAUSTED", "rate_limited")
    assert body["time"] == "2026-11-25T16:00:00.250000Z"
    assert len(body["request_id"]) == 32
    for key in ("cert_sha256", "subject", "basis_ref", "released_sha256", "decision", "category"):
        assert body[key] == ""  # about no citizen: its back-link (sequencer's) will be null


class FakeLog:
    def __init__(self, fail_for: str = "") -> None:
        self.appended: list[AuditRecord] = []
        self.fail_for = fail_for

    async def append(self, record: AuditRecord) -> Receipt:
        if record.org == self.fail_for:
            raise OSError("disk full")
        self.appended.append(record)
        return Receipt(len(self.appended) - 1, bytes(32), "o", T0)


def counts(records: Sequence[AuditRecord]) -> dict[tuple[str, str], int]:
    return {(r.org, r.reason): r.calls for r in records}


async def test_shed_audit_writes_one_entry_per_org_and_reason_and_then_nothing() -> None:
    admission, _ = make(max_in_flight=3)
    held = [admission.admit(LIBRARY) for _ in range(3)]
    for _ in range(1000):
        with pytest.raises(RateLimited):
            admission.admit(LIBRARY)
    with pytest.raises(Overloaded):
        admission.admit(HOSPITAL)
    log = FakeLog()
    audit = ShedAudit(admission, log, interval_s=3600)  # type: ignore[arg-type]
    assert await audit.flush() == 2
    assert counts(log.appended) == {
        ("lib-bj-001", "rate_limited"): 1000,
        ("hosp-bj-001", "overloaded"): 1,
    }
    assert await audit.flush() == 0  # nothing shed since: no entry
    assert len(log.appended) == 2
    for ticket in held:
        ticket.release()


async def test_stopping_writes_what_was_shed_since_the_last_round() -> None:
    admission, _ = make()
    log = FakeLog()
    audit = ShedAudit(admission, log, interval_s=3600)  # type: ignore[arg-type]
    audit.start()
    for _ in range(5):
        with pytest.raises(RateLimited):
            while True:
                admission.admit(LIBRARY).release()
    await audit.stop()
    assert counts(log.appended) == {("lib-bj-001", "rate_limited"): 5}


async def test_an_entry_that_cannot_be_written_does_not_stop_the_others() -> None:
    admission, _ = make(max_in_flight=3)
    held = [admission.admit(LIBRARY) for _ in range(3)]
    with pytest.raises(RateLimited):
        admission.admit(LIBRARY)
    with pytest.raises(Overloaded):
        admission.admit(HOSPITAL)
    log = FakeLog(fail_for="lib-bj-001")
    assert await ShedAudit(admission, log, interval_s=1).flush() == 1  # type: ignore[arg-type]
    assert counts(log.appended) == {("hosp-bj-001", "overloaded"): 1}
    for ticket in held:
        ticket.release()


def test_one_organisation_cannot_hold_every_place_in_flight() -> None:
    admission, _ = make(max_in_flight=10, library=RateLimit(per_s=100, burst=100))
    admission = dataclasses.replace(admission, max_in_flight_per_org=3)
    held = [admission.admit(LIBRARY) for _ in range(3)]
    with pytest.raises(OrgBusy) as info:
        admission.admit(LIBRARY)
    assert info.value.reason == "org_busy"
    assert "lib-bj-001 already has 3 calls in flight" in info.value.message
    admission.admit(HOSPITAL).release()  # another organisation still gets in
    held[0].release()
    admission.admit(LIBRARY).release()  # a place of its own came free
    assert shed_metric(admission, "lib-bj-001", "org_busy") == 1


def test_refusals_of_an_unidentified_certificate_are_shed_past_a_small_bucket() -> None:
    admission, clock = make()
    for _ in range(10):  # the bucket's burst: each refusal is audited on its own
        admission.admit_refused("ab" * 32)
    with pytest.raises(RateLimited):
        admission.admit_refused("ab" * 32)
    admission.admit_refused("cd" * 32)  # another certificate has its own bucket
    clock.now += 0.5  # 2 a second
    admission.admit_refused("ab" * 32)
    (count,) = admission.take_shed()
    assert (count.org, count.org_type, count.reason, count.calls) == (
        "cert:abababababababab",
        "",
        "rate_limited",
        1,
    )
