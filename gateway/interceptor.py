"""The interceptor: who is calling, which call this is, and how errors become statuses.

For every RPC it (1) authenticates the caller from the mutual-TLS certificate against the org
registry and, for a ``onecard.v1`` call, asks admission control (``gateway.admission``) whether
it may start (a shed call is counted, not audited on its own, nor logged), (2) binds a request
id and the caller to the call's context, (3) turns a ``GatewayError`` into its gRPC status with
a safe message and an ``onecard-reason`` trailer, and any other exception into INTERNAL without
detail, (4) appends every ``onecard.v1`` exchange, allowed or refused, to the audit log before
anything is released (a server stream is collected first, so that its entry covers everything
it sends), and (5) logs and counts the outcome.
TLS itself (a certificate from the OneCard CA, not expired) is enforced by the transport before
this code runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Any, TypeAlias

import grpc
import structlog

from gateway.admission import Admission
from gateway.audit.log import Receipt
from gateway.audit.record import Trail
from gateway.audit.stage import AuditStage, attach_receipt
from gateway.context import Call, Caller, bind_call, reset_call
from gateway.errors import GatewayError, OrgSuspended, Shed, Unauthenticated
from gateway.metrics import Metrics
from gateway.orgs import OrgRegistry, OrgStatus
from gateway.pki import cert_fingerprint, org_id_from_cert

_log = structlog.get_logger("gateway.rpc")
_AUDITED_PREFIX = "onecard.v1."
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_Behavior = Callable[..., Any]
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates callers and maps errors to statuses for every RPC."""

    def __init__(
        self,
        orgs: OrgRegistry,
        metrics: Metrics,
        audit: AuditStage | None,
        admission: Admission | None = None,
    ) -> None:
        self._orgs = orgs
        self._metrics = metrics
        self._audit = audit
        self._admission = admission

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
        request_id = _request_id(metadata.get("x-request-id"))
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, rpc, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            audited = rpc.startswith(_AUDITED_PREFIX)
            wrap = self._wrap_audited_stream if audited else self._wrap_stream
            return grpc.unary_stream_rpc_method_handler(
                wrap(handler.unary_stream, rpc, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, rpc, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Client streaming: no service uses it. A onecard.v1 RPC of that kind (or a bidirectional
        # one, wrapped above without an audit entry) would need its own audit design first.
        return handler

    def _wrap_unary(self, behavior: _Behavior, rpc: str, request_id: str) -> _Behavior:
        async def unary(request: Any, context: Context) -> Any:
            return (await self._serve(behavior, request, context, rpc, request_id))[0]

        return unary

    def _wrap_audited_stream(self, behavior: _Behavior, rpc: str, request_id: str) -> _Behavior:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            messages = await self._serve(behavior, request, context, rpc, request_id, stream=True)
            for message in messages:
                yield message

        return stream

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
        """Run one call to its end and audit it; return the messages to release, or abort.

        A stream's messages are collected first (services bound how many), so that the
        entry, with the digest of everything the stream will release, is durable before the
        first message leaves.
        """
        started = time.perf_counter()
        received_at = dt.datetime.now(dt.UTC)
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=rpc)
        org_id, fingerprint = _peer_identity(context)
        trail = Trail()
        org_type = ""
        messages: list[Any] = []
        try:
            caller = self._authenticate(org_id, fingerprint)
            org_type = caller.org.org_type.value
            # Admission control: shed now (no work, no entry of its own) or hold a place.
            admission = self._admission if rpc.startswith(_AUDITED_PREFIX) else None
            with admission.admit(caller.org) if admission else contextlib.nullcontext():
                token = bind_call(Call(request_id, rpc, caller, received_at, trail))
                try:
                    messages = await _invoke(behavior, request, context, stream=stream)
                finally:
                    reset_call(token)
        except grpc.aio.AbortError:
            raise
        except GatewayError as exc:
            error: GatewayError | None = exc
        except Exception as exc:
            error = _internal(exc)
        else:
            error = None
        trailers: tuple[tuple[str, str], ...] = ()
        shed = isinstance(error, Shed)  # audited in aggregate (gateway.admission.ShedAudit)
        if self._audit is not None and rpc.startswith(_AUDITED_PREFIX) and not shed:
            try:
                receipt = await self._audit.record(
                    received_at=received_at,
                    request_id=request_id,
                    rpc=rpc,
                    org=org_id or "",
                    org_type=org_type,
                    cert_sha256=fingerprint,
                    trail=trail,
                    outcome=error.code.name if error else "OK",
                    reason=error.reason if error else "",
                    released=None if error else messages if stream else messages[0],
                    latency_us=int((time.perf_counter() - started) * 1e6),
                )
            except GatewayError as exc:
                error, messages = exc, []
            else:
                if error is None and messages:
                    attach_receipt(messages[0], receipt)
                trailers = _receipt_trailers(receipt)
        if error is None:
            self._finish(rpc, started, "OK", "")
            if stream and trailers:
                context.set_trailing_metadata(trailers)
            return messages
        self._finish(rpc, started, error.code.name, error.reason, log=not shed)
        await _abort(context, error, request_id, trailers)
        raise AssertionError("unreachable: abort raises")

    def _wrap_stream(self, behavior: _Behavior, rpc: str, request_id: str) -> _Behavior:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                token = bind_call(self._call(context, rpc, request_id))
            except GatewayError as exc:
                self._finish(rpc, started, exc.code.name, exc.reason)
                await _abort(context, exc, request_id)
                return
            try:
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
            except GatewayError as exc:
                self._finish(rpc, started, exc.code.name, exc.reason)
                await _abort(context, exc, request_id)
            else:
                self._finish(rpc, started, "OK", "")
            finally:
                reset_call(token)

        return stream

    def _call(self, context: Context, rpc: str, request_id: str) -> Call:
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=rpc)
        caller = self._authenticate(*_peer_identity(context))
        return Call(request_id, rpc, caller, dt.datetime.now(dt.UTC))

    def _authenticate(self, org_id: str | None, fingerprint: str) -> Caller:
        if not fingerprint:
            raise Unauthenticated("a client certificate issued by the OneCard CA is required")
        org = self._orgs.get(org_id) if org_id else None
        if org is None:
            raise Unauthenticated(
                "the client certificate names no organisation registered with this gateway",
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
        if not log:  # shed calls: logged per interval by gateway.admission.ShedAudit
            pass
        elif code == "OK":
            _log.info("rpc_completed", code=code, latency_ms=latency_ms)
        else:
            _log.info("rpc_refused", code=code, reason=reason, latency_ms=latency_ms)
        structlog.contextvars.clear_contextvars()


async def _abort(
    context: Context,
    exc: GatewayError,
    request_id: str,
    extra_trailers: tuple[tuple[str, str], ...] = (),
) -> None:
    await context.abort(
        exc.code,
        exc.message,
        trailing_metadata=(
            ("onecard-reason", exc.reason),
            ("onecard-request-id", request_id),
            *extra_trailers,
        ),
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


def _request_id(given: str | bytes | None) -> str:
    if isinstance(given, str) and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _internal(exc: Exception) -> GatewayError:
    # Log where it failed, never the message: it may carry personal data from a library.
    frames = [f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    _log.error("rpc_internal_error", error_type=type(exc).__name__, frames=frames[-6:])
    return GatewayError("internal error; the request id identifies it in the gateway's logs")
