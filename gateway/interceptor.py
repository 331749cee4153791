"""The interceptor: who is calling, which call this is, and how errors become statuses.

For every RPC it (1) authenticates the caller from the mutual-TLS certificate against the org
registry, (2) binds a request id and the caller to the call's context, (3) turns a
``GatewayError`` into its gRPC status with a safe message and an ``onecard-reason`` trailer, and
any other exception into INTERNAL without detail, and (4) logs and counts the outcome.
TLS itself (a certificate from the OneCard CA, not expired) is enforced by the transport before
this code runs.
"""

from __future__ import annotations

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

from gateway.context import Call, Caller, bind_call, reset_call
from gateway.errors import GatewayError, OrgSuspended, Unauthenticated
from gateway.metrics import Metrics
from gateway.orgs import OrgRegistry, OrgStatus
from gateway.pki import cert_fingerprint, org_id_from_cert

_log = structlog.get_logger("gateway.rpc")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_Behavior = Callable[..., Any]
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates callers and maps errors to statuses for every RPC."""

    def __init__(self, orgs: OrgRegistry, metrics: Metrics) -> None:
        self._orgs = orgs
        self._metrics = metrics

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
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, rpc, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, rpc, request_id),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client streaming: none of our services use it

    def _wrap_unary(self, behavior: _Behavior, rpc: str, request_id: str) -> _Behavior:
        async def unary(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                token = bind_call(self._call(context, rpc, request_id))
                try:
                    response = await behavior(request, context)
                finally:
                    reset_call(token)
            except grpc.aio.AbortError:
                raise
            except GatewayError as exc:
                error = exc
            except Exception as exc:
                error = _internal(exc)
            else:
                self._finish(rpc, started, "OK", "")
                return response
            self._finish(rpc, started, error.code.name, error.reason)
            await _abort(context, error, request_id)
            return None  # unreachable: abort raises

        return unary

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
        caller = self._authenticate(context)
        structlog.contextvars.bind_contextvars(org_id=caller.org.org_id)
        return Call(request_id, rpc, caller, dt.datetime.now(dt.UTC))

    def _authenticate(self, context: Context) -> Caller:
        pem = next(iter(context.auth_context().get("x509_pem_cert", ())), None)
        if pem is None:
            raise Unauthenticated("a client certificate issued by the OneCard CA is required")
        org_id, fingerprint = _identity(pem)
        org = self._orgs.get(org_id) if org_id else None
        if org is None:
            raise Unauthenticated(
                "the client certificate names no organisation registered with this gateway",
                reason="unknown_org",
            )
        if org.status is not OrgStatus.ACTIVE:
            raise OrgSuspended(f"organisation {org.org_id} is {org.status.value}")
        return Caller(org, fingerprint)

    def _finish(self, rpc: str, started: float, code: str, reason: str) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.requests.labels(rpc, code, reason).inc()
        self._metrics.latency.labels(rpc).observe(elapsed)
        latency_ms = round(elapsed * 1000, 3)
        if code == "OK":
            _log.info("rpc_completed", code=code, latency_ms=latency_ms)
        else:
            _log.info("rpc_refused", code=code, reason=reason, latency_ms=latency_ms)
        structlog.contextvars.clear_contextvars()


async def _abort(context: Context, exc: GatewayError, request_id: str) -> None:
    await context.abort(
        exc.code,
        exc.message,
        trailing_metadata=(("onecard-reason", exc.reason), ("onecard-request-id", request_id)),
    )


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
