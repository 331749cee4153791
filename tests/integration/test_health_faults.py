"""FHIR server faults through the gateway: each a clear status and an audit entry, no hang, and
none of the server's text in what the caller gets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from adapters.fhir import seed
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from tests.integration.conftest import CITIZEN_APP, HOSPITAL
from tests.integration.fhir_faults import SERVER_TEXT, FaultyFhir, faulty_fhir
from tests.integration.health import LAB, list_records
from tests.integration.served import free_port

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
TIMEOUT_S = 0.5

EXPECTED = {
    "invalid_json": ("UNAVAILABLE", "backend_malformed", "FHIR server sent a malformed answer"),
    "invalid_fhir": ("UNAVAILABLE", "backend_malformed", "FHIR server sent a malformed answer"),
    "operation_outcome": ("UNAVAILABLE", "backend_unavailable", "FHIR server answered HTTP 500"),
    "outcome_instead_of_bundle": (
        "UNAVAILABLE",
        "backend_malformed",
        "FHIR server sent a malformed answer",
    ),
    "hang": (
        "DEADLINE_EXCEEDED",
        "backend_timeout",
        f"FHIR server did not answer within {TIMEOUT_S:g}s",
    ),
    "paging_loop": ("UNAVAILABLE", "backend_malformed", "FHIR server sent a malformed answer"),
    "next_outside_base": (
        "UNAVAILABLE",
        "backend_malformed",
        "FHIR server sent a malformed answer",
    ),
    "wrong_person": (
        "UNAVAILABLE",
        "backend_malformed",
        "FHIR server answered for a different person",
    ),
}
EVENTS = {
    "invalid_json": "fhir_not_json",
    "invalid_fhir": "fhir_invalid_resource",
    "operation_outcome": "fhir_http_error",
    "outcome_instead_of_bundle": "fhir_not_a_bundle",
    "hang": "fhir_timeout",
    "paging_loop": "fhir_paging_loop",
    "next_outside_base": "fhir_next_link_outside_base",
    "wrong_person": "fhir_wrong_person",
}


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyFhir]:
    async with faulty_fhir() as server:
        yield server


async def _fails(gateway: Gateway, pki: PkiLayout) -> grpc.aio.AioRpcError:
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await list_records(hosp, app, seed.RICH_PERSON, LAB, page_size=100)
    return info.value


async def _audited(gateway: Gateway, error: grpc.aio.AioRpcError) -> dict[str, Any]:
    index = int(dict(error.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    assert SERVER_TEXT.encode() not in entry.leaf
    record: dict[str, Any] = json.loads(entry.leaf)["r"]
    return record


@pytest.mark.parametrize("fault", sorted(EXPECTED))
async def test_a_faulty_fhir_server_is_a_clear_audited_failure(
    gateway_factory: Callable[..., Any], pki: PkiLayout, faulty: FaultyFhir, fault: str
) -> None:
    # Only the hanging server needs a short cap; the others answer at once, on a busy machine too.
    timeout_s = TIMEOUT_S if fault == "hang" else 2.5
    gateway: Gateway = await gateway_factory(
        backends={"fhir": {"url": faulty.url, "timeout_s": timeout_s}}
    )
    faulty.fault = fault
    with capture_logs() as logs:
        error = await _fails(gateway, pki)
    code, why, message = EXPECTED[fault]
    assert (error.code().name, reason(error), error.details()) == (code, why, message)
    trailers = json.dumps(dict(error.trailing_metadata() or ()), ensure_ascii=False)
    assert "SERVER-DIAGNOSTICS" not in trailers
    assert EVENTS[fault] in [log["event"] for log in logs]
    assert "SERVER-DIAGNOSTICS" not in json.dumps(logs, default=str)
    record = await _audited(gateway, error)
    assert (record["outcome"], record["reason"], record["backend"], record["released_sha256"]) == (
        code,
        why,
        "fhir",
        "",
    )
    if fault == "paging_loop":
        assert faulty.searches == 2  # the first page, then the link back to it: not followed


async def test_the_same_source_answers_again_once_the_fault_is_gone(
    gateway_factory: Callable[..., Any], pki: PkiLayout, faulty: FaultyFhir
) -> None:
    """Pages beyond the first name the reference server's own address: the adapter rebases
    them onto the configured base URL (the proxy), and so pages through it."""
    gateway: Gateway = await gateway_factory(
        backends={"fhir": {"url": faulty.url, "options": {"page_size": "10"}}}
    )
    faulty.fault = "invalid_json"
    await _fails(gateway, pki)
    faulty.fault, faulty.searches = "", 0
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        answer = await list_records(hosp, app, seed.RICH_PERSON, LAB, page_size=100)
    assert len(answer.records) == seed.RICH_LAB_REPORTS
    assert faulty.searches == -(-seed.RICH_LAB_REPORTS // 10)  # every page went through the proxy


async def test_a_fhir_server_that_is_down_is_unavailable_and_audited(
    gateway_factory: Callable[..., Any], pki: PkiLayout
) -> None:
    gateway: Gateway = await gateway_factory(
        backends={"fhir": {"url": f"http://127.0.0.1:{free_port()}/fhir"}}
    )
    error = await _fails(gateway, pki)
    assert (error.code(), reason(error), error.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "backend_unavailable",
        "FHIR server is unreachable",
    )
    record = await _audited(gateway, error)
    assert (record["outcome"], record["reason"]) == ("UNAVAILABLE", "backend_unavailable")
