"""Mutual TLS and organisation checks, health, reflection, metrics, back-end failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from adapters.social_insurance.seed import Population
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import CertificateAuthority, PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, SUSPENDED

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]


def _channel(gateway: Gateway, ca: bytes, cert: bytes | None, key: bytes | None) -> Any:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(gateway.target, creds)


async def _refused_at_transport(channel: grpc.aio.Channel, number: str) -> grpc.aio.AioRpcError:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(issue_token(channel, number), timeout=10)
    return info.value


async def test_a_client_without_a_certificate_is_refused(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    err = await _refused_at_transport(
        _channel(gateway, pki.ca_cert.read_bytes(), None, None), person.id_number
    )
    assert err.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    rogue = CertificateAuthority.generate("Rogue CA").issue_client(HOSPITAL)
    err = await _refused_at_transport(
        _channel(gateway, pki.ca_cert.read_bytes(), rogue.cert_pem, rogue.key_pem),
        person.id_number,
    )
    assert err.code() is grpc.StatusCode.UNAVAILABLE


async def test_an_expired_certificate_is_refused(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    ca = CertificateAuthority.load(pki.ca_cert, pki.ca_key)
    now = dt.datetime.now(dt.UTC)
    expired = ca.issue_client(
        CITIZEN_APP, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
    err = await _refused_at_transport(
        _channel(gateway, pki.ca_cert.read_bytes(), expired.cert_pem, expired.key_pem),
        person.id_number,
    )
    assert err.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_naming_an_unknown_org_is_unauthenticated(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    ca = CertificateAuthority.load(pki.ca_cert, pki.ca_key)
    stranger = ca.issue_client("hosp-nowhere-404")
    err = await _refused_at_transport(
        _channel(gateway, pki.ca_cert.read_bytes(), stranger.cert_pem, stranger.key_pem),
        person.id_number,
    )
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason(err) == "unknown_org"


async def test_a_suspended_org_is_refused(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    err = await _refused_at_transport(
        _channel(
            gateway,
            pki.ca_cert.read_bytes(),
            pki.client_cert(SUSPENDED).read_bytes(),
            pki.client_key(SUSPENDED).read_bytes(),
        ),
        person.id_number,
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(err) == "org_suspended"


async def test_health_and_reflection_are_served(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(HOSPITAL) as ch:
        with capture_logs() as events:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="onecard.v1.InsuranceService")
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The call ran to its end in its own context: logged once, as completed.
        assert [e["event"] for e in events if e["event"].startswith("rpc_")] == ["rpc_completed"]

        stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo()
        await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await stream.read()
        await stream.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert {"onecard.v1.CardService", "onecard.v1.InsuranceService"} <= names


async def test_metrics_count_requests_by_outcome(
    gateway: Gateway, channel: Callable[[str], grpc.aio.Channel], population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    lost = population.first(card_status=CardStatus.LOCKED)
    async with channel(CITIZEN_APP) as app:
        await issue_token(app, person.id_number)
        with pytest.raises(grpc.aio.AioRpcError):
            await issue_token(app, lost.id_number)
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    ok = 'code="OK",reason="",rpc="onecard.v1.CardService/IssueCardToken"} 1.0'
    assert f"onecard_requests_total{{{ok}" in body
    assert 'code="FAILED_PRECONDITION",reason="card_locked"' in body
    assert 'onecard_policy_decisions_total{action="IssueCardToken",decision="allow"} 1.0' in body
    assert person.id_number not in body


@pytest.fixture
async def hanging_backend() -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_hanging_backend_is_deadline_exceeded(
    gateway_factory: Callable[..., Any], hanging_backend: str, pki: PkiLayout,
    population: Population,
) -> None:  # fmt: skip
    gw: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": hanging_backend, "timeout_s": 0.3}}
    )
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gw.target, pki, CITIZEN_APP) as app:
        started = asyncio.get_running_loop().time()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(app, person.id_number)
        elapsed = asyncio.get_running_loop().time() - started
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not answer" in (info.value.details() or "")
    assert elapsed < 5  # bounded by the back-end deadline, not by the test's patience
    assert await _outcomes(gw) == [("DEADLINE_EXCEEDED", "backend_timeout")]


async def test_a_backend_that_is_down_is_unavailable(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on this port any more

    gw: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": f"http://127.0.0.1:{port}"}}
    )
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gw.target, pki, CITIZEN_APP) as app:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await issue_token(app, person.id_number)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert str(port) not in (info.value.details() or "")
    assert await _outcomes(gw) == [("UNAVAILABLE", "backend_unavailable")]


async def _outcomes(gw: Gateway) -> list[tuple[str, str]]:
    """(outcome, reason) of every audit entry: a back-end failure is logged like any refusal."""
    records = [json.loads(e.leaf)["r"] for e in await gw.audit_log.entries(0, 1 << 62)]
    return [(r["outcome"], r["reason"]) for r in records]
