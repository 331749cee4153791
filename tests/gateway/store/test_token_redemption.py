"""A card-present token is redeemed in the same transaction as the releasing exchange's entry."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.log import Redemption, TokenSpend
from gateway.audit.record import AuditRecord
from gateway.audit.signer import Ed25519FileSigner
from gateway.store import SqliteStore
from gateway.store.sqlite_audit import SqliteAuditLog
from tests.gateway.store.test_sqlite_audit import make_record

TOKEN = b"t" * 16
EXPIRES = 2_000_000_000


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteAuditLog]]:
    signer = Ed25519FileSigner.generate(tmp_path / "log.key", "test.local/log")
    store = SqliteStore(tmp_path / "onecard.db")
    yield store, SqliteAuditLog(store, signer, checkpoint_interval_s=3600)
    await store.close()


def released(n: int) -> tuple[AuditRecord, Redemption]:
    record = make_record(n)
    instead = dataclasses.replace(
        record, outcome="PERMISSION_DENIED", reason="token_replayed", released_sha256=""
    )
    return record, Redemption(TokenSpend(TOKEN, EXPIRES), instead)


async def test_concurrent_exchanges_on_one_token_release_once(
    opened: tuple[SqliteStore, SqliteAuditLog],
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
    opened: tuple[SqliteStore, SqliteAuditLog],
) -> None:
    store, log = opened
    await log.append(make_record(0, outcome="UNAVAILABLE", reason="backend_unavailable"))
    assert not await store.token_redeemed(TOKEN)
    assert not (await log.append(*released(1))).replayed


async def test_a_redemption_survives_a_restart(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.generate(tmp_path / "log.key", "test.local/log")
    store = SqliteStore(tmp_path / "onecard.db")
    log = SqliteAuditLog(store, signer, checkpoint_interval_s=3600)
    assert not (await log.append(*released(0))).replayed
    await store.close()
    store = SqliteStore(tmp_path / "onecard.db")
    log = SqliteAuditLog(store, signer, checkpoint_interval_s=3600)
    try:
        assert (await log.append(*released(1))).replayed
    finally:
        await store.close()
