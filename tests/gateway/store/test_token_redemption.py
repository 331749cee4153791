"""A card-present token is redeemed in the same transaction as the releasing exchange's entry
(on every store: SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import pytest

from gateway.audit.log import Redemption, TokenSpend
from gateway.audit.record import AuditRecord
from gateway.audit.signer import Ed25519FileSigner
from gateway.store import Store, StoredLog
from tests.gateway.store.test_sqlite_audit import make_record
from tests.postgres import Place

TOKEN = b"t" * 16
EXPIRES = 2_000_000_000


@pytest.fixture
async def opened(place: Place) -> AsyncIterator[tuple[Store, StoredLog]]:
    signer = Ed25519FileSigner.generate(place.data_dir / "log.key", "test.local/log")
    store = await place.open(signer)
    yield store, store.audit_log
    await store.close()


def released(n: int) -> tuple[AuditRecord, Redemption]:
    record = make_record(n)
    instead = dataclasses.replace(
        record, outcome="PERMISSION_DENIED", reason="token_replayed", released_sha256=""
    )
    return record, Redemption(TokenSpend(TOKEN, EXPIRES), instead)


async def test_concurrent_exchanges_on_one_token_release_once(
    opened: tuple[Store, StoredLog],
) -> None:
    store, log = opened
    assert not await store.token_redeemed(TOKEN)
    receipts = await asyncio.gather(*(log.append(*released(n)) for n in range(20)))
    assert [r.replayed for r in receipts].count(False) == 1
    assert await store.token_redeemed(TOKEN)
    # Every exchange has its entry; the replays are recorded as refusals, with nothing released.
    entries = await log.entries(0, 20)
    outcomes = sorted(json.loads(e.leaf)["r"]["outcome"] for e in entries)
    assert outcomes == ["OK"] + ["PERMISSION_DENIED"] * 19
    for receipt, entry in zip(receipts, entries, strict=True):
        record = json.loads(entry.leaf)["r"]
        assert (record["reason"] == "token_replayed") is receipt.replayed
        assert (record["released_sha256"] == "") is receipt.replayed


async def test_an_entry_without_redemption_leaves_the_token_usable(
    opened: tuple[Store, StoredLog],
) -> None:
    store, log = opened
    await log.append(make_record(0, outcome="UNAVAILABLE", reason="backend_unavailable"))
    assert not await store.token_redeemed(TOKEN)
    assert not (await log.append(*released(1))).replayed


async def test_a_redemption_survives_a_restart(place: Place) -> None:
    signer = Ed25519FileSigner.generate(place.data_dir / "log.key", "test.local/log")
    store = await place.open(signer)
    assert not (await store.audit_log.append(*released(0))).replayed
    await store.close()
    store = await place.open(signer)
    try:
        assert await store.token_redeemed(TOKEN)
        assert (await store.audit_log.append(*released(1))).replayed
    finally:
        await store.close()
