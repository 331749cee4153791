"""A citizen's access history over mutual TLS: exactly their entries, provably complete.

Two citizens' card-present reads and refusals are interleaved; citizen A's history, read a few
entries per page, must be exactly the entries the regulator's search by citizen finds (up to
the history call's own), and pass the client's completeness check (``history_check``, which
knows only the leaf format and the log's public key); withholding an entry or altering a leaf
must fail it; a log whose back-link is wrong although its checkpoint is correctly signed must
fail ``audit verify``; and a page token of one citizen is refused for another.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    consent_pb2,
    consent_pb2_grpc,
)
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.export import export_log
from gateway.audit.history_check import check_history
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import root_of
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.audit.verify import verify_export
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import insurance_status, issue_token, verify_card
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, REGULATOR

pytestmark = pytest.mark.integration
ORIGIN = "onecard.local/audit"


async def history_pages(
    app: grpc.aio.Channel, card: str, page_size: int, first_token: str = ""
) -> list[consent_pb2.GetAccessHistoryResponse]:
    """Every page of the card's history, following next_page_token."""
    stub = consent_pb2_grpc.ConsentServiceStub(app)
    pages: list[consent_pb2.GetAccessHistoryResponse] = []
    token = first_token
    while True:
        page = await stub.GetAccessHistory(
            consent_pb2.GetAccessHistoryRequest(
                card=common_pb2.CardRef(card_number=card),
                purpose=common_pb2.PURPOSE_PATRQT,
                page_size=page_size,
                page_token=token,
            )
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


async def interleaved_exchanges(gateway: Gateway, pki: PkiLayout, a: str, b: str) -> None:
    """Reads and refusals about citizens A and B, interleaved."""
    async with (
        org_channel(gateway.target, pki, CITIZEN_APP) as app,
        org_channel(gateway.target, pki, HOSPITAL) as hosp,
        org_channel(gateway.target, pki, LIBRARY) as lib,
    ):
        token_a, token_b = await issue_token(app, a), await issue_token(app, b)
        await insurance_status(hosp, a, token_a)
        await insurance_status(hosp, b, token_b)
        with pytest.raises(grpc.aio.AioRpcError) as replay:  # a token is used once
            await insurance_status(hosp, a, token_a)
        assert reason(replay.value) == "token_replayed"
        await verify_card(lib, b, await issue_token(app, b))
        with pytest.raises(grpc.aio.AioRpcError) as research:  # refused by policy
            await insurance_status(
                hosp, a, await issue_token(app, a), purpose=common_pb2.PURPOSE_FARE_CONCESSION
            )
        assert research.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await verify_card(lib, a, await issue_token(app, a))


def public_key(gateway_dir: Path) -> str:
    return (gateway_dir / "audit-log.pub").read_text().strip()


async def test_a_citizen_sees_exactly_their_entries_with_a_passing_completeness_check(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    # A long interval: the history's checkpoint is signed on demand, covering its own entry.
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=3600)
    a, b = [p.id_number for p in population if p.card_status is CardStatus.NORMAL][:2]
    await interleaved_exchanges(gateway, pki, a, b)

    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        pages = await history_pages(app, a, page_size=3)
    first = pages[0]
    own = first.receipt.leaf_index
    events = [event for page in pages for event in page.events]
    assert len(pages) >= 3  # paged, every page against the same checkpoint
    assert {page.checkpoint for page in pages} == {first.checkpoint}
    assert events[0].index == own and events[0].rpc == "GetAccessHistory"

    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        found = await audit_pb2_grpc.AuditServiceStub(reg).SearchEntries(
            audit_pb2.SearchEntriesRequest(
                card=common_pb2.CardRef(card_number=a), first_page=True, page_size=100
            )
        )
    expected = sorted((e.index for e in found.entries if e.index <= own), reverse=True)
    assert [e.index for e in events] == expected
    subjects = {json.loads(e.leaf)["r"]["subject"] for e in events}
    assert len(subjects) == 1
    outcomes = {(e.rpc, e.outcome) for e in events}
    assert ("GetInsuranceStatus", "OK") in outcomes  # A's read, and its refusal by policy
    assert ("GetInsuranceStatus", "PERMISSION_DENIED") in outcomes
    assert ("VerifyCard", "OK") in outcomes
    assert events[-1].rpc == "IssueCardToken"  # the first thing that happened to A's data
    assert events[-1].HasField("previous_index") is False
    assert all(e.previous_index == n.index for e, n in itertools.pairwise(events))

    verdict = check_history(pages, public_key(tmp_path / "data"), own)
    assert verdict.ok, verdict
    assert verdict.events == len(expected)


async def test_the_completeness_check_fails_on_a_withheld_entry_or_an_altered_leaf(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory()
    a, b = [p.id_number for p in population if p.card_status is CardStatus.NORMAL][:2]
    await interleaved_exchanges(gateway, pki, a, b)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        (page,) = await history_pages(app, a, page_size=50)
    key, own = public_key(tmp_path / "data"), page.receipt.leaf_index
    assert check_history([page], key, own).ok

    withheld = consent_pb2.GetAccessHistoryResponse()
    withheld.CopyFrom(page)
    del withheld.events[3]
    verdict = check_history([withheld], key, own)
    assert not verdict.ok and verdict.index == page.events[2].index
    assert "back-link names entry" in verdict.problem

    altered = consent_pb2.GetAccessHistoryResponse()
    altered.CopyFrom(page)
    target = altered.events[2]
    # Re-link entry 2 past the one it names, as a log hiding an entry would have to.
    skipped = page.events[4].index
    target.leaf = target.leaf.replace(
        b'"back":%d' % page.events[3].index, b'"back":%d' % skipped, 1
    )
    del altered.events[3]
    verdict = check_history([altered], key, own)
    assert not verdict.ok and verdict.index == target.index
    assert "inclusion proof fails" in verdict.problem

    other = check_history([page], key, page.events[1].index)  # not the request's own entry
    assert not other.ok and other.index == own


async def test_a_log_with_a_wrong_back_link_fails_verify_although_its_checkpoint_is_signed(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
    database_urls: dict[Path, str],
) -> None:
    gateway: Gateway = await gateway_factory()
    a, b = [p.id_number for p in population if p.card_status is CardStatus.NORMAL][:2]
    await interleaved_exchanges(gateway, pki, a, b)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        (page,) = await history_pages(app, a, page_size=50)
    await gateway.stop(0)
    data = tmp_path / "data"
    export = tmp_path / "export"
    export_log(data / "onecard.db", export, origin=ORIGIN, database_url=database_urls.get(data, ""))
    lines = (export / "entries.jsonl").read_bytes().split(b"\n")[:-1]

    # Entry "hider" links past the one before it: its chain would hide that entry from A.
    hider, hidden, before = (e.index for e in page.events[1:4])
    lines[hider] = lines[hider].replace(b'"back":%d' % hidden, b'"back":%d' % before, 1)
    for i in range(hider + 1, len(lines)):  # re-chain, so that only the back-link is wrong
        record = lines[i][lines[i].index(b',"r":') :]
        lines[i] = b'{"i":%d,"prev":"%s"%s' % (i, hash_leaf(lines[i - 1]).hex().encode(), record)
    (export / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    signer = Ed25519FileSigner(data / "keys" / "audit-log.key", ORIGIN)
    for note in (export / "checkpoints").iterdir():
        note.unlink()
    size = len(lines)
    root = root_of([hash_leaf(line) for line in lines])
    (export / "checkpoints" / f"{size:012d}.note").write_bytes(
        sign_checkpoint(Checkpoint(ORIGIN, size, root), signer)
    )

    verifiers = VerifierSet([Verifier.parse(public_key(data))])
    report = verify_export(export, verifiers)
    assert report.problem is not None and report.problem.index == hider
    assert "wrong back-link" in report.problem.message


async def test_a_page_token_of_one_citizen_is_refused_for_another(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population
) -> None:
    gateway: Gateway = await gateway_factory()
    a, b = [p.id_number for p in population if p.card_status is CardStatus.NORMAL][:2]
    await interleaved_exchanges(gateway, pki, a, b)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        stub = consent_pb2_grpc.ConsentServiceStub(app)
        first = await stub.GetAccessHistory(
            consent_pb2.GetAccessHistoryRequest(
                card=common_pb2.CardRef(card_number=a),
                purpose=common_pb2.PURPOSE_PATRQT,
                page_size=2,
            )
        )
        assert first.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await history_pages(app, b, page_size=2, first_token=first.next_page_token)
        assert foreign.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(foreign.value) == "foreign_page_token"
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await history_pages(app, a, page_size=2, first_token=first.next_page_token[:-2])
        assert forged.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
        )
        pages = await history_pages(app, a, page_size=2, first_token=first.next_page_token)
    assert all(
        json.loads(e.leaf)["r"]["subject"] == json.loads(first.events[0].leaf)["r"]["subject"]
        for page in pages
        for e in page.events
    )


async def test_only_the_citizen_app_reads_an_access_history(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population
) -> None:
    gateway: Gateway = await gateway_factory()
    a = next(p.id_number for p in population if p.card_status is CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await history_pages(hosp, a, page_size=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(refused.value) == "citizen_app_only"  # the basis, before any policy
