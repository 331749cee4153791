"""The tamper suite: ``onecard audit verify`` refuses every kind of damage and names where.

A real gateway writes 12 entries (checkpoints at 1, 6 and 12) and stops; ``onecard audit export``
exports its data directory. Then the database or the export is damaged one way at a time, and
the command line's exit status and the entry or range it names are checked. Export's own
promises (read-only, every entry covered, nothing stale) are in ``test_audit_export.py``.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.social_insurance.seed import Population
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.record import leaf_bytes
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.bootstrap import Gateway
from gateway.cli import main
from gateway.client import org_channel
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import issue_token

# The verifier reads exports, whatever the store; these tests damage the SQLite file or its
# exports (PostgreSQL's damaged rows: tests/gateway/store/test_stores.py).
pytestmark = [pytest.mark.integration, pytest.mark.sqlite_only]

ORIGIN = "onecard.local/audit"


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


def export(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *, damaged: bool = False
) -> Path:
    """Export ``data``; a damaged log is exported too (as evidence), with exit status 1."""
    out = tmp_path / "export"
    shutil.rmtree(out, ignore_errors=True)
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{data}"\n')
    code = main(["audit", "export", "--config", str(config), "--out", str(out)])
    assert code == (1 if damaged else 0)
    capsys.readouterr()
    return out


def verify(
    out: Path, key: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    code = main(["audit", "verify", str(out), "--key", str(key), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sql(data: Path, *statements: str) -> None:
    with sqlite3.connect(data / "onecard.db") as conn:
        for statement in statements:
            conn.execute(statement)


def lines(out: Path) -> list[bytes]:
    return (out / "entries.jsonl").read_bytes().splitlines()


def write_lines(out: Path, new: list[bytes]) -> None:
    (out / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in new))


async def test_an_untouched_log_verifies(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(logged, tmp_path, capsys)
    code, text, err = verify(out, logged / "audit-log.pub", capsys)
    assert code == 0
    # nothing but progress (printed once a run has taken a second, as on a loaded machine)
    assert all(line.startswith("  verified ") for line in err.splitlines()), err
    assert text.startswith("OK: 12 entries, 3 signed checkpoints verified")


# --- damage to the database, found in its export ---------------------------------------------

EDIT = (
    "UPDATE audit_entries SET leaf = CAST(replace(leaf, 'IssueCardToken', 'IssueCardTokem')"
    " AS BLOB) WHERE idx = {}"
)


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        pytest.param([EDIT.format(4)], "first bad entry: 4: entry 4 was changed", id="edited"),
        pytest.param(
            [EDIT.format(11)],
            "bad entries 6..11: entries 6..11 are chained but do not give the root",
            id="edited-last",
        ),
        pytest.param(
            ["DELETE FROM audit_entries WHERE idx = 7"],
            "first bad entry: 7: entry 7 is missing",
            id="deleted",
        ),
        pytest.param(
            [
                "UPDATE audit_entries SET idx = -1 WHERE idx = 2",
                "UPDATE audit_entries SET idx = 2 WHERE idx = 3",
                "UPDATE audit_entries SET idx = 3 WHERE idx = -1",
            ],
            "bad entries 2..3: entries 2 and 3 were swapped",
            id="swapped",
        ),
        pytest.param(
            [
                "UPDATE audit_entries SET idx = idx + 1000 WHERE idx >= 9",
                "UPDATE audit_entries SET idx = idx - 999 WHERE idx >= 1000",
                "INSERT INTO audit_entries SELECT 9, nodes, leaf FROM audit_entries WHERE idx = 8",
            ],
            "first bad entry: 9: entry 9: a copy of entry 8 was inserted",
            id="inserted",
        ),
        pytest.param(
            ["DELETE FROM audit_entries WHERE idx >= 9"],
            "bad entries 9..11: entries 9..11 are missing (checkpoint 12)",
            id="truncated",
        ),
    ],
)
async def test_damage_to_the_database_is_named(
    logged: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    statements: list[str],
    named: str,
) -> None:
    """The signing key is not in the directory (an intruder without it, a copy): the export
    stops at the newest checkpoint, and signs nothing."""
    (logged / "keys" / "audit-log.key").rename(tmp_path / "away.key")
    sql(logged, *statements)
    out = export(logged, tmp_path, capsys, damaged=True)
    code, text, _ = verify(out, logged / "audit-log.pub", capsys)
    assert code == 1
    assert text.startswith(f"FAILED: {named}")


# --- damage to an export ---------------------------------------------------------------------


def changed_prev(out: Path) -> None:
    old = lines(out)
    at = old[8].index(b'"prev":"') + 8
    digit = b"1" if old[8][at : at + 1] == b"0" else b"0"
    old[8] = old[8][:at] + digit + old[8][at + 1 :]
    write_lines(out, old)


def appended(chained: bool) -> Callable[[Path], None]:
    def damage(out: Path) -> None:
        old = lines(out)
        body = old[-1][old[-1].index(b'"r":') + 4 : -1]
        prev = hash_leaf(old[-1]) if chained else bytes(32)
        write_lines(out, [*old, leaf_bytes(len(old), prev, body)])

    return damage


def removed_checkpoints(out: Path) -> None:
    shutil.rmtree(out / "checkpoints")


def emptied(out: Path) -> None:
    write_lines(out, [])
    removed_checkpoints(out)


def newest_checkpoint_removed(out: Path) -> None:
    (out / "checkpoints" / "000000000012.note").unlink()


def re_signed(out: Path) -> None:
    intruder = Ed25519FileSigner.generate(out.parent / "intruder.key", ORIGIN)
    note = out / "checkpoints" / "000000000012.note"
    checkpoint = Checkpoint.parse(note.read_text().split("\n\n")[0] + "\n")
    note.write_bytes(sign_checkpoint(checkpoint, intruder))


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        pytest.param(changed_prev, "first bad entry: 8: entry 8 was changed: its prev", id="prev"),
        pytest.param(
            appended(chained=True),
            "first bad entry: 12: entry 12 is not covered by a signed checkpoint",
            id="appended-chained",
        ),
        pytest.param(
            appended(chained=False),
            "first bad entry: 12: entry 12 was changed: its prev is not the leaf hash of entry 11",
            id="appended-unchained",
        ),
        pytest.param(
            removed_checkpoints, "checkpoints: no signed checkpoint", id="checkpoints-removed"
        ),
        pytest.param(
            newest_checkpoint_removed,
            "bad entries 6..11: entries 6..11 are not covered by a signed checkpoint",
            id="newest-checkpoint-removed",
        ),
        pytest.param(emptied, "checkpoints: no signed checkpoint", id="empty"),
        pytest.param(
            re_signed,
            "checkpoints/000000000012.note: signed by an unknown key",
            id="re-signed-by-an-unknown-key",
        ),
    ],
)
async def test_damage_to_an_export_is_named(
    logged: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    named: str,
) -> None:
    out = export(logged, tmp_path, capsys)
    damage(out)
    code, text, _ = verify(out, logged / "audit-log.pub", capsys)
    assert code == 1
    assert text.startswith(f"FAILED: {named}")


async def test_a_rollback_is_caught_against_a_trusted_checkpoint(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept-12.note"
    shutil.copyfile(export(logged, tmp_path, capsys) / "checkpoints" / "000000000012.note", kept)
    sql(
        logged,
        "DELETE FROM audit_entries WHERE idx >= 9",
        "DELETE FROM audit_checkpoints WHERE size > 6",
    )
    out = export(logged, tmp_path, capsys)  # the key is here: it signs the 9 entries left
    key = logged / "audit-log.pub"
    assert verify(out, key, capsys)[0] == 0  # alone, the rolled-back log verifies
    code, text, _ = verify(out, key, capsys, "--trusted-checkpoint", str(kept))
    assert code == 1
    assert text.startswith(
        "FAILED: bad entries 9..11: entries 9..11 are missing, but the trusted checkpoint 12 "
        "holds them: the log was rolled back"
    )


async def test_a_receipt_is_proved_against_a_trusted_checkpoint(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(logged, tmp_path, capsys)
    kept = tmp_path / "kept-6.note"
    shutil.copyfile(out / "checkpoints" / "000000000006.note", kept)
    receipt = _receipt(logged, 4)
    code, text, _ = verify(
        out,
        logged / "audit-log.pub",
        capsys,
        "--receipt",
        receipt,
        "--trusted-checkpoint",
        str(kept),
    )
    assert code == 0
    assert (
        text.startswith("OK: receipt 4 ") and "tree of 6 entries of the trusted checkpoint" in text
    )


# --- bad input: one line on stderr, exit status 2 --------------------------------------------


@pytest.mark.parametrize(
    ("key_text", "message"),
    [
        (None, "cannot read the key file"),
        ("", "holds no verifier key"),
        ("not a key\n", "line 1 is not a verifier key"),
        ("\xff\xfe", "line 1 is not a verifier key"),
    ],
)
async def test_a_bad_key_file_is_one_line_and_exit_2(
    logged: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key_text: str | None,
    message: str,
) -> None:
    out = export(logged, tmp_path, capsys)
    key = tmp_path / "given.pub"
    if key_text is not None:
        key.write_text(key_text)
    code, text, err = verify(out, key, capsys)
    assert (code, text) == (2, "")
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


async def test_another_logs_key_fails_in_one_line(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(logged, tmp_path, capsys)
    other = Ed25519FileSigner.generate(tmp_path / "other.key", "other.example/audit")
    key = tmp_path / "other.pub"
    key.write_text(other.verifier_key() + "\n")
    code, text, err = verify(out, key, capsys)
    assert (code, err) == (1, "")
    assert text.startswith("FAILED: checkpoints/000000000001.note: signed by an unknown key")


async def test_several_keys_in_one_file_and_repeated_keys_are_accepted(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(logged, tmp_path, capsys)
    other = Ed25519FileSigner.generate(tmp_path / "old.key", ORIGIN)
    keys = tmp_path / "keys.pub"
    keys.write_text(other.verifier_key() + "\n" + (logged / "audit-log.pub").read_text())
    code, text, _ = verify(out, keys, capsys, "--key", str(tmp_path / "keys.pub"))
    assert code == 0 and text.startswith("OK: 12 entries")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trusted-checkpoint", "/nonexistent/kept.note"], "cannot read it"),
        (["--trusted-checkpoint", "{export}/entries.jsonl"], "not a checkpoint of the log"),
    ],
)
async def test_a_bad_trusted_checkpoint_is_one_line_and_exit_2(
    logged: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    out = export(logged, tmp_path, capsys)
    code, text, err = verify(
        out, logged / "audit-log.pub", capsys, *[a.format(export=out) for a in args]
    )
    assert (code, text) == (2, "")
    assert err.count("\n") == 1 and message in err


async def test_a_missing_export_is_one_line_and_exit_2(
    logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, err = verify(tmp_path / "nowhere", logged / "audit-log.pub", capsys)
    assert (code, text) == (2, "")
    assert err == f"onecard: {tmp_path / 'nowhere'}: no such export directory\n"


def _receipt(data: Path, index: int) -> str:
    with sqlite3.connect(data / "onecard.db") as conn:
        (leaf,) = conn.execute("SELECT leaf FROM audit_entries WHERE idx = ?", (index,)).fetchone()
    return f"{index}:{hash_leaf(bytes(leaf)).hex()}"


def _verify_receipt(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    receipt: str,
    *,
    damaged: bool = False,
) -> tuple[int, str]:
    out = export(data, tmp_path, capsys, damaged=damaged)
    code, text, _ = verify(out, data / "audit-log.pub", capsys, "--receipt", receipt)
    return code, text


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
    sql(logged, EDIT.format(4))
    code, text = _verify_receipt(logged, tmp_path, capsys, receipt, damaged=True)
    assert code == 1
    assert text.startswith("OK: receipt 4 ")
    assert "FAILED: the export's entry 4 is not the signed one" in text
