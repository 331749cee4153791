"""What the access history needs from the SQLite log: follow back-links, proofs against one
size in one read, a checkpoint of exactly a size, and one signed on demand (coalesced); and the
client's completeness check over what they give."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest

from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.history_check import check_history
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import OutOfRangeError, verify_inclusion
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.store.sqlite_audit import SqliteAuditLog
from tests.gateway.store.test_sqlite_audit import HOUR, Logs, append_each, records


@dataclass
class Event:
    index: int
    leaf: bytes
    inclusion_proof: list[bytes]


@dataclass
class Page:
    checkpoint: bytes
    events: list[Event] = field(default_factory=list)


async def page_of(log: SqliteAuditLog, start: int, limit: int = 100) -> Page:
    size, note = await log.signed_checkpoint(start + 1)
    entries = await log.follow(start, limit)
    proofs = await log.inclusion_proofs([e.index for e in entries], size)
    return Page(note, [Event(e.index, e.leaf, p) for e, p in zip(entries, proofs, strict=True)])


async def test_follow_walks_one_subjects_chain_newest_first(logs: Logs) -> None:
    _, log = logs.open()
    await append_each(log, records(10))  # subjects 0, 1, 2, 0, 1, 2, ...
    assert [e.index for e in await log.follow(9, 100)] == [9, 6, 3, 0]
    assert [e.index for e in await log.follow(8, 2)] == [8, 5]
    assert {json.loads(e.leaf)["r"]["subject"] for e in await log.follow(7, 100)} == {"subject-1"}
    with pytest.raises(OutOfRangeError):
        await log.follow(10, 1)


async def test_proofs_of_several_entries_verify_against_one_checkpoint(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    _, log = logs.open(interval=HOUR)  # only the first batch signs: the rest on demand
    await append_each(log, records(9))
    size, note = await log.signed_checkpoint(9)
    verifiers = VerifierSet([Verifier.parse(signer.verifier_key())])
    checkpoint = open_checkpoint(note, verifiers, signer.name)
    assert size == checkpoint.size == 9
    assert await log.checkpoint_of(9) == note and await log.checkpoint_of(8) is None
    entries = await log.entries(0, 9)
    proofs = await log.inclusion_proofs([8, 4, 0], 9)
    for index, proof in zip([8, 4, 0], proofs, strict=True):
        verify_inclusion(hash_leaf(entries[index].leaf), index, 9, proof, checkpoint.root_hash)


async def test_a_checkpoint_on_demand_is_signed_once_for_requests_queued_together(
    logs: Logs,
) -> None:
    _, log = logs.open(interval=HOUR)
    await append_each(log, records(3))
    before = await log.checkpoints()
    signed = await asyncio.gather(*(log.signed_checkpoint(3) for _ in range(20)))
    assert {size for size, _ in signed} == {3}
    assert len(await log.checkpoints()) - len(before) == 1
    assert await log.signed_checkpoint(2) == signed[0]  # the newest covers it: no new one
    assert len(await log.checkpoints()) - len(before) == 1


async def test_the_completeness_check_passes_on_a_chain_and_names_what_breaks_it(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    _, log = logs.open()
    await append_each(log, records(13))
    key = signer.verifier_key()
    page = await page_of(log, 12)  # subject-0: 12, 9, 6, 3, 0
    verdict = check_history([page], key, 12)
    assert verdict.ok and verdict.events == 5, verdict

    split = [Page(page.checkpoint, page.events[:2]), Page(page.checkpoint, page.events[2:])]
    assert check_history(split, key, 12).ok

    cases = {
        "withheld": (Page(page.checkpoint, page.events[:2] + page.events[3:]), 9),
        "cut short": (Page(page.checkpoint, page.events[:4]), 3),
        "not its own": (Page(page.checkpoint, page.events[1:]), 9),
    }
    for what, (bad, named) in cases.items():
        verdict = check_history([bad], key, 12)
        assert not verdict.ok, what
        assert verdict.index == named, (what, verdict)

    await append_each(log, records(1, first=13))
    newer = Page((await log.signed_checkpoint(14))[1], page.events)
    assert not check_history([page, newer], key, 12).ok  # two checkpoints
    assert "inclusion proof fails" in check_history([newer], key, 12).problem

    intruder = Ed25519FileSigner.generate(logs.db.parent / "intruder.key", signer.name)
    assert "no signature by" in check_history([page], intruder.verifier_key(), 12).problem
