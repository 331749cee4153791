"""AuditService over mutual TLS: regulators verify receipts and search by citizen."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, card_pb2, card_pb2_grpc, common_pb2
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import verify_consistency, verify_inclusion
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import insurance_status, issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, REGULATOR

pytestmark = pytest.mark.integration
ORIGIN = "onecard.local/audit"


async def test_a_regulator_verifies_a_receipt_and_searches_by_citizen(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    person, other = [p for p in population if p.card_status is CardStatus.NORMAL][:2]
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        issued = await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=person.id_number),
                purpose=common_pb2.PURPOSE_PATRQT,
            )
        )
        await issue_token(app, other.id_number)
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        await insurance_status(hosp, person.id_number, issued.token)

    public_key = (tmp_path / "data" / "audit-log.pub").read_text().strip()
    verifiers = VerifierSet([Verifier.parse(public_key)])
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        audit = audit_pb2_grpc.AuditServiceStub(reg)
        first = await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())
        checkpoint = open_checkpoint(first.signed_checkpoint, verifiers, ORIGIN)
        assert checkpoint.size == first.tree_size == 3
        proof = await audit.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(
                leaf_index=issued.receipt.leaf_index, tree_size=checkpoint.size
            )
        )
        assert proof.leaf_hash == issued.receipt.leaf_hash
        verify_inclusion(
            issued.receipt.leaf_hash,
            issued.receipt.leaf_index,
            checkpoint.size,
            list(proof.hashes),
            checkpoint.root_hash,
        )
        found = await audit.SearchEntries(
            audit_pb2.SearchEntriesRequest(
                card=common_pb2.CardRef(card_number=person.id_number), first_page=True
            )
        )
        later = open_checkpoint(
            (await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())).signed_checkpoint,
            verifiers,
            ORIGIN,
        )
        consistency = await audit.GetConsistencyProof(
            audit_pb2.GetConsistencyProofRequest(from_size=checkpoint.size, to_size=later.size)
        )
    verify_consistency(
        checkpoint.size,
        later.size,
        list(consistency.hashes),
        checkpoint.root_hash,
        later.root_hash,
    )
    records = [json.loads(e.leaf)["r"] for e in found.entries]
    # The token issue and the hospital's read are this citizen's; the other citizen's are not.
    assert [r["rpc"].rsplit("/", 1)[1] for r in records] == ["IssueCardToken", "GetInsuranceStatus"]
    assert len({r["subject"] for r in records}) == 1
    # The search itself was logged, by pseudonym, as a statutory exchange of the regulator.
    entries = await gateway.audit_log.entries(0, 100)
    search = next(json.loads(e.leaf)["r"] for e in entries if b"SearchEntries" in e.leaf)
    assert search["org"] == REGULATOR and search["basis"] == "statutory"
    assert search["subject"] == records[0]["subject"]
    assert person.id_number.encode() not in b"".join(e.leaf for e in entries)


async def test_only_regulators_read_the_audit_log(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await audit_pb2_grpc.AuditServiceStub(hosp).SearchEntries(
                audit_pb2.SearchEntriesRequest(first_page=True)
            )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "policy_denied"


async def test_a_proof_beyond_the_log_is_invalid_argument(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(REGULATOR) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await audit_pb2_grpc.AuditServiceStub(reg).GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(leaf_index=5, tree_size=1000)
            )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
