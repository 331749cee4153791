"""Tampering with the database is caught by ``onecard audit verify``, which names the entry."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.social_insurance.seed import Population
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.bootstrap import Gateway
from gateway.cli import main
from gateway.client import org_channel
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import issue_token

pytestmark = pytest.mark.integration


@pytest.fixture
async def logged(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> Path:
    """A gateway database with 12 entries and checkpoints at 1, 6 and 12; the gateway stopped."""
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=3600)
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, "app-ecard-001") as app:
        for _ in range(6):
            await issue_token(app, person.id_number)
        await gateway.audit_log.checkpoint_now()
        for _ in range(6):
            await issue_token(app, person.id_number)
    await gateway.stop(0)  # signs the final checkpoint
    return tmp_path / "data"


def _export(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "export"
    shutil.rmtree(out, ignore_errors=True)
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{data}"\n')
    assert main(["audit", "export", "--config", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _export_and_verify(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    out = _export(data, tmp_path, capsys)
    code = main(["audit", "verify", str(out), "--key", str(data / "audit-log.pub")])
    text = capsys.readouterr().out
    assert code == (0 if text.startswith("OK") else 1)
    return text


def _sql(data: Path, *statements: str) -> None:
    with sqlite3.connect(data / "onecard.db") as conn:
        for statement in statements:
            conn.execute(statement)


async def test_an_untouched_log_verifies(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _export_and_verify(logged, tmp_path, capsys)
    assert text.startswith("OK: 12 entries, 3 signed checkpoints verified")


async def test_an_edited_entry_is_named(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(
        logged,
        "UPDATE audit_entries SET leaf = CAST(replace(leaf, 'IssueCardToken', 'IssueCardTokem')"
        " AS BLOB) WHERE idx = 4",
    )
    assert "FAILED: first bad entry: 4:" in _export_and_verify(logged, tmp_path, capsys)


async def test_a_deleted_entry_is_named(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(logged, "DELETE FROM audit_entries WHERE idx = 7")
    assert "FAILED: first bad entry: 7:" in _export_and_verify(logged, tmp_path, capsys)


async def test_reordered_entries_are_named(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(
        logged,
        "UPDATE audit_entries SET idx = -1 WHERE idx = 2",
        "UPDATE audit_entries SET idx = 2 WHERE idx = 3",
        "UPDATE audit_entries SET idx = 3 WHERE idx = -1",
    )
    assert "FAILED: first bad entry: 2:" in _export_and_verify(logged, tmp_path, capsys)


async def test_an_inserted_entry_is_named(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(
        logged,
        "UPDATE audit_entries SET idx = idx + 1000 WHERE idx >= 9",
        "UPDATE audit_entries SET idx = idx - 999 WHERE idx >= 1000",
        "INSERT INTO audit_entries SELECT 9, nodes, leaf FROM audit_entries WHERE idx = 8",
    )
    assert "FAILED: first bad entry: 9:" in _export_and_verify(logged, tmp_path, capsys)


async def test_a_checkpoint_signed_by_an_unknown_key_is_rejected(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    intruder = Ed25519FileSigner.generate(tmp_path / "intruder.key", "onecard.local/audit")
    (logged / "audit-log.pub").write_text(intruder.verifier_key() + "\n")
    text = _export_and_verify(logged, tmp_path, capsys)
    assert text.startswith("FAILED")
    assert "unknown key" in text


def _receipt(data: Path, index: int) -> str:
    with sqlite3.connect(data / "onecard.db") as conn:
        (leaf,) = conn.execute("SELECT leaf FROM audit_entries WHERE idx = ?", (index,)).fetchone()
    return f"{index}:{hash_leaf(bytes(leaf)).hex()}"


def _verify_receipt(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], receipt: str
) -> tuple[int, str]:
    out = _export(data, tmp_path, capsys)
    key = str(data / "audit-log.pub")
    code = main(["audit", "verify", str(out), "--key", key, "--receipt", receipt])
    return code, capsys.readouterr().out


async def test_a_receipt_is_proved_against_the_signed_checkpoint(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _verify_receipt(logged, tmp_path, capsys, _receipt(logged, 4))
    assert code == 0
    assert text.startswith("OK: receipt 4 ") and "tree of 12 entries" in text


async def test_a_receipt_that_is_not_in_the_log_fails(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry_5 = _receipt(logged, 5).split(":")[1]
    code, text = _verify_receipt(logged, tmp_path, capsys, f"4:{entry_5}")
    assert code == 1
    assert text.startswith("FAILED: receipt 4 is not in the signed log")


async def test_a_receipt_still_proves_when_the_export_was_changed_and_says_so(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = _receipt(logged, 4)
    _sql(
        logged,
        "UPDATE audit_entries SET leaf = CAST(replace(leaf, 'IssueCardToken', 'IssueCardTokem')"
        " AS BLOB) WHERE idx = 4",
    )
    code, text = _verify_receipt(logged, tmp_path, capsys, receipt)
    assert code == 1
    assert text.startswith("OK: receipt 4 ")
    assert "FAILED: the export's entry 4 is not the signed one" in text
