"""Who serves a data directory: one gateway alone (SQLite), or the gateways of one log shared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store.lock import LOCK_NAME, DataDirInUse, DataDirLock, is_served


def test_second_claim_is_refused_naming_the_directory(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path)
    try:
        with pytest.raises(DataDirInUse, match=str(tmp_path)):
            DataDirLock.acquire(tmp_path)
        assert is_served(tmp_path)
    finally:
        first.release()
    assert not is_served(tmp_path)
    DataDirLock.acquire(tmp_path).release()


def test_is_served_creates_nothing(tmp_path: Path) -> None:
    assert not is_served(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_dead_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import os, sys; from pathlib import Path; from gateway.store.lock import DataDirLock;"
        f"DataDirLock.acquire(Path({str(tmp_path)!r})); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not is_served(tmp_path)
    DataDirLock.acquire(tmp_path).release()


def test_gateways_of_a_shared_store_share_the_directory_and_keep_out_an_exclusive_one(
    tmp_path: Path,
) -> None:
    one = DataDirLock.acquire(tmp_path, shared=True)
    two = DataDirLock.acquire(tmp_path, shared=True)  # a second gateway of the same log
    assert is_served(tmp_path)
    with pytest.raises(DataDirInUse, match="another onecard gateway"):
        DataDirLock.acquire(tmp_path)  # a key rotation, or a gateway on SQLite
    one.release()
    assert is_served(tmp_path)  # the other still serves
    two.release()
    assert not is_served(tmp_path)
    alone = DataDirLock.acquire(tmp_path)
    with pytest.raises(DataDirInUse, match="holds this data directory alone"):
        DataDirLock.acquire(tmp_path, shared=True)
    alone.release()
