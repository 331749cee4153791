"""What only the PostgreSQL store has: migrations, the schema check, several writers on one log,
the log's lock against key rotation, and a writer that survives losing its connection."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import psycopg
import pytest

from gateway.audit.proof import root_of
from gateway.audit.signer import Ed25519FileSigner
from gateway.cli import main
from gateway.errors import SetupError, StoreUnavailable
from gateway.store import open_store, pg_schema
from gateway.store.pg_audit import add_key, recorded_keys
from tests.gateway.store.test_sqlite_audit import (
    append_each,
    assert_consistency,
    assert_inclusion,
    in_log_order,
    open_cp,
    records,
    reference_chain,
    stored_leaves,
)
from tests.postgres import SERVER, Place, fresh_schema


def _settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str) -> None:
    monkeypatch.setenv("ONECARD_STORE", "postgres")
    monkeypatch.setenv("ONECARD_DATABASE_URL", dsn)
    monkeypatch.setenv("ONECARD_DATA_DIR", str(tmp_path))


def test_db_upgrade_migrates_an_empty_schema_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fresh_schema(upgraded=False) as dsn:
        _settings_env(monkeypatch, tmp_path, dsn)
        assert main(["db", "upgrade"]) == 0
        first = capsys.readouterr().out
        assert main(["db", "upgrade"]) == 0
        second = capsys.readouterr().out
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT version, name FROM schema_version ORDER BY 1").fetchall()
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                )
            }
    assert rows == [(m.version, m.name) for m in pg_schema.MIGRATIONS]
    assert f"applied 0001_{pg_schema.MIGRATIONS[0].name}" in first
    assert f"schema version 0 -> {pg_schema.LATEST}" in first
    assert f"schema version {pg_schema.LATEST} is current; nothing to do" in second
    assert {"audit_entries", "consents", "redeemed_tokens", "audit_search"} <= tables


def test_db_upgrade_refuses_the_sqlite_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONECARD_DATA_DIR", str(tmp_path))
    assert main(["db", "upgrade"]) == 2
    assert 'is for store = "postgres"' in capsys.readouterr().err


async def test_a_schema_never_upgraded_is_refused_with_what_to_run(
    tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    with fresh_schema(upgraded=False) as dsn:
        with pytest.raises(SetupError, match=r"run `onecard db upgrade`") as caught:
            await Place("postgres", tmp_path, dsn).open(signer)
        assert "has no OneCard schema" in str(caught.value)


async def test_a_schema_newer_than_the_gateway_is_refused(
    tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    with fresh_schema() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, 'from_the_future')",
                (pg_schema.LATEST + 1,),
            )
            with pytest.raises(SetupError, match="newer than this gateway"):
                pg_schema.upgrade(conn)
        with pytest.raises(SetupError, match="upgrade the gateway"):
            await Place("postgres", tmp_path, dsn).open(signer)


async def test_two_writers_on_one_log_append_one_chain_whose_proofs_verify(
    tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    with fresh_schema() as dsn:
        place = Place("postgres", tmp_path, dsn)
        one, two = await place.open(signer), await place.open(signer)  # two sessions, as two
        try:  # processes have: each batch claims the log, so they take turns
            recs = records(60)
            receipts = await asyncio.gather(
                *((one if i % 2 else two).audit_log.append(record) for i, record in enumerate(recs))
            )
            receipts += await append_each(one.audit_log, records(3, first=60))
            receipts += await append_each(two.audit_log, records(3, first=63))
            recs = recs + records(6, first=60)
            leaves, hashes = reference_chain(in_log_order(recs, receipts))
            assert await stored_leaves(one.audit_log) == leaves
            assert [r.leaf_hash for r in receipts] == [hashes[r.index] for r in receipts]
            for size, note in await two.audit_log.checkpoints():  # one tree, no fork
                assert open_cp(note, signer).root_hash == root_of(hashes[:size])
            for log in (one.audit_log, two.audit_log):
                await assert_inclusion(log, hashes, 5, len(hashes))
                await assert_consistency(log, hashes, 7, len(hashes))
        finally:
            await one.close()
            await two.close()


async def test_rotate_key_is_refused_while_a_gateway_serves_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    with fresh_schema() as dsn:
        store = await Place("postgres", tmp_path, dsn).open(signer)
        try:
            with pytest.raises(SetupError, match="stop every gateway process"):
                add_key(dsn, signer)
        finally:
            await store.close()


async def test_the_writer_reconnects_after_losing_its_connection(
    tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    with fresh_schema() as dsn:
        store = await Place("postgres", tmp_path, dsn).open(signer)
        try:
            await append_each(store.audit_log, records(3))
            with psycopg.connect(SERVER, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted"
                    " AND objid = (SELECT hashtext(%s)::oid)",
                    (dsn.split("search_path=")[1].split()[0].strip("'"),),
                ).fetchone()
            assert killed == (1,)
            with contextlib.suppress(StoreUnavailable):  # the batch that finds it lost fails
                await store.audit_log.append(records(1, first=3)[0])
            size = await store.audit_log.size()
            await append_each(store.audit_log, records(6 - size, first=size))
            leaves, _ = reference_chain(records(6))
            assert await stored_leaves(store.audit_log) == leaves
        finally:
            await store.close()


async def test_a_missing_or_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    with pytest.raises(SetupError, match="needs database_url"):
        await open_store("postgres", tmp_path, lambda _: signer, checkpoint_interval_s=1)
    url = "postgresql://onecard:s3cret@127.0.0.1:9/onecard"
    with pytest.raises(SetupError, match="cannot connect") as caught:
        await open_store(
            "postgres", tmp_path, lambda _: signer, checkpoint_interval_s=1, database_url=url
        )
    assert "s3cret" not in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_rotate_key_records_a_new_key_for_a_stopped_postgresql_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    old = Ed25519FileSigner.generate(data / "keys" / "audit-log.key", "onecard.local/audit")
    with fresh_schema() as dsn:
        place = Place("postgres", data, dsn)
        store = await place.open(old)
        await append_each(store.audit_log, records(3))
        await store.close()
        _settings_env(monkeypatch, data, dsn)
        assert main(["audit", "rotate-key"]) == 0, capsys.readouterr().err
        new = Ed25519FileSigner(data / "keys" / "audit-log.key", "onecard.local/audit")
        keys = [old.verifier_key(), new.verifier_key()]
        assert [key for _, key in recorded_keys(dsn)] == keys
        assert (data / "audit-log.pub").read_text().splitlines() == keys
        store = await place.open(new)  # the new key signs on; the old one is refused
        try:
            await append_each(store.audit_log, records(1, first=3))
            assert await store.audit_log.size() == 4
        finally:
            await store.close()
        with pytest.raises(SetupError, match="retired key"):
            await place.open(old)


def test_a_database_error_in_a_command_is_one_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fresh_schema() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE audit_entries CASCADE")  # damaged by hand
        _settings_env(monkeypatch, tmp_path, dsn)
        code = main(["audit", "export", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the PostgreSQL database failed" in err and "audit_entries" in err
    assert not (tmp_path / "out").exists()
