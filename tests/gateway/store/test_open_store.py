"""The store interface: the kind comes from the settings, the log is read through it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.signer import Ed25519FileSigner, Signer
from gateway.cli import main
from gateway.errors import SetupError
from gateway.store import database_path, open_store, read_log
from tests.gateway.store.test_sqlite_audit import ORIGIN, records

KINDS_MESSAGE = r"store = 'postgresql': not a store this gateway has \(it has: sqlite, postgres\)"


def signer_at(path: Path) -> Callable[[list[tuple[str, str]]], Signer]:
    def signer_for(keys: list[tuple[str, str]]) -> Signer:
        if path.exists():
            return Ed25519FileSigner(path, ORIGIN)
        return Ed25519FileSigner.generate(path, ORIGIN)

    return signer_for


def writers() -> int:
    return sum(t.name == "sqlite-writer" for t in threading.enumerate())


async def test_an_unknown_store_is_refused_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=KINDS_MESSAGE):
        await open_store("postgresql", tmp_path, signer_at(tmp_path / "k"), checkpoint_interval_s=1)
    with pytest.raises(SetupError, match=KINDS_MESSAGE):
        database_path("postgresql", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_audit_export_refuses_an_unknown_store_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{tmp_path}"\nstore = "postgresql"\n')
    code = main(["audit", "export", "--config", str(config), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a store this gateway has" in err


async def test_the_sqlite_store_opens_its_log_and_a_snapshot_reads_what_it_wrote(
    tmp_path: Path,
) -> None:
    store = await open_store("sqlite", tmp_path, signer_at(tmp_path / "k"), checkpoint_interval_s=0)
    for record in records(5):
        await store.audit_log.append(record)
    assert not await store.token_redeemed(b"x" * 16)
    expected_leaves = [entry.leaf for entry in await store.audit_log.entries(0, 5)]
    expected_checkpoints = list(await store.audit_log.checkpoints())
    await store.close()
    files = sorted(tmp_path.iterdir())
    with read_log("sqlite", tmp_path, served=False) as log:
        assert log.size() == 5
        assert log.leaves(1, 4) == expected_leaves[1:4]
        assert log.checkpoints() == expected_checkpoints
    assert sorted(tmp_path.iterdir()) == files  # the snapshot created no file


async def test_a_store_whose_log_does_not_open_is_closed_again(tmp_path: Path) -> None:
    before = writers()

    def refuse(keys: list[tuple[str, str]]) -> Signer:
        raise SetupError("no key for you")

    with pytest.raises(SetupError, match="no key for you"):
        await open_store("sqlite", tmp_path, refuse, checkpoint_interval_s=1)
    assert writers() == before


def test_reading_a_directory_without_a_log_is_one_line(tmp_path: Path) -> None:
    with (
        pytest.raises(SetupError, match="no gateway database here"),
        read_log("sqlite", tmp_path, served=False),
    ):
        pass
