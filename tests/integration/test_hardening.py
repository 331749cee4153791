"""The request path has no way around the audit log and tells nothing without a basis.

Over real mutual TLS on 127.0.0.1, with a loopback back end that can be made slow: calls that
end early (the caller's deadline, the request budget, shutdown) each leave one entry and leave
the citizen's token usable; a caller without a basis gets the same answer for every card; bad
bytes and free-text request ids are refused or replaced, and audited.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.social_insurance import wire
from adapters.social_insurance.seed import Population
from gateway import cardno
from gateway.api.onecard.v1 import (
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    insurance_pb2,
    insurance_pb2_grpc,
)
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import CertificateAuthority, PkiLayout
from gateway.ports import CardStatus
from tests.integration.backends import SlowBackend, slow_backend
from tests.integration.calls import insurance_status, issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, TRANSIT

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
PERSON_INFO, CARD_INFO = wire.INFNO_PERSON_INFO, wire.INFNO_CARD_INFO
Factory = Callable[..., Any]


@pytest.fixture
async def backend() -> AsyncIterator[SlowBackend]:
    async with slow_backend() as slow:
        yield slow


async def _records(gateway: Gateway) -> list[dict[str, Any]]:
    entries = await gateway.audit_log.entries(0, 1 << 62)
    return [json.loads(e.leaf)["r"] for e in entries]


async def _wait_for_entries(gateway: Gateway, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        records = await _records(gateway)
        if len(records) >= count:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"the log never reached {count} entries")


def _trailers(err: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: str(v) for k, v in (err.trailing_metadata() or ())}


def _person(population: Population) -> str:
    return population.first(card_status=CardStatus.NORMAL).id_number


async def test_a_call_abandoned_at_its_deadline_is_audited_and_keeps_the_token(
    gateway_factory: Callable[..., Any],
    backend: SlowBackend,
    pki: PkiLayout,
    population: Population,
) -> None:
    gateway: Gateway = await gateway_factory(backends={"social_insurance": {"url": backend.url}})
    card = _person(population)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, card)
    backend.delay_s[PERSON_INFO] = 1.0
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _insurance_with_deadline(hosp, card, token, timeout=0.3)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        records = await _wait_for_entries(gateway, 2)
        assert len(records) == 2
        abandoned = records[1]
        assert abandoned["outcome"] == "DEADLINE_EXCEEDED"
        assert abandoned["reason"] == "caller_deadline"
        assert abandoned["released_sha256"] == ""
        backend.delay_s.clear()
        answer = await insurance_status(hosp, card, token)  # the token was not used up
    assert answer.receipt.leaf_index == 2


async def _insurance_with_deadline(
    channel: grpc.aio.Channel, card: str, token: str, *, timeout: float
) -> Any:
    return await insurance_pb2_grpc.InsuranceServiceStub(channel).GetInsuranceStatus(
        insurance_pb2.GetInsuranceStatusRequest(
            card=common_pb2.CardRef(card_number=card),
            purpose=common_pb2.PURPOSE_COVERAGE,
            basis=common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token=token)),
        ),
        timeout=timeout,
    )


async def test_a_call_cut_off_by_shutdown_is_audited_and_keeps_the_token(
    gateway_factory: Callable[..., Any],
    backend: SlowBackend,
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
) -> None:
    data = tmp_path / "shared-data"
    gateway: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": backend.url}}, data_dir=data
    )
    card = _person(population)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, card)
    backend.delay_s[PERSON_INFO] = 5.0
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        call = asyncio.ensure_future(insurance_status(hosp, card, token))
        while backend.calls[PERSON_INFO] == 0:
            await asyncio.sleep(0.01)
        await gateway.stop(0.1)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    backend.delay_s.clear()
    again: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": backend.url}}, data_dir=data
    )
    records = await _records(again)
    assert [(r["outcome"], r["reason"]) for r in records] == [
        ("OK", ""),
        ("UNAVAILABLE", "shutdown"),
    ]
    async with org_channel(again.target, pki, HOSPITAL) as hosp:
        answer = await insurance_status(hosp, card, token)
    assert answer.receipt.leaf_index == 2


async def test_the_request_budget_bounds_every_back_end_call_together(
    gateway_factory: Callable[..., Any],
    backend: SlowBackend,
    pki: PkiLayout,
    population: Population,
) -> None:
    gateway: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": backend.url, "timeout_s": 1.0}}, request_budget_s=1.2
    )
    card = _person(population)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, card)
    backend.delay_s.update({CARD_INFO: 0.7, PERSON_INFO: 0.7})  # each within its own timeout
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, card, token)
        elapsed = time.monotonic() - started
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert reason(info.value) == "request_budget_exceeded"
    assert elapsed < 1.4  # both lookups in full would take 1.4 s
    assert "onecard-audit-index" in _trailers(info.value)


async def test_refusals_and_back_end_failures_do_not_use_up_the_token(
    gateway_factory: Callable[..., Any],
    backend: SlowBackend,
    pki: PkiLayout,
    population: Population,
) -> None:
    gateway: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": backend.url, "timeout_s": 0.3}}
    )
    card = _person(population)
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
        org_channel(gateway.target, pki, LIBRARY) as lib,
    ):
        token = await issue_token(app, card)
        with pytest.raises(grpc.aio.AioRpcError) as wrong_org:
            await insurance_status(lib, card, token)
        with pytest.raises(grpc.aio.AioRpcError) as wrong_purpose:
            await insurance_status(hosp, card, token, common_pb2.PURPOSE_LIBRARY_SERVICE)
        backend.delay_s[PERSON_INFO] = 1.0
        with pytest.raises(grpc.aio.AioRpcError) as slow:
            await insurance_status(hosp, card, token)
        backend.delay_s.clear()
        answer = await insurance_status(hosp, card, token)
        with pytest.raises(grpc.aio.AioRpcError) as replay:
            await insurance_status(hosp, card, token)
    assert reason(wrong_org.value) == reason(wrong_purpose.value) == "policy_denied"
    assert reason(slow.value) == "backend_timeout"
    assert answer.schemes
    assert reason(replay.value) == "token_replayed"


async def test_concurrent_uses_of_one_token_release_one_answer(
    gateway: Gateway, pki: PkiLayout, population: Population
) -> None:
    card = _person(population)
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
    ):
        token = await issue_token(app, card)
        results = await asyncio.gather(
            *(insurance_status(hosp, card, token) for _ in range(30)), return_exceptions=True
        )
    answers = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(answers) == 1 and len(refusals) == 29
    assert {reason(r) for r in refusals} == {"token_replayed"}
    records = await _records(gateway)
    assert [r["outcome"] for r in records].count("OK") == 2  # the token, and one answer


def _unknown_card(population: Population) -> str:
    known = {p.id_number for p in population.people}
    for seq in range(1000):
        first17 = f"11010119800101{seq:03d}"
        card = first17 + cardno.check_character(first17)
        if card not in known:
            return card
    raise AssertionError("no unknown card number found")


@pytest.mark.parametrize("org", [TRANSIT, LIBRARY, HOSPITAL])
async def test_without_a_basis_every_card_gets_the_same_refusal(
    gateway_factory: Callable[..., Any],
    backend: SlowBackend,
    pki: PkiLayout,
    population: Population,
    org: str,
) -> None:
    gateway: Gateway = await gateway_factory(backends={"social_insurance": {"url": backend.url}})
    cards = [population.first(card_status=status).id_number for status in CardStatus]
    cards.append(_unknown_card(population))
    forged = "oc1." + "A" * 86
    answers = set()
    async with org_channel(gateway.target, pki, org) as channel:
        stub = card_pb2_grpc.CardServiceStub(channel)
        for card in cards:
            for basis in (common_pb2.LawfulBasis(), _card_present(forged)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.VerifyCard(
                        card_pb2.VerifyCardRequest(
                            card=common_pb2.CardRef(card_number=card),
                            purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
                            basis=basis,
                        )
                    )
                err = info.value
                answers.add((basis.WhichOneof("basis"), err.code(), reason(err), err.details()))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await issue_token(channel, card)
            err = info.value
            answers.add(("issue", err.code(), reason(err), err.details()))
    assert len(answers) == 3, answers  # one answer per kind of request, whatever the card
    assert backend.calls.total() == 0  # and the card registry was never asked
    records = await _records(gateway)
    assert all(r["subject"] == "" for r in records)


def _card_present(token: str) -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token=token))


_VERIFY = "/onecard.v1.CardService/VerifyCard"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # not protobuf at all
        b"\x0a\x03\x0a\x01\xff",  # card.card_number holding invalid UTF-8
        b"\x0a\x05\x0a\x10",  # truncated
    ],
)
async def test_bytes_that_are_not_the_request_message_are_invalid_argument_and_audited(
    gateway: Gateway, pki: PkiLayout, payload: bytes
) -> None:
    async with org_channel(gateway.target, pki, LIBRARY) as channel:
        call = channel.unary_unary(_VERIFY)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(payload)
    err = info.value
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(err) == "undecodable_request"
    assert "not a valid onecard.v1.CardService/VerifyCard request" in (err.details() or "")
    assert "Error" not in (err.details() or "")  # no Python exception text
    index = int(_trailers(err)["onecard-audit-index"])
    record = (await _records(gateway))[index]
    assert (record["outcome"], record["reason"], record["org"]) == (
        "INVALID_ARGUMENT",
        "undecodable_request",
        LIBRARY,
    )


@pytest.mark.parametrize(
    ("metadata", "derived"),
    [
        ((("x-request-id", "110101199003074477"),), False),  # a card number: never stored
        ((("x-request-id", "visit 42 for Zhang San"),), False),
        ((("x-request-id", "0b8e2e0a-54b8-4b2c-9a41-3c8d2d0c6f11"),), True),
        ((("x-request-id", "00000000-0000-0000-0000-110101199003"),), False),  # not a UUID
        ((("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),), True),
        ((("traceparent", "00-11010519491231002000000000000000-00f067aa0ba902b7-01"),), True),
        ((("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),), False),
    ],
)
async def test_request_ids_never_carry_what_the_caller_put_in_them(
    gateway: Gateway, pki: PkiLayout, population: Population, metadata: Any, derived: bool
) -> None:
    card = _person(population)
    used = []
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        for _ in range(2):
            call = card_pb2_grpc.CardServiceStub(app).IssueCardToken(
                card_pb2.IssueCardTokenRequest(
                    card=common_pb2.CardRef(card_number=card), purpose=common_pb2.PURPOSE_PATRQT
                ),
                metadata=metadata,
            )
            response = await call
            trailers = {k: str(v) for k, v in (await call.trailing_metadata() or ())}
            used.append(trailers["onecard-request-id"])
            record = (await _records(gateway))[response.receipt.leaf_index]
            assert record["request_id"] == used[-1]
    given = metadata[0][1].lower()
    assert given not in used[0]
    assert uuid.UUID(used[0]).version == (8 if derived else 4)
    assert (used[0] == used[1]) is derived  # a caller's id maps to one gateway id


@pytest.mark.parametrize(
    "uris",
    [
        [f"URN:ONECARD:ORG:{LIBRARY}"],  # the scheme in another case: no fallback to the CN
        [f"urn:onecard:org:{LIBRARY.upper()}"],  # the org id in another case than issued
        [],  # a CN alone names nobody
    ],
)
async def test_identity_comes_only_from_the_san_uri_exactly_as_issued(
    gateway: Gateway, pki: PkiLayout, population: Population, uris: list[str]
) -> None:
    ca = CertificateAuthority.load(pki.ca_cert, pki.ca_key)
    now = dt.datetime.now(dt.UTC)
    issued = ca._issue(  # the CA's own issuing path, with a SAN the registry did not issue
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LIBRARY)]),
        [x509.UniformResourceIdentifier(uri) for uri in uris],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now - dt.timedelta(minutes=1),
        now + dt.timedelta(hours=1),
    )
    creds = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), issued.key_pem, issued.cert_pem)
    async with grpc.aio.secure_channel(gateway.target, creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await card_pb2_grpc.CardServiceStub(channel).VerifyCard(
                card_pb2.VerifyCardRequest(
                    card=common_pb2.CardRef(card_number=_person(population)),
                    purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
                )
            )
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert reason(info.value) == "unknown_org"
    record = (await _records(gateway))[-1]
    assert record["org"] != LIBRARY  # at most the id the certificate claims, never the CN's
    assert (record["org_type"], record["outcome"]) == ("", "UNAUTHENTICATED")
