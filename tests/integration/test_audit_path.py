"""Every exchange lands in the audit log before the answer leaves, and its receipt verifies."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import card_pb2, card_pb2_grpc, common_pb2
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.export import export_log
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import root_of, verify_inclusion
from gateway.audit.rfc6962 import hash_leaf
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import CertificateAuthority, PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import insurance_status, issue_token, verify_card
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, SUSPENDED
from tests.integration.stored import database_text, refusing_audit_appends

pytestmark = pytest.mark.integration
Channel = Callable[[str], grpc.aio.Channel]


async def _records(gateway: Gateway) -> list[dict[str, Any]]:
    entries = await gateway.audit_log.entries(0, 1 << 62)
    return [json.loads(e.leaf)["r"] for e in entries]


def _trailer(err: grpc.aio.AioRpcError, key: str) -> str:
    trailers: Any = err.trailing_metadata() or ()
    return next(str(v) for k, v in trailers if k == key)


async def test_every_rpc_path_appends_exactly_one_entry(
    gateway: Gateway, channel: Channel, pki: PkiLayout, population: Population
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    locked = population.first(card_status=CardStatus.LOCKED)
    ca = CertificateAuthority.load(pki.ca_cert, pki.ca_key)
    stranger = ca.issue_client("hosp-nowhere-404")
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp, channel(LIBRARY) as lib:
        token = await issue_token(app, person.id_number)  # 1 OK
        await insurance_status(hosp, person.id_number, token)  # 2 OK
        library_token = await issue_token(app, person.id_number)  # 3 OK
        refusals = [
            insurance_status(hosp, person.id_number, token),  # 4 replayed token
            issue_token(app, locked.id_number),  # 5 card locked
            issue_token(app, "440305198512120029"),  # 6 malformed card number
            issue_token(hosp, person.id_number),  # 7 basis refused: not the citizen app
            insurance_status(lib, person.id_number, library_token),  # 8 policy deny
        ]
        for call in refusals:
            with pytest.raises(grpc.aio.AioRpcError):
                await call
    creds = grpc.ssl_channel_credentials(
        pki.ca_cert.read_bytes(), stranger.key_pem, stranger.cert_pem
    )
    async with grpc.aio.secure_channel(gateway.target, creds) as unknown:
        with pytest.raises(grpc.aio.AioRpcError):
            await issue_token(unknown, person.id_number)  # 9 unknown org
    async with org_channel(gateway.target, pki, SUSPENDED) as suspended:
        with pytest.raises(grpc.aio.AioRpcError):
            await verify_card(suspended, person.id_number, token)  # 10 suspended org

    records = await _records(gateway)
    assert [(r["outcome"], r["reason"]) for r in records] == [
        ("OK", ""),
        ("OK", ""),
        ("OK", ""),
        ("PERMISSION_DENIED", "token_replayed"),
        ("FAILED_PRECONDITION", "card_locked"),
        ("INVALID_ARGUMENT", "malformed_card_number"),
        ("PERMISSION_DENIED", "citizen_app_only"),
        ("PERMISSION_DENIED", "policy_denied"),
        ("UNAUTHENTICATED", "unknown_org"),
        ("PERMISSION_DENIED", "org_suspended"),
    ]
    ok = records[1]
    assert ok["org"] == HOSPITAL and ok["decision"] == "allow"
    assert ok["policies"] == ["hospital-reads-insurance-status"]
    assert ok["basis"] == "card_present" and ok["basis_ref"].startswith("token:")
    assert ok["backend"] == "social_insurance"
    assert len(ok["subject"]) == 64 and len(ok["released_sha256"]) == 64
    assert records[6]["decision"] == "" and records[6]["subject"] == ""  # before the card
    assert records[7]["decision"] == "deny"
    assert records[8]["org"] == "hosp-nowhere-404" and records[8]["org_type"] == ""
    assert records[5]["subject"] == ""  # refused before any card was resolved
    assert records[0]["subject"] == records[1]["subject"]  # the same citizen, the same pseudonym


async def test_receipts_verify_against_a_signed_checkpoint(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        response = await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=person.id_number),
                purpose=common_pb2.PURPOSE_PATRQT,
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await issue_token(app, population.first(card_status=CardStatus.CANCELLED).id_number)
    receipt = response.receipt
    assert receipt.log_origin == "onecard.local/audit"
    assert int(_trailer(refused.value, "onecard-audit-index")) == receipt.leaf_index + 1
    assert reason(refused.value) == "card_cancelled"

    public_key = (tmp_path / "data" / "audit-log.pub").read_text().strip()
    note = await gateway.audit_log.latest_checkpoint()
    assert note is not None
    checkpoint = open_checkpoint(
        note, VerifierSet([Verifier.parse(public_key)]), "onecard.local/audit"
    )
    assert checkpoint.size == 2
    for index, leaf_hash in (
        (receipt.leaf_index, receipt.leaf_hash),
        (receipt.leaf_index + 1, bytes.fromhex(_trailer(refused.value, "onecard-audit-leaf-hash"))),
    ):
        stored, proof = await gateway.audit_log.inclusion_proof(index, checkpoint.size)
        assert stored == leaf_hash
        verify_inclusion(leaf_hash, index, checkpoint.size, proof, checkpoint.root_hash)
        (entry,) = await gateway.audit_log.entries(index, index + 1)
        assert hash_leaf(entry.leaf) == leaf_hash


async def test_if_the_audit_log_cannot_be_written_nothing_is_released(
    gateway: Gateway,
    channel: Channel,
    population: Population,
    tmp_path: Path,
    database_urls: dict[Path, str],
) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    with refusing_audit_appends(tmp_path / "data", database_urls):
        async with channel(CITIZEN_APP) as app:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await issue_token(app, person.id_number)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason(info.value) == "store_unavailable"
    assert "disk full" not in (info.value.details() or "")
    # The log recovered its in-memory state: the next exchange gets index 0, not 1.
    async with channel(CITIZEN_APP) as app:
        ok = await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=person.id_number),
                purpose=common_pb2.PURPOSE_PATRQT,
            )
        )
    assert ok.receipt.leaf_index == 0


async def test_no_raw_card_number_or_name_in_the_database(
    gateway: Gateway,
    channel: Channel,
    population: Population,
    tmp_path: Path,
    database_urls: dict[Path, str],
) -> None:
    people = [population.first(card_status=s) for s in CardStatus]
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp:
        for person in people:
            try:
                token = await issue_token(app, person.id_number)
                await insurance_status(hosp, person.id_number, token)
            except grpc.aio.AioRpcError:
                pass
    await gateway.stop(0)
    blob = database_text(tmp_path / "data", database_urls)
    assert blob.count(b'"rpc":') >= len(people)  # the scan looks at real leaves
    for person in people:
        assert person.id_number.encode() not in blob
        assert person.name.encode() not in blob
        assert person.psn_no.encode() not in blob  # the holder id only appears as a pseudonym


async def test_export_writes_every_leaf_and_signed_checkpoint(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
    database_urls: dict[Path, str],
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        for _ in range(3):
            await issue_token(app, person.id_number)
    await gateway.stop(0)
    out = tmp_path / "export"
    summary = export_log(
        tmp_path / "data" / "onecard.db", out, origin="onecard.local/audit",
        fhir_file=tmp_path / "fhir.jsonl", database_url=database_urls.get(tmp_path / "data", ""),
    )  # fmt: skip
    assert (summary.entries, summary.checkpoints) == (3, 3)
    lines = (out / "entries.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["i"] for line in lines] == [0, 1, 2]
    public_key = (tmp_path / "data" / "audit-log.pub").read_text().strip()
    verifiers = VerifierSet([Verifier.parse(public_key)])
    last = open_checkpoint(
        (out / "checkpoints" / "000000000003.note").read_bytes(), verifiers, "onecard.local/audit"
    )
    assert last.root_hash == root_of([hash_leaf(line) for line in lines])
    events = [json.loads(x) for x in (tmp_path / "fhir.jsonl").read_text().splitlines()]
    assert [e["resourceType"] for e in events] == ["AuditEvent"] * 3
    blob = b"".join(
        p.read_bytes() for p in [*out.rglob("*"), tmp_path / "fhir.jsonl"] if p.is_file()
    )
    assert person.id_number.encode() not in blob and person.name.encode() not in blob
