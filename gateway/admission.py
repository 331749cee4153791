"""Admission control: whether a onecard.v1 call may start at all, decided before any work.

Owns these limits and the tally of what they shed:

- a bound on calls in flight across the gateway (``max_in_flight``); beyond it a call is shed at
  once as ``overloaded`` instead of queueing behind the others;
- a token bucket per organisation (``per_s`` on average, ``burst`` at once; the org type's
  default from the settings, or the org's own from the registry); a call finding its org's bucket
  empty is shed as ``rate_limited``;
- a bound on one organisation's calls in flight (``max_in_flight_per_org``), shed as
  ``org_busy``: with a slow back end, calls admitted at an org's rate pile up, and without it one
  organisation could hold every slot of the gateway;
- callers the registry refuses (an unknown or suspended organisation: their refusals are
  audited one by one) have a small bucket per client certificate (``admit_refused``), so a
  flood of refusals is shed and audited in aggregate too instead of growing the log per call.

With several gateway processes on one PostgreSQL (``shared``), an organisation's bucket is shared
by all of them (``gateway.shared_buckets``: tokens leased from the database) and the interceptor
calls ``admit_shared`` instead, which awaits at most one round trip; the bounds in flight stay per
process (they protect the process), and so does the refused callers' bucket: it only bounds how
fast refusals are audited one by one, a promise to no organisation, and sharing it would turn a
flood of unidentified callers into database load.

The interceptor calls ``Admission.admit`` right after it knows the caller, and holds the returned
``Ticket`` until the call ends. A shed call raises ``RateLimited``, ``Overloaded`` or ``OrgBusy``
(RESOURCE_EXHAUSTED, with the limit and when to retry in the message); it costs no durable write.
``ShedAudit`` writes the tally instead: one audit entry per organisation and reason per interval
saying how many calls were shed (and one ``calls_shed`` log line), so a flood leaves a trace
in the log while the log's growth stays bounded; a shed call is not logged on its own.
Time comes from an injectable monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from gateway.audit.log import AuditLog
from gateway.audit.record import AuditRecord, rfc3339
from gateway.errors import OrgBusy, Overloaded, RateLimited, Shed
from gateway.metrics import Metrics
from gateway.orgs import Org, OrgType, RateLimit
from gateway.shared_buckets import SharedBuckets

__all__ = ["Admission", "ShedAudit", "ShedCount", "Ticket"]

_log = structlog.get_logger(__name__)
# A shed caller is told to come back no sooner than this when the gateway is full: calls in
# flight take milliseconds to finish, and an immediate retry would only be shed again.
OVERLOAD_RETRY_MS = 100
# Refusals of unidentified callers (unknown or suspended organisations), per certificate.
REFUSED_LIMIT = RateLimit(per_s=2.0, burst=10)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rate_limited(org: Org, limit: RateLimit, wait_ms: int) -> RateLimited:
    return RateLimited(
        f"rate limit of organisation {org.org_id} reached ({limit.per_s:g} calls/s, "
        f"bursts of {limit.burst}); retry after {wait_ms} ms",
        retry_after_ms=wait_ms,
    )


@dataclass(slots=True)
class _Bucket:
    """One token bucket: ``tokens`` as of ``at`` (monotonic seconds)."""

    limit: RateLimit
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(
                float(self.limit.burst), self.tokens + (now - self.at) * self.limit.per_s
            )
            self.at = now

    def wait_ms(self) -> int:
        """Milliseconds until one whole token is there."""
        return max(1, math.ceil((1.0 - self.tokens) / self.limit.per_s * 1000))


@dataclass(frozen=True, slots=True)
class ShedCount:
    """How many calls of one organisation were shed for one reason since ``first_at``."""

    org: str
    org_type: str
    reason: str
    calls: int
    first_at: dt.datetime


@dataclass(slots=True)
class _Tally:
    org_type: str
    first_at: dt.datetime
    calls: int = 0


class Ticket:
    """An admitted call's place in flight, given back with ``release`` when the call ends
    (releasing twice is harmless)."""

    __slots__ = ("_admission", "_org_id")

    def __init__(self, admission: Admission | None, org_id: str) -> None:
        self._admission = admission
        self._org_id = org_id

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release(self._org_id)
            self._admission = None


@dataclass
class Admission:
    """The gateway's admission control. Runs on the event loop: no locks; no awaits but the
    shared buckets' round trip (``admit_shared``)."""

    max_in_flight: int
    rate_limits: Mapping[OrgType, RateLimit]
    max_in_flight_per_org: int = 0  # 0: no bound of its own (max_in_flight)
    refused_limit: RateLimit = REFUSED_LIMIT
    metrics: Metrics | None = None
    shared: SharedBuckets | None = None  # the org buckets shared by every process (PostgreSQL)
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], dt.datetime] = field(default=_utc_now)
    _in_flight: int = field(default=0, init=False)
    _org_in_flight: dict[str, int] = field(default_factory=dict, init=False)
    _buckets: dict[str, _Bucket] = field(default_factory=dict, init=False)
    _shed: dict[tuple[str, str], _Tally] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")
        if self.max_in_flight_per_org <= 0:
            self.max_in_flight_per_org = self.max_in_flight
        missing = set(OrgType) - set(self.rate_limits)
        if missing:
            raise ValueError(f"no rate limit for org types {sorted(t.value for t in missing)}")

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        return self._in_flight

    def limit_of(self, org: Org) -> RateLimit:
        """The token bucket that applies to ``org``: its own, or its type's default."""
        return org.rate_limit if org.rate_limit is not None else self.rate_limits[org.org_type]

    def admit(self, org: Org) -> Ticket:
        """Admit one call of ``org`` or raise a ``Shed`` error (nothing held).

        The org's bucket is checked first, so that a flooding org is told about its own limit;
        a call shed because the gateway is full does not use up a token of its org.
        """
        bucket = self._bucket(org.org_id, self.limit_of(org))
        if bucket.tokens < 1.0:
            raise self._shed_call(org, _rate_limited(org, bucket.limit, bucket.wait_ms()))
        ticket = self._take_place(org)
        bucket.tokens -= 1.0
        return ticket

    async def admit_shared(self, org: Org) -> Ticket:
        """``admit`` with the org's bucket shared by every process (``shared``): one round trip
        at most, then the bounds in flight, which stay this process's own (they protect it).
        A call shed by those gives its token back to this process's lease.
        ``RateLimitUnavailable`` when the shared buckets cannot be read (fail closed)."""
        if self.shared is None:
            raise RuntimeError("admit_shared needs shared buckets; call admit")
        limit = self.limit_of(org)
        wait_ms = await self.shared.take(org.org_id, limit)
        if wait_ms is not None:
            raise self._shed_call(org, _rate_limited(org, limit, wait_ms))
        try:
            return self._take_place(org)
        except Shed:
            self.shared.give_back(org.org_id)
            raise

    def _take_place(self, org: Org) -> Ticket:
        """A place in flight for ``org``'s call, or ``Overloaded`` / ``OrgBusy``."""
        if self._in_flight >= self.max_in_flight:
            raise self._shed_call(
                org,
                Overloaded(
                    f"the gateway is at its limit of {self.max_in_flight} calls in flight; "
                    f"retry after {OVERLOAD_RETRY_MS} ms",
                    retry_after_ms=OVERLOAD_RETRY_MS,
                ),
            )
        if self._org_in_flight.get(org.org_id, 0) >= self.max_in_flight_per_org:
            raise self._shed_call(
                org,
                OrgBusy(
                    f"organisation {org.org_id} already has {self.max_in_flight_per_org} calls "
                    f"in flight, its limit; retry after {OVERLOAD_RETRY_MS} ms",
                    retry_after_ms=OVERLOAD_RETRY_MS,
                ),
            )
        self._in_flight += 1
        self._org_in_flight[org.org_id] = self._org_in_flight.get(org.org_id, 0) + 1
        return Ticket(self, org.org_id)

    def admit_refused(self, cert_sha256: str) -> None:
        """Let one refusal of an unidentified caller be audited, or raise ``RateLimited``.

        Keyed by the client certificate (the org it names is unknown or suspended); its tally
        is audited as ``cert:<first 16 hex digits>``.
        """
        key = f"cert:{cert_sha256[:16]}"
        bucket = self._bucket(key, self.refused_limit)
        if bucket.tokens < 1.0:
            raise self._tally(
                key,
                "",
                RateLimited(
                    f"too many refused calls from this certificate; retry after "
                    f"{bucket.wait_ms()} ms",
                    retry_after_ms=bucket.wait_ms(),
                ),
            )
        bucket.tokens -= 1.0

    def _release(self, org_id: str) -> None:
        self._in_flight -= 1
        left = self._org_in_flight.get(org_id, 1) - 1
        if left:
            self._org_in_flight[org_id] = left
        else:
            self._org_in_flight.pop(org_id, None)

    def take_shed(self) -> list[ShedCount]:
        """What was shed since the last call, per organisation and reason; the tally restarts."""
        shed, self._shed = self._shed, {}
        return [
            ShedCount(org, tally.org_type, reason, tally.calls, tally.first_at)
            for (org, reason), tally in shed.items()
        ]

    def _bucket(self, key: str, limit: RateLimit) -> _Bucket:
        """The bucket of ``key`` (an org id, or a certificate's), refilled to now."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[key] = _Bucket(limit, float(limit.burst), now)
        else:
            bucket.refill(now)
        return bucket

    def _shed_call(self, org: Org, error: Shed) -> Shed:
        return self._tally(org.org_id, org.org_type.value, error)

    def _tally(self, who: str, org_type: str, error: Shed) -> Shed:
        key = (who, error.reason)
        tally = self._shed.get(key)
        if tally is None:
            tally = self._shed[key] = _Tally(org_type, self.wall_clock())
        tally.calls += 1
        if self.metrics is not None:
            self.metrics.shed.labels(who, error.reason).inc()
        return error


class ShedAudit:
    """Writes ``Admission``'s tally to the audit log, every ``interval_s`` and once at stop.

    Each entry: ``rpc`` "" (one entry covers every RPC the org called), outcome
    RESOURCE_EXHAUSTED, the reason, ``calls`` = how many were shed, ``time`` = the first of them.
    """

    def __init__(self, admission: Admission, log: AuditLog, interval_s: float) -> None:
        self._admission = admission
        self._log = log
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shed-audit")

    async def stop(self) -> None:
        """Stop the task and write what was shed since its last round."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Append one entry per organisation and reason shed since the last flush; the number
        written. An entry that cannot be written is logged with its count, not retried."""
        written = 0
        for count in self._admission.take_shed():
            _log.warning("calls_shed", org_id=count.org, reason=count.reason, calls=count.calls)
            try:
                await self._log.append(shed_record(count))
            except Exception as exc:
                _log.error(
                    "shed_audit_failed",
                    org_id=count.org,
                    reason=count.reason,
                    calls=count.calls,
                    error_type=type(exc).__name__,
                )
            else:
                written += 1
        return written

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()


def shed_record(count: ShedCount) -> AuditRecord:
    """The audit entry for ``count``: no certificate, no request, no citizen; ``calls`` shed."""
    return AuditRecord(
        time=rfc3339(count.first_at),
        request_id=uuid.uuid4().hex,
        org=count.org,
        org_type=count.org_type,
        cert_sha256="",
        rpc="",
        outcome="RESOURCE_EXHAUSTED",
        reason=count.reason,
        released_sha256="",
        latency_us=0,
        calls=count.calls,
    )
