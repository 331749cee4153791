"""The interceptor: who is calling, which call this is, and how every call ends in the log.

For every RPC it (1) authenticates the caller from the mutual-TLS certificate against the org
registry and, for a call of an audited service, asks admission control (``gateway.admission``)
whether it may start (a shed call is counted and audited in aggregate, not one by one),
(2) binds a request id and the caller to the call's context, (3) turns a ``GatewayError`` into
its gRPC status with a safe message and an ``onecard-reason`` trailer, and any other exception
into INTERNAL without detail, (4) appends every exchange of an audited
service (the ``onecard.v1`` services bootstrap registers), allowed or refused, to the audit log
before anything is released, and (5) logs and counts the outcome.

Whatever ends an audited call ends it with its entry: an answer, a refusal, an undecodable
request, the request budget running out, the caller's deadline or cancellation, or shutdown
(``drain`` waits for those entries before the store closes).

A handler whose response must hold its own entry (a citizen's access history) writes it early,
through ``Call.record``, once the call is decided and before its response is built. The early
append rule: the early entry records the call as answered (outcome OK, ``released_sha256``
empty, since the response contains the entry and cannot be hashed into it); when the call then
ends with its answer, its receipt is that entry's and nothing else is appended; when it ends
with an error after all (a failed read, the deadline, cancellation, shutdown), a second entry
with the same request id records that error, as any failed call's entry would. So the log never
holds an early entry alone for a call whose answer was not released: a reader takes the newest
entry of a request id as its outcome. A server stream is collected first,
so that its entry covers everything it sends. A handler kind that cannot be audited this way
(client streaming) is refused, never passed through. TLS itself (a certificate from the OneCard
CA, not expired) is enforced by the transport before this code runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeAlias

import grpc
import structlog
from google.protobuf.message import Message

from gateway.admission import Admission, Ticket
from gateway.audit.log import Receipt
from gateway.audit.stage import AuditStage, attach_receipt
from gateway.context import Call, Caller, bind_call, reset_call
from gateway.errors import (
    BasisRefused,
    CallerCancelled,
    CallerDeadline,
    CutOff,
    GatewayError,
    InvalidRequest,
    NotSupported,
    OrgSuspended,
    RequestBudgetExceeded,
    Shed,
    Unauthenticated,
)
from gateway.findings import NOTHING, Findings
from gateway.metrics import Metrics
from gateway.orgs import OrgRegistry, OrgStatus
from gateway.pki import cert_fingerprint, org_id_from_cert
from gateway.validation import check_request

_log = structlog.get_logger("gateway.rpc")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_Behavior = Callable[..., Any]
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_HANDLER_KINDS: dict[tuple[bool, bool], Callable[..., Any]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request whose bytes are not a message of the RPC's request type."""


@dataclass(slots=True)
class _Started:
    """An audited call as it arrived; ``org_type`` is known once the caller is authenticated."""

    rpc: str
    request_id: str
    received_at: dt.datetime
    org_id: str | None
    cert_sha256: str
    org_type: str = ""
    findings: Findings = NOTHING  # reported once by the pipeline, when the call ends
    ticket: Ticket | None = None  # the call's place in flight, held until its entry is written
    early: Receipt | None = None  # the entry written before the response (``Call.record``)

    def found(self, findings: Findings) -> None:
        """``Call.report``: the pipeline's findings, handed over when the call ends."""
        self.findings = findings


@dataclass(frozen=True, slots=True)
class _Ended:
    """How the service's part of a call ended: messages to release, or an error."""

    messages: list[Any] = field(default_factory=list)
    error: GatewayError | None = None
    cancelled: asyncio.CancelledError | None = None


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates callers, audits every exchange and maps errors to statuses."""

    def __init__(
        self,
        orgs: OrgRegistry,
        metrics: Metrics,
        audit: AuditStage | None,
        admission: Admission | None = None,
        *,
        audited_services: Collection[str],
        request_budget_s: float,
        request_id_key: bytes,
    ) -> None:
        self._orgs = orgs
        self._metrics = metrics
        self._audit = audit
        self._admission = admission
        self._audited_services = frozenset(audited_services)
        self._budget_s = request_budget_s
        self._request_id_key = request_id_key
        self._running: set[asyncio.Future[Any]] = set()
        self._stopping = False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        rpc = handler_call_details.method.lstrip("/")
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = _request_id(metadata, self._request_id_key)
        if rpc.rpartition("/")[0] in self._audited_services:
            return self._audited_handler(handler, rpc, request_id)
        return self._plain_handler(handler, rpc, request_id)

    def stopping(self) -> None:
        """Shutdown has begun: calls cut off from now on are recorded as ended by it."""
        self._stopping = True

    async def drain(self) -> None:
        """Wait until every call that has started has written its entry (after server.stop).

        Calls are bounded by the request budget, so this ends; the bound below is a backstop.
        """
        deadline = asyncio.get_running_loop().time() + self._budget_s + 5.0
        while self._running:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                _log.error("drain_timed_out", calls=len(self._running))
                return
            await asyncio.wait(set(self._running), timeout=left)

    # -- audited services: every handler kind either audited or refused --------------------

    def _audited_handler(self, handler: Handler, rpc: str, request_id: str) -> Handler:
        parse = _lenient(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary:
            behavior = handler.unary_unary

            async def unary(request: Any, context: Context) -> Any:
                return (await self._serve(behavior, request, context, rpc, request_id))[0]

            return grpc.unary_unary_rpc_method_handler(unary, parse, serialize)
        if handler.unary_stream:
            behavior = handler.unary_stream

            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                for message in await self._serve(
                    behavior, request, context, rpc, request_id, stream=True
                ):
                    yield message

            return grpc.unary_stream_rpc_method_handler(stream, parse, serialize)
        return self._refused_kind(handler, rpc, request_id)

    def _refused_kind(self, handler: Handler, rpc: str, request_id: str) -> Handler:
        """A client-streaming handler: refused (and audited), since its entry has no design."""

        async def refuse(request: Any, context: Context) -> Any:
            raise NotSupported(f"{rpc} streams requests, which this gateway does not serve")

        async def unary(requests: Any, context: Context) -> Any:
            return (await self._serve(refuse, None, context, rpc, request_id))[0]

        async def stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            for message in await self._serve(refuse, None, context, rpc, request_id):
                yield message

        serialize = handler.response_serializer
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(stream, None, serialize)
        return grpc.stream_unary_rpc_method_handler(unary, None, serialize)

    async def _serve(
        self,
        behavior: _Behavior,
        request: Any,
        context: Context,
        rpc: str,
        request_id: str,
        *,
        stream: bool = False,
    ) -> list[Any]:
        """Run one call to its end and audit it; return the messages to release, or abort."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=rpc)
        call = _Started(rpc, request_id, dt.datetime.now(dt.UTC), *_peer_identity(context))
        try:
            ended = await self._run(behavior, request, context, call, stream)
            ended, trailers = await self._audited(call, _too_late(ended, context), started, stream)
        finally:
            if call.ticket is not None:
                call.ticket.release()
            if task is not None:
                self._running.discard(task)
        error = ended.error
        code, reason = (error.code.name, error.reason) if error else ("OK", "")
        # A shed call is logged and audited per interval (gateway.admission.ShedAudit).
        self._finish(rpc, started, code, reason, log=not isinstance(error, Shed))
        if ended.cancelled is not None:
            raise ended.cancelled
        if error is None:
            context.set_trailing_metadata(trailers)
            return ended.messages
        await _abort(context, error, trailers)
        raise AssertionError("unreachable: abort raises")

    async def _run(
        self, behavior: _Behavior, request: Any, context: Context, call: _Started, stream: bool
    ) -> _Ended:
        """Authenticate, then the service's part of the call within the request budget."""
        try:
            try:
                caller = self._authenticate(call.org_id, call.cert_sha256)
            except (Unauthenticated, OrgSuspended):
                if self._admission is not None:  # a flood of refusals is shed, not logged
                    self._admission.admit_refused(call.cert_sha256 or "none")
                raise
            call.org_type = caller.org.org_type.value
            admission = self._admission
            if admission is not None:  # or Shed, at once (after a round trip if shared)
                call.ticket = (
                    admission.admit(caller.org)
                    if admission.shared is None
                    else await admission.admit_shared(caller.org)
                )
            _check_request(request, call.rpc)
            token = bind_call(
                Call(
                    call.request_id,
                    call.rpc,
                    caller,
                    call.received_at,
                    call.found,
                    functools.partial(self._record_early, call),
                )
            )
            try:
                return _Ended(await self._within_budget(behavior, request, context, stream))
            finally:
                reset_call(token)
        except grpc.aio.AbortError:
            raise
        except GatewayError as exc:
            return _Ended(error=exc)
        except asyncio.CancelledError as exc:
            return _Ended(error=self._cut_off(context), cancelled=exc)
        except NotImplementedError:  # a method the servicer inherits from the generated base
            return _Ended(error=NotSupported(f"{call.rpc} is not served by this gateway yet"))
        except Exception as exc:
            return _Ended(error=_internal(exc))

    async def _within_budget(
        self, behavior: _Behavior, request: Any, context: Context, stream: bool
    ) -> list[Any]:
        remaining = context.time_remaining()
        budget = self._budget_s if remaining is None else min(self._budget_s, remaining)
        try:
            async with asyncio.timeout(budget) as bound:
                return await _invoke(behavior, request, context, stream=stream)
        except TimeoutError:
            if not bound.expired():
                raise
            if remaining is not None and remaining <= self._budget_s:
                raise CallerDeadline(
                    "the caller's deadline passed before the call finished"
                ) from None
            raise RequestBudgetExceeded(
                f"the request did not finish within its budget of {budget:.3g} s (the smaller "
                f"of the caller's deadline and the gateway's request_budget_s); nothing was "
                f"released"
            ) from None

    async def _audited(
        self, call: _Started, ended: _Ended, started: float, stream: bool
    ) -> tuple[_Ended, tuple[tuple[str, str], ...]]:
        """Append the call's entry; what to release (nothing if the append failed or replayed)."""
        trailers: tuple[tuple[str, str], ...] = (("onecard-request-id", call.request_id),)
        if self._audit is None or isinstance(ended.error, Shed):
            return ended, trailers
        error, messages = ended.error, ended.messages
        if call.early is not None and error is None:  # its entry is written: the early one
            attach_receipt(messages[0], call.early)
            return ended, trailers + _receipt_trailers(call.early)
        try:
            receipt = await self._append(
                self._audit,
                call,
                outcome=error.code.name if error else "OK",
                reason=error.reason if error else "",
                released=None if error else messages if stream else messages[0],
                latency_us=int((time.perf_counter() - started) * 1e6),
            )
        except GatewayError as exc:
            return _Ended(error=exc, cancelled=ended.cancelled), trailers
        trailers += _receipt_trailers(receipt)
        if receipt.replayed:
            return _Ended(error=_spent(receipt.refusal), cancelled=ended.cancelled), trailers
        if error is None:
            attach_receipt(messages[0], receipt)
        return ended, trailers

    async def _append(
        self,
        audit: AuditStage,
        call: _Started,
        *,
        outcome: str,
        reason: str,
        released: Any,
        latency_us: int,
    ) -> Receipt:
        """Append the call's entry with its findings so far."""
        appending = asyncio.ensure_future(
            audit.record(
                received_at=call.received_at,
                request_id=call.request_id,
                rpc=call.rpc,
                org=call.org_id or "",
                org_type=call.org_type,
                cert_sha256=call.cert_sha256,
                findings=call.findings,
                outcome=outcome,
                reason=reason,
                released=released,
                latency_us=latency_us,
            )
        )
        # A cancelled call still writes its entry: the append runs on even if this task is
        # cancelled again, and drain() waits for it before the store closes.
        self._running.add(appending)
        appending.add_done_callback(self._running.discard)
        return await asyncio.shield(appending)

    async def _record_early(self, call: _Started, findings: Findings) -> Receipt:
        """``Call.record``: the call's entry now, as answered (the early append rule above)."""
        if self._audit is None:
            raise NotSupported("this gateway keeps no audit log: no entry can be written early")
        if call.early is not None:
            raise RuntimeError("a call's entry is written early once at most")
        if findings.spend is not None:  # a spend is taken with the entry of a released answer
            raise RuntimeError("a call that spends a token or a consent use cannot record early")
        call.findings = findings
        elapsed = dt.datetime.now(dt.UTC) - call.received_at
        call.early = await self._append(
            self._audit,
            call,
            outcome="OK",
            reason="",
            released=None,
            latency_us=int(elapsed.total_seconds() * 1e6),
        )
        return call.early

    def _cut_off(self, context: Context) -> GatewayError:
        """The error that records a call which gRPC cancelled before it finished."""
        if self._stopping:
            return CutOff("the gateway shut down before the call finished", reason="shutdown")
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return CallerDeadline("the caller's deadline passed before the call finished")
        return CallerCancelled("the caller cancelled the call before it finished")

    # -- other services (health, reflection): authenticated, logged, not audited -----------

    def _plain_handler(self, handler: Handler, rpc: str, request_id: str) -> Handler:
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        behavior: Any = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )

        async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
            async for item in self._plain(behavior, request, context, rpc, request_id):
                yield item

        async def single(request: Any, context: Context) -> Any:
            # Run the generator to its end here, so that it resets the call in this context.
            items = [
                item async for item in self._plain(behavior, request, context, rpc, request_id)
            ]
            return items[0] if items else None

        make = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
        wrapped: Handler = make(
            streaming if handler.response_streaming else single, deserialize, serialize
        )
        return wrapped

    async def _plain(
        self, behavior: _Behavior, request: Any, context: Context, rpc: str, request_id: str
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=rpc)
        try:
            caller = self._authenticate(*_peer_identity(context))
        except GatewayError as exc:
            self._finish(rpc, started, exc.code.name, exc.reason)
            await _abort(context, exc, (("onecard-request-id", request_id),))
            return
        token = bind_call(Call(request_id, rpc, caller, dt.datetime.now(dt.UTC)))
        code = "OK"
        try:
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                yield await result
        except BaseException as exc:
            code = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"
            raise
        finally:
            reset_call(token)
            self._finish(rpc, started, code, "")

    def _authenticate(self, org_id: str | None, fingerprint: str) -> Caller:
        if not fingerprint:
            raise Unauthenticated("a client certificate issued by the OneCard CA is required")
        org = self._orgs.get(org_id) if org_id else None
        if org is None:
            raise Unauthenticated(
                "the client certificate names no organisation registered with this gateway "
                "(its SAN URI must be urn:onecard:org:<org id>, exactly as issued)",
                reason="unknown_org",
            )
        if org.status is not OrgStatus.ACTIVE:
            raise OrgSuspended(f"organisation {org.org_id} is {org.status.value}")
        structlog.contextvars.bind_contextvars(org_id=org.org_id)
        return Caller(org, fingerprint)

    def _finish(
        self, rpc: str, started: float, code: str, reason: str, *, log: bool = True
    ) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.requests.labels(rpc, code, reason).inc()
        self._metrics.latency.labels(rpc).observe(elapsed)
        latency_ms = round(elapsed * 1000, 3)
        if not log:
            pass
        elif code == "OK":
            _log.info("rpc_completed", code=code, latency_ms=latency_ms)
        else:
            _log.info("rpc_refused", code=code, reason=reason, latency_ms=latency_ms)
        structlog.contextvars.clear_contextvars()


def _too_late(ended: _Ended, context: Context) -> _Ended:
    """An answer whose caller's deadline has passed is recorded as not released.

    The caller will not receive it, so it must not be logged as released nor use up the token.
    (What is left is the short window between this check and the entry's commit.)
    """
    remaining = context.time_remaining()
    if ended.error is None and remaining is not None and remaining <= 0:
        error = CallerDeadline("the caller's deadline passed before the answer could be released")
        return _Ended(error=error, cancelled=ended.cancelled)
    return ended


def _check_request(request: Any, rpc: str) -> None:
    """The request decoded, and its enums and timestamps hold declared values."""
    if isinstance(request, Undecodable):
        raise InvalidRequest(
            f"the request is not a valid {rpc} request message (truncated, of another type, "
            f"or a text field holding invalid UTF-8); check the client's generated stubs",
            reason="undecodable_request",
        )
    if isinstance(request, Message):  # None for a refused client-streaming call
        check_request(request)


_SPENT = {
    "token_replayed": "card-present token was already used",
    "consent_revoked": "the consent was revoked; the citizen can grant a new one",
    "consent_expired": "the consent's validity period has ended",
    "consent_exhausted": "the consent has no uses left; the citizen can grant a new one",
}


def _spent(refusal: str) -> GatewayError:
    """The refusal of an answer whose spend failed in the log's batch (nothing released)."""
    reason = refusal if refusal in _SPENT else "token_replayed"
    return BasisRefused(_SPENT[reason], reason=reason)


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that never raises: bad bytes become ``Undecodable`` for ``_serve``."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # any decoding failure is the caller's bad input
            return Undecodable()

    return parse


async def _abort(context: Context, exc: GatewayError, trailers: Iterable[tuple[str, str]]) -> None:
    await context.abort(
        exc.code, exc.message, trailing_metadata=(("onecard-reason", exc.reason), *trailers)
    )


async def _invoke(
    behavior: _Behavior, request: Any, context: Context, *, stream: bool
) -> list[Any]:
    if stream:
        return [message async for message in behavior(request, context)]
    return [await behavior(request, context)]


def _receipt_trailers(receipt: Receipt) -> tuple[tuple[str, str], ...]:
    return (
        ("onecard-audit-index", str(receipt.index)),
        ("onecard-audit-leaf-hash", receipt.leaf_hash.hex()),
    )


def _peer_identity(context: Context) -> tuple[str | None, str]:
    """The org id the client certificate names and its SHA-256 ("" without a certificate)."""
    pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
    if pem is None:
        return None, ""
    return _identity(pem)


@lru_cache(maxsize=1024)
def _identity(pem: bytes) -> tuple[str | None, str]:
    return org_id_from_cert(pem), cert_fingerprint(pem)


def _request_id(metadata: dict[str, str | bytes], key: bytes) -> str:
    """The call's request id: derived from the caller's, if it has a safe shape; else fresh.

    A caller may send a W3C ``traceparent`` (version 00) or an ``x-request-id`` that is an RFC
    9562 UUID. Even those shapes have room for digits (an ID number fits in a trace id), so the
    caller's id is never stored as sent: the id used is a UUID (version 8) keyed-derived from it,
    HMAC-SHA256(key, id), the same for the same id (retries and a trace's calls stay together),
    and the caller learns it from the ``onecard-request-id`` trailer. Anything else gets a random
    UUID.
    """
    given = _caller_id(metadata)
    if given is None:
        return str(uuid.uuid4())
    raw = bytearray(hmac.new(key, given.encode("ascii"), hashlib.sha256).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8: custom
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def _caller_id(metadata: dict[str, str | bytes]) -> str | None:
    trace = metadata.get("traceparent")
    if isinstance(trace, str):
        match = _TRACEPARENT.fullmatch(trace.lower())
        if match and set(match[1]) != {"0"} and set(match[2]) != {"0"}:
            return match[0]
    given = metadata.get("x-request-id")
    if isinstance(given, str) and _UUID.fullmatch(given.lower()):
        return given.lower()
    return None


def _internal(exc: Exception) -> GatewayError:
    # Log where it failed, never the message: it may carry personal data from a library.
    frames = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    _log.error("rpc_internal_error", error_type=type(exc).__name__, frames=frames[-6:])
    return GatewayError("internal error; the request id identifies it in the gateway's logs")
