"""Consents on every store (SQLite, PostgreSQL): stored under pseudonyms, read fresh, and used
in the log's transaction."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.log import ConsentSpend, Redemption
from gateway.audit.record import AuditRecord
from gateway.audit.signer import Ed25519FileSigner
from gateway.consents import Consent, ConsentStatus, ConsentStore, Grantee, Justification
from gateway.store import SqliteStore, Store, StoredLog
from gateway.store.sqlite_consents import SqliteConsents, micros
from tests.gateway.store.test_sqlite_audit import make_record
from tests.postgres import Place

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def consent(consent_id: str = "cns_one", **changes: object) -> Consent:
    base = Consent(
        consent_id=consent_id,
        subject="5b" * 32,
        card_binding="c1" * 32,
        grantee=Grantee(org_type="hospital", district="110105"),
        categories=("insurance",),
        purposes=("COVERAGE", "TREAT"),
        valid_from=NOW - dt.timedelta(days=1),
        valid_until=NOW + dt.timedelta(days=30),
        max_uses=1,
        uses=0,
        granted_at=NOW - dt.timedelta(days=1),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def opened(place: Place) -> AsyncIterator[tuple[Store, StoredLog, ConsentStore]]:
    signer = Ed25519FileSigner.generate(place.data_dir / "log.key", "test.local/log")
    store = await place.open(signer)
    yield store, store.audit_log, store.consents
    await store.close()


def released(n: int, consent_id: str, at: dt.datetime = NOW) -> tuple[AuditRecord, Redemption]:
    record = make_record(n)
    instead = dataclasses.replace(record, outcome="PERMISSION_DENIED", released_sha256="")
    return record, Redemption(ConsentSpend(consent_id, micros(at)), instead)


async def test_a_consent_round_trips_and_is_listed_newest_first(
    opened: tuple[Store, StoredLog, ConsentStore],
) -> None:
    _, _, consents = opened
    older, newer = consent("cns_a"), consent("cns_b", granted_at=NOW, max_uses=0)
    other = consent("cns_c", subject="77" * 32)
    for c in (older, newer, other):
        await consents.add(c)
    assert await consents.get("cns_a") == older
    assert await consents.get("cns_nope") is None
    assert await consents.of_subject("5b" * 32) == [newer, older]


async def test_racing_exchanges_take_the_last_use_once(
    opened: tuple[Store, StoredLog, ConsentStore],
) -> None:
    _, log, consents = opened
    await consents.add(consent(max_uses=3))
    receipts = await asyncio.gather(*(log.append(*released(n, "cns_one")) for n in range(10)))
    assert [r.replayed for r in receipts].count(False) == 3
    assert {r.refusal for r in receipts if r.replayed} == {"consent_exhausted"}
    stored = await consents.get("cns_one")
    assert stored is not None and stored.uses == 3
    assert stored.status(NOW) is ConsentStatus.EXHAUSTED
    entries = await log.entries(0, 10)
    for receipt, entry in zip(receipts, entries, strict=True):
        record = json.loads(entry.leaf)["r"]
        assert (record["reason"] == "consent_exhausted") is receipt.replayed
        assert (record["released_sha256"] == "") is receipt.replayed


async def test_a_use_is_refused_once_revoked_or_outside_the_validity(
    opened: tuple[Store, StoredLog, ConsentStore],
) -> None:
    _, log, consents = opened
    await consents.add(consent("cns_r", max_uses=0))
    await consents.add(consent("cns_e", max_uses=0))
    revoked = await consents.revoke("cns_r", "5b" * 32, NOW)
    assert revoked is not None and revoked.revoked_at == NOW
    assert await consents.revoke("cns_r", "77" * 32, NOW) is None  # another holder's: none
    later = await consents.revoke("cns_r", "5b" * 32, NOW + dt.timedelta(hours=1))
    assert later is not None and later.revoked_at == NOW  # not moved by a second call
    after = NOW + dt.timedelta(days=31)
    before = NOW - dt.timedelta(days=2)
    got = [
        (await log.append(*released(0, "cns_r"))).refusal,
        (await log.append(*released(1, "cns_e", after))).refusal,
        (await log.append(*released(2, "cns_e", before))).refusal,
        (await log.append(*released(3, "cns_e"))).refusal,
    ]
    assert got == ["consent_revoked", "consent_expired", "consent_expired", ""]


async def test_a_justification_is_kept_by_request_id_and_digest(
    opened: tuple[Store, StoredLog, ConsentStore],
) -> None:
    _, _, consents = opened
    about = Justification("req-1", "hosp-bj-001", "LIFE_THREATENING", "ab" * 8, NOW)
    await consents.keep_justification(about, "cardiac arrest in the waiting room")
    # The same request id again (a caller reusing it): kept beside the first, never over it.
    again = dataclasses.replace(about, digest="cd" * 8)
    await consents.keep_justification(again, "cardiac arrest, second look")
    await consents.keep_justification(about, "cardiac arrest in the waiting room")
    window = await consents.justifications(NOW, NOW + dt.timedelta(seconds=1))
    assert window == {
        ("req-1", "ab" * 8): "cardiac arrest in the waiting room",
        ("req-1", "cd" * 8): "cardiac arrest, second look",
    }
    assert await consents.justifications(NOW + dt.timedelta(seconds=1), NOW + dt.timedelta(1)) == {}


def test_a_schema_5_database_gains_the_consent_tables(tmp_path: Path) -> None:
    db = tmp_path / "onecard.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA user_version=5")
    store = SqliteStore(db)
    asyncio.run(store.close())
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    assert {"consents", "emergency_justifications"} <= tables and version == 8


def test_a_schema_7_database_keeps_its_justifications_keyed_by_request_id_and_digest(
    tmp_path: Path,
) -> None:
    db = tmp_path / "onecard.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TABLE emergency_justifications (request_id TEXT PRIMARY KEY, org TEXT NOT "
            "NULL, reason TEXT NOT NULL, digest TEXT NOT NULL, justification TEXT NOT NULL, "
            "recorded_at INTEGER NOT NULL) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO emergency_justifications VALUES "
            "('req-1', 'hosp-bj-001', 'OTHER', 'abababababababab', 'kept before', 1)"
        )
        conn.execute("PRAGMA user_version=7")
        conn.commit()

    async def reuse() -> dict[tuple[str, str], str]:
        store = SqliteStore(db)
        try:
            consents = SqliteConsents(store)
            at = dt.datetime.fromtimestamp(0, dt.UTC)
            about = Justification("req-1", "hosp-bj-001", "OTHER", "cd" * 8, at)
            await consents.keep_justification(about, "kept after")
            return await consents.justifications(at, at + dt.timedelta(seconds=1))
        finally:
            await store.close()

    assert asyncio.run(reuse()) == {
        ("req-1", "ab" * 8): "kept before",
        ("req-1", "cd" * 8): "kept after",
    }
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert version == 8 and "emergency_justifications_v7" not in tables
