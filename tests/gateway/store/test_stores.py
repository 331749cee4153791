"""The store interface on every store (SQLite, PostgreSQL), opened as the gateway opens it.

The expectations are the independent references of ``test_sqlite_audit`` (leaves chained from
the zero hash, RFC 6962 roots, the RFC 9162 verifiers), so a PostgreSQL log must hold the very
bytes a SQLite log holds for the same records.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.audit.log import ConsentGrant, Redemption, SearchQuery
from gateway.audit.proof import OutOfRangeError
from gateway.audit.sequencer import LogIdentityError
from gateway.audit.signer import Ed25519FileSigner
from gateway.store import read_log
from tests.gateway.store.test_consent_store import consent
from tests.gateway.store.test_sqlite_audit import (
    ORIGIN,
    SEARCH_RECORDS,
    append_all,
    append_each,
    assert_every_proof,
    assert_every_search_query,
    in_log_order,
    make_record,
    open_cp,
    records,
    reference_chain,
    stored_leaves,
)
from tests.postgres import Place


async def test_concurrent_appends_form_one_chain_whose_proofs_verify(
    place: Place, signer: Ed25519FileSigner
) -> None:
    store = await place.open(signer)
    try:
        recs = records(24)
        receipts = await append_each(store.audit_log, recs[:8])
        receipts += await append_all(store.audit_log, recs[8:])
        leaves, hashes = reference_chain(in_log_order(recs, receipts))
        assert await stored_leaves(store.audit_log) == leaves
        assert [r.leaf_hash for r in receipts] == [hashes[r.index] for r in receipts]
        await assert_every_proof(store.audit_log, hashes)
        with pytest.raises(OutOfRangeError):
            await store.audit_log.inclusion_proof(0, 25)
    finally:
        await store.close()


async def test_reopening_continues_the_chain_and_its_checkpoints(
    place: Place, signer: Ed25519FileSigner
) -> None:
    store = await place.open(signer)
    first = await append_each(store.audit_log, records(5))
    await store.close()
    store = await place.open(signer)
    try:
        second = await append_each(store.audit_log, records(4, first=5))
        assert [r.index for r in first + second] == list(range(9))
        leaves, _ = reference_chain(records(9))
        assert await stored_leaves(store.audit_log) == leaves
        await store.audit_log.checkpoint_now()
        note = await store.audit_log.latest_checkpoint()
        assert note is not None and open_cp(note, signer).size == 9
        sizes = [size for size, _ in await store.audit_log.checkpoints()]
        assert sizes == [1, 6, 9]  # the first batch of each start signs; then the final one
    finally:
        await store.close()


async def test_another_key_is_refused_on_reopening(place: Place, signer: Ed25519FileSigner) -> None:
    store = await place.open(signer)
    await append_each(store.audit_log, records(2))
    await store.close()
    other = Ed25519FileSigner.generate(place.data_dir / "other.key", ORIGIN)
    with pytest.raises(LogIdentityError, match="not this log's key"):
        await place.open(other)


async def test_search_and_follow_answer_from_the_stored_entries(
    place: Place, signer: Ed25519FileSigner
) -> None:
    store = await place.open(signer)
    try:
        await append_each(store.audit_log, SEARCH_RECORDS)
        await assert_every_search_query(store.audit_log)
        assert await store.audit_log.search(SearchQuery(org="org-a", basis="nobody")) == []
        subjects = {json.loads(e.leaf)["r"]["subject"] for e in await store.audit_log.follow(
            len(SEARCH_RECORDS) - 1, 100
        )}  # fmt: skip
        assert len(subjects) == 1
    finally:
        await store.close()


async def test_a_snapshot_reads_what_the_store_wrote(
    place: Place, signer: Ed25519FileSigner
) -> None:
    store = await place.open(signer, checkpoint_interval_s=0)
    await append_each(store.audit_log, records(6))
    await store.close()
    leaves, _ = reference_chain(records(6))
    with read_log(place.kind, place.data_dir, served=False, database_url=place.database_url) as log:
        assert log.size() == 6
        assert log.leaves(0, 6) == leaves
        assert [size for size, _ in log.checkpoints()] == list(range(1, 7))
        assert all(open_cp(note, signer).size == size for size, note in log.checkpoints())


async def test_a_consent_granted_in_the_logs_transaction_is_read_back(
    place: Place, signer: Ed25519FileSigner
) -> None:
    store = await place.open(signer)
    try:
        granted = consent("cns_granted")
        record = make_record(0, rpc="/onecard.v1.Consent/Grant")
        instead = dataclasses.replace(record, outcome="ALREADY_EXISTS")
        receipt = await store.audit_log.append(record, Redemption(ConsentGrant(granted), instead))
        assert not receipt.replayed
        assert await store.consents.get("cns_granted") == granted
        again = await store.audit_log.append(record, Redemption(ConsentGrant(granted), instead))
        assert again.refusal == "consent_conflict"
    finally:
        await store.close()
