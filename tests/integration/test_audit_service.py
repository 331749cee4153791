"""AuditService over mutual TLS: regulators verify receipts and search by citizen."""

from __future__ import annotations

import dataclasses
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
from gateway.audit.record import AuditRecord
from gateway.audit.stage import released_digest
from gateway.audit.verify import verify_leaves
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.audit.test_record import BASE as RECORD
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


def _filler(n: int) -> AuditRecord:
    return dataclasses.replace(RECORD, request_id=f"filler-{n}")


async def test_a_regulator_streams_entries_and_rebuilds_the_signed_root(
    gateway_factory: Callable[..., Any], pki: PkiLayout, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    for n in range(1500):  # more than one chunk of 1,000
        await gateway.audit_log.append(_filler(n))
    verifiers = VerifierSet(
        [Verifier.parse((tmp_path / "data" / "audit-log.pub").read_text().strip())]
    )
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        audit = audit_pb2_grpc.AuditServiceStub(reg)
        signed = (await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())).signed_checkpoint
        checkpoint = open_checkpoint(signed, verifiers, ORIGIN)
        call = audit.GetEntries(audit_pb2.GetEntriesRequest(start_index=0, end_index=5000))
        chunks = [chunk async for chunk in call]
        trailers = dict(await call.trailing_metadata())

    # The end is clipped to the log: 1,500 fillers plus the GetCheckpoint call's own entry.
    assert [len(chunk.entries) for chunk in chunks] == [1000, 501]
    leaves = [entry.leaf for chunk in chunks for entry in chunk.entries]
    assert [e.index for c in chunks for e in c.entries] == list(range(1501))
    assert checkpoint.size == 1500
    assert verify_leaves(leaves[: checkpoint.size], [checkpoint]).ok
    assert not verify_leaves(leaves, [checkpoint]).ok  # the last entry is not covered by it
    # The stream was logged before it left: its receipt rides on the first chunk and in the
    # trailers, and its entry holds the digest of exactly what was streamed.
    receipt = chunks[0].receipt
    assert receipt.leaf_index == 1501 == int(trailers["onecard-audit-index"])
    assert not chunks[1].HasField("receipt")
    (entry,) = await gateway.audit_log.entries(1501, 1502)
    record = json.loads(entry.leaf)["r"]
    assert record["rpc"] == "onecard.v1.AuditService/GetEntries"
    chunks[0].ClearField("receipt")
    assert record["released_sha256"] == released_digest(chunks)


@pytest.mark.parametrize(
    ("start", "end", "code", "why"),
    [
        (3, 3, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (0, 10_001, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (10**6, 10**6 + 1, grpc.StatusCode.OUT_OF_RANGE, "beyond_log"),
    ],
)
async def test_bad_entry_ranges_are_refused_and_logged(
    gateway: Gateway,
    channel: Callable[[str], grpc.aio.Channel],
    start: int,
    end: int,
    code: grpc.StatusCode,
    why: str,
) -> None:
    async with channel(REGULATOR) as reg:
        call = audit_pb2_grpc.AuditServiceStub(reg).GetEntries(
            audit_pb2.GetEntriesRequest(start_index=start, end_index=end)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [chunk async for chunk in call]
    assert info.value.code() is code
    assert reason(info.value) == why
    index = int(dict(info.value.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record = json.loads(entry.leaf)["r"]
    assert (record["rpc"], record["outcome"], record["reason"], record["released_sha256"]) == (
        "onecard.v1.AuditService/GetEntries",
        code.name,
        why,
        "",
    )


async def test_only_regulators_stream_entries(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(HOSPITAL) as hosp:
        call = audit_pb2_grpc.AuditServiceStub(hosp).GetEntries(
            audit_pb2.GetEntriesRequest(start_index=0, end_index=10)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [chunk async for chunk in call]
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "policy_denied"
