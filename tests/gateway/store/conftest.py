"""Fixtures of the store tests: one signer per module, logs opened on one database file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.audit.signer import Ed25519FileSigner
from tests.gateway.store.test_sqlite_audit import ORIGIN, Logs
from tests.postgres import STORES, Place, place_of


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Ed25519FileSigner:
    return Ed25519FileSigner.generate(tmp_path_factory.mktemp("keys") / "log.key", ORIGIN)


@pytest.fixture
async def logs(tmp_path: Path, signer: Ed25519FileSigner, loops: str) -> AsyncIterator[Logs]:
    """Logs on one file, written with the C loops, then with the Python ones (``loops``)."""
    opened = Logs(tmp_path / "onecard.db", signer)
    yield opened
    await opened.close_all()


@pytest.fixture(params=STORES)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """Where a store of each kind lives (PostgreSQL: a schema of the test's own)."""
    with place_of(request.param, tmp_path) as where:
        yield where
