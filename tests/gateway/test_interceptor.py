"""The interceptor with a fake servicer context and a fake audit log: how every call ends."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from gateway.api.onecard.v1 import card_pb2
from gateway.audit.log import TokenSpend
from gateway.audit.stage import AuditStage
from gateway.context import current_call
from gateway.errors import BackendUnavailable, StoreUnavailable
from gateway.findings import Findings
from gateway.interceptor import GatewayInterceptor, Undecodable
from gateway.metrics import Metrics
from gateway.orgs import OrgRegistry
from gateway.pki import PkiLayout, init_pki
from tests.gateway.fakes import FakeAuditLog

SERVICE = "onecard.v1.CardService"
RPC = f"{SERVICE}/VerifyCard"
HOSPITAL = "hosp-bj-001"


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[Any, ...]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailers = code, details, dict(trailers)


class FakeContext:
    """The parts of ``grpc.aio.ServicerContext`` the interceptor uses."""

    def __init__(self, cert_pem: bytes | None, remaining: float | None = None) -> None:
        self._auth = {"x509_pem_cert": [cert_pem]} if cert_pem else {}
        self._remaining = remaining
        self.trailers: dict[str, str] = {}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def time_remaining(self) -> float | None:
        return self._remaining

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        self.trailers = dict(trailers)

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any) -> None:
        raise Aborted(code, details, trailing_metadata)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


class Setup:
    def __init__(self, pki: PkiLayout) -> None:
        self.log = FakeAuditLog()
        self.interceptor = GatewayInterceptor(
            OrgRegistry.load(pki.orgs_file),
            Metrics.create(),
            AuditStage(self.log),
            audited_services={SERVICE},
            request_budget_s=0.2,
            request_id_key=b"k" * 32,
        )
        self.cert = pki.client_cert(HOSPITAL).read_bytes()

    async def call(
        self,
        behavior: Callable[..., Any],
        request: Any = None,
        *,
        rpc: str = RPC,
        metadata: tuple[tuple[str, str], ...] = (),
        context: FakeContext | None = None,
    ) -> tuple[Any, FakeContext]:
        handler = grpc.unary_unary_rpc_method_handler(behavior)

        async def continuation(details: Any) -> Any:
            return handler

        details = _Details(f"/{rpc}", metadata)
        wrapped = await self.interceptor.intercept_service(continuation, details)
        context = context or FakeContext(self.cert)
        if request is None:
            request = card_pb2.VerifyCardRequest()
        return await wrapped.unary_unary(request, context), context

    def record(self, n: int = -1) -> dict[str, Any]:
        return json.loads(self.log.records[n].body())  # type: ignore[no-any-return]


class _Details:
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method, self.invocation_metadata = method, metadata


@pytest.fixture
def setup(pki: PkiLayout) -> Setup:
    return Setup(pki)


def _answer(response: Any = None) -> Callable[..., Any]:
    async def behavior(request: Any, context: Any) -> Any:
        current_call().report(Findings(decision="allow"))
        return response if response is not None else card_pb2.VerifyCardResponse()

    return behavior


def _raising(exc: BaseException) -> Callable[..., Any]:
    async def behavior(request: Any, context: Any) -> Any:
        raise exc

    return behavior


async def test_an_answer_is_released_with_its_receipt_after_its_entry(setup: Setup) -> None:
    response, context = await setup.call(
        _answer(card_pb2.VerifyCardResponse(card_holder_valid=True))
    )
    assert response.card_holder_valid and response.receipt.leaf_index == 0
    assert context.trailers["onecard-audit-index"] == "0"
    record = setup.record()
    assert (record["outcome"], record["org"], record["decision"]) == ("OK", HOSPITAL, "allow")
    assert record["released_sha256"] != ""


async def test_a_gateway_error_becomes_its_status_and_is_audited(setup: Setup) -> None:
    with pytest.raises(Aborted) as info:
        await setup.call(_raising(BackendUnavailable("the back end is down")))
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert info.value.trailers["onecard-reason"] == "backend_unavailable"
    assert info.value.trailers["onecard-audit-index"] == "0"
    assert setup.record()["outcome"] == "UNAVAILABLE"


async def test_a_bug_is_internal_without_its_text(setup: Setup) -> None:
    with pytest.raises(Aborted) as info:
        await setup.call(_raising(KeyError("110101199003074477")))
    assert info.value.code is grpc.StatusCode.INTERNAL
    assert "110101199003074477" not in info.value.details
    assert setup.record()["reason"] == "internal"


async def test_a_method_the_servicer_inherits_is_unimplemented_and_audited(setup: Setup) -> None:
    # The generated base class answers a method it does not implement with NotImplementedError.
    with pytest.raises(Aborted) as info:
        await setup.call(_raising(NotImplementedError("Method not implemented!")))
    assert info.value.code is grpc.StatusCode.UNIMPLEMENTED
    assert info.value.trailers["onecard-reason"] == "not_supported"
    assert setup.record()["outcome"] == "UNIMPLEMENTED"


async def test_no_certificate_and_unknown_orgs_are_audited_refusals(setup: Setup) -> None:
    with pytest.raises(Aborted) as info:
        await setup.call(_answer(), context=FakeContext(None))
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert setup.record()["outcome"] == "UNAUTHENTICATED"


async def test_undecodable_bytes_are_invalid_argument(setup: Setup) -> None:
    with pytest.raises(Aborted) as info:
        await setup.call(_answer(), Undecodable())
    assert info.value.trailers["onecard-reason"] == "undecodable_request"
    assert setup.record()["outcome"] == "INVALID_ARGUMENT"


async def test_the_budget_ends_a_slow_call_with_its_entry(setup: Setup) -> None:
    with pytest.raises(Aborted) as info:
        await setup.call(_raising_after(1.0))
    assert info.value.trailers["onecard-reason"] == "request_budget_exceeded"
    assert setup.record()["outcome"] == "DEADLINE_EXCEEDED"


async def test_a_shorter_caller_deadline_is_the_budget(setup: Setup, pki: PkiLayout) -> None:
    context = FakeContext(pki.client_cert(HOSPITAL).read_bytes(), remaining=0.01)
    with pytest.raises(Aborted) as info:
        await setup.call(_raising_after(0.15), context=context)
    assert info.value.trailers["onecard-reason"] == "caller_deadline"
    assert setup.record()["outcome"] == "DEADLINE_EXCEEDED"


async def test_an_answer_past_the_callers_deadline_is_not_released_nor_redeemed(
    setup: Setup, pki: PkiLayout
) -> None:
    context = FakeContext(pki.client_cert(HOSPITAL).read_bytes(), remaining=1.0)

    async def late(request: Any, context: FakeContext) -> Any:
        current_call().report(Findings(spend=TokenSpend(b"t" * 16, 2_000_000_000)))
        context._remaining = 0.0  # the deadline passes as the answer is ready
        return card_pb2.VerifyCardResponse(card_holder_valid=True)

    with pytest.raises(Aborted) as info:
        await setup.call(late, context=context)
    assert info.value.trailers["onecard-reason"] == "caller_deadline"
    record = setup.record()
    assert (record["outcome"], record["released_sha256"]) == ("DEADLINE_EXCEEDED", "")
    assert not setup.log.ledger.redeemed  # the token is still usable


def _raising_after(seconds: float) -> Callable[..., Any]:
    async def behavior(request: Any, context: Any) -> Any:
        await asyncio.sleep(seconds)
        return card_pb2.VerifyCardResponse()

    return behavior


async def test_a_cancelled_call_writes_its_entry_and_stays_cancelled(setup: Setup) -> None:
    started = asyncio.Event()

    async def behavior(request: Any, context: Any) -> Any:
        started.set()
        await asyncio.sleep(10)

    call = asyncio.ensure_future(setup.call(behavior))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert (setup.record()["outcome"], setup.record()["reason"]) == (
        "CANCELLED",
        "caller_cancelled",
    )


async def test_calls_cut_off_by_shutdown_say_so_and_drain_waits_for_them(setup: Setup) -> None:
    started = asyncio.Event()

    async def behavior(request: Any, context: Any) -> Any:
        started.set()
        await asyncio.sleep(10)

    call = asyncio.ensure_future(setup.call(behavior))
    await started.wait()
    setup.interceptor.stopping()
    call.cancel()
    await setup.interceptor.drain()
    assert setup.record()["reason"] == "shutdown"
    assert call.cancelled()


async def test_a_failed_append_releases_nothing(setup: Setup) -> None:
    setup.log.failing = True
    with pytest.raises(Aborted) as info:
        await setup.call(_answer())
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert info.value.trailers["onecard-reason"] == StoreUnavailable.reason
    assert "onecard-audit-index" not in info.value.trailers


async def test_an_answer_whose_token_was_redeemed_first_is_refused(setup: Setup) -> None:
    async def behavior(request: Any, context: Any) -> Any:
        current_call().report(Findings(spend=TokenSpend(b"t" * 16, 2_000_000_000)))
        return card_pb2.VerifyCardResponse(card_holder_valid=True)

    await setup.call(behavior)
    with pytest.raises(Aborted) as info:
        await setup.call(behavior)
    assert info.value.trailers["onecard-reason"] == "token_replayed"
    assert [r.outcome for r in setup.log.records] == ["OK", "PERMISSION_DENIED"]
    assert setup.log.records[1].released_sha256 == ""


async def test_other_services_are_authenticated_but_not_audited(setup: Setup) -> None:
    response, _ = await setup.call(_answer(), rpc="grpc.health.v1.Health/Check")
    assert response is not None
    assert setup.log.records == []


@pytest.mark.parametrize(
    ("metadata", "derived"),
    [
        ((("x-request-id", "6f1c9d7e-4b1a-4c2e-8f3a-1d2e3f4a5b6c"),), True),
        ((("x-request-id", "110101199003074477"),), False),
        ((("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),), True),
        ((("traceparent", "00-11010519491231002000000000000000-00f067aa0ba902b7-01"),), True),
        ((("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),), False),
    ],
)
async def test_a_callers_id_is_never_stored_as_sent(
    setup: Setup, metadata: tuple[tuple[str, str], ...], derived: bool
) -> None:
    _, context = await setup.call(_answer(), metadata=metadata)
    used = context.trailers["onecard-request-id"]
    _, again = await setup.call(_answer(), metadata=metadata)
    assert metadata[0][1] not in used
    assert uuid.UUID(used).version == (8 if derived else 4)
    assert (again.trailers["onecard-request-id"] == used) is derived  # the same id, derived alike
    assert setup.record(0)["request_id"] == used


# -- an entry written early (Call.record): the access history's own entry ---------------------


def _recording_first(then: BaseException | None = None) -> Callable[..., Any]:
    """A handler that writes its entry early, then answers with its receipt, or fails."""

    async def behavior(request: Any, context: Any) -> Any:
        found = Findings(decision="allow", subject="ab" * 32)
        receipt = await current_call().record(found)
        current_call().report(found)
        if then is not None:
            raise then
        return card_pb2.VerifyCardResponse(masked_name=f"entry {receipt.index}")

    return behavior


async def test_an_entry_written_early_is_the_calls_only_entry_and_its_receipt(
    setup: Setup,
) -> None:
    await setup.call(_answer())  # entry 0: another call's
    response, context = await setup.call(_recording_first())
    assert response.masked_name == "entry 1"  # the handler knew its entry while answering
    assert response.receipt.leaf_index == 1 and context.trailers["onecard-audit-index"] == "1"
    assert len(setup.log.records) == 2  # nothing appended after the answer
    record = setup.record()
    assert (record["outcome"], record["subject"], record["released_sha256"]) == (
        "OK",
        "ab" * 32,
        "",  # the answer holds the entry: it cannot be hashed into it
    )


async def test_a_call_that_fails_after_its_early_entry_records_the_failure_too(
    setup: Setup,
) -> None:
    with pytest.raises(Aborted) as info:
        await setup.call(_recording_first(then=StoreUnavailable("the log could not be read")))
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert info.value.trailers["onecard-audit-index"] == "1"  # the entry of how it ended
    early, ended = setup.record(0), setup.record(1)
    assert early["outcome"] == "OK" and ended["outcome"] == "UNAVAILABLE"
    assert early["request_id"] == ended["request_id"] and ended["subject"] == "ab" * 32


async def test_an_entry_is_written_early_once_at_most(setup: Setup) -> None:
    async def twice(request: Any, context: Any) -> Any:
        await current_call().record(Findings(decision="allow"))
        await current_call().record(Findings(decision="allow"))
        return card_pb2.VerifyCardResponse()

    with pytest.raises(Aborted) as info:
        await setup.call(twice)
    assert info.value.code is grpc.StatusCode.INTERNAL
    assert [json.loads(r.body())["outcome"] for r in setup.log.records] == ["OK", "INTERNAL"]
