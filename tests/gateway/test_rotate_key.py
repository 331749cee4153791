"""``onecard audit rotate-key``: a new key for a stopped log, old keys kept and published; every
refusal is one line on stderr with exit status 2."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.audit.signer import Ed25519FileSigner
from gateway.cli import main
from gateway.store import SqliteStore
from gateway.store.sqlite_audit import SqliteAuditLog
from gateway.store.sqlite_keys import recorded_keys
from tests.gateway.store.test_sqlite_audit import append_each, records

ORIGIN = "onecard.local/audit"


async def make_log(data: Path, origin: str = ORIGIN) -> Ed25519FileSigner:
    (data / "keys").mkdir(parents=True)
    signer = Ed25519FileSigner.generate(data / "keys" / "audit-log.key", origin)
    store = SqliteStore(data / "onecard.db")
    await append_each(SqliteAuditLog(store, signer, checkpoint_interval_s=0), records(3))
    await store.close()
    return signer


def config(tmp_path: Path, **settings: str) -> str:
    path = tmp_path / "gw.toml"
    lines = [f'data_dir = "{tmp_path / "data"}"'] + [f'{k} = "{v}"' for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str], **settings: str) -> tuple[int, str]:
    code = main(["audit", "rotate-key", "--config", config(tmp_path, **settings)])
    return code, capsys.readouterr().err


async def test_rotation_records_the_new_key_and_keeps_the_old_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    old = await make_log(data)
    assert rotate(tmp_path, capsys) == (0, "")
    new = Ed25519FileSigner(data / "keys" / "audit-log.key", ORIGIN)
    assert new.verifier_key() != old.verifier_key()
    retired = data / "keys" / f"audit-log.key.retired-{old.key_id.hex()}"
    assert Ed25519FileSigner(retired, ORIGIN).verifier_key() == old.verifier_key()
    keys = [old.verifier_key(), new.verifier_key()]
    assert [key for _, key in recorded_keys(data / "onecard.db")] == keys
    assert (data / "audit-log.pub").read_text().splitlines() == keys


async def test_without_a_log_rotation_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = rotate(tmp_path, capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "no audit log here" in err
    assert not (tmp_path / "data" / "onecard.db").exists()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("origin", "is not this log's origin"),
        ("key file missing", "cannot open key file"),
        ("another key", "is not this log's key"),
        ("interrupted before", "already exists; not overwriting"),
        ("a flipped stored node", "audit log damaged at entries"),
    ],
)
async def test_a_rotation_that_cannot_be_done_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, says: str
) -> None:
    data = tmp_path / "data"
    await make_log(data)
    key = data / "keys" / "audit-log.key"
    settings = {}
    if damage == "origin":
        settings["audit_origin"] = "elsewhere.example/audit"
    elif damage == "key file missing":
        key.unlink()
    elif damage == "another key":
        key.unlink()
        Ed25519FileSigner.generate(key, ORIGIN)
    elif damage == "a flipped stored node":
        with sqlite3.connect(data / "onecard.db") as conn:
            newest, nodes = conn.execute(
                "SELECT idx, nodes FROM audit_entries ORDER BY idx DESC LIMIT 1"
            ).fetchone()
            flipped = bytes([nodes[0] ^ 1]) + bytes(nodes[1:])  # its own leaf hash
            conn.execute("UPDATE audit_entries SET nodes = ? WHERE idx = ?", (flipped, newest))
    else:
        Ed25519FileSigner.generate(data / "keys" / "audit-log.key.new", ORIGIN)
    before = recorded_keys(data / "onecard.db")
    code, err = rotate(tmp_path, capsys, **settings)
    assert code == 2
    assert err.count("\n") == 1
    assert says in err
    assert recorded_keys(data / "onecard.db") == before
    assert not list((data / "keys").glob("*.retired-*"))
