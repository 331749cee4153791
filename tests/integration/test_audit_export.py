"""``onecard audit export``: every exported entry is covered by a signed checkpoint, the
database is only read, and a non-empty output directory is refused."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.social_insurance.seed import Population
from gateway.bootstrap import Gateway
from gateway.cli import main
from gateway.client import org_channel
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import issue_token
from tests.integration.stored import config_file, execute

pytestmark = pytest.mark.integration


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def export_args(data: Path, out: Path, tmp_path: Path, database_url: str = "") -> list[str]:
    config = config_file(tmp_path / "gw.toml", data, database_url)
    return ["audit", "export", "--config", str(config), "--out", str(out)]


async def appended(gateway: Gateway, pki: PkiLayout, population: Population, n: int) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, "app-ecard-001") as app:
        for _ in range(n):
            await issue_token(app, person.id_number)


@pytest.fixture
async def stopped(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
    database_urls: dict[Path, str],
) -> Path:
    """A stopped gateway's data directory: 6 entries, the newest checkpoint at 3 (the one
    signed at stop deleted, as if the gateway had been killed)."""
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=3600)
    await appended(gateway, pki, population, 3)
    await gateway.audit_log.checkpoint_now()
    await appended(gateway, pki, population, 3)
    await gateway.stop(0)
    data = tmp_path / "data"
    execute(data, database_urls, "DELETE FROM audit_checkpoints WHERE size > 3")
    return data


@pytest.fixture
def url(stopped: Path, database_urls: dict[Path, str]) -> str:
    """The stopped log's database_url ("" on SQLite)."""
    return database_urls.get(stopped, "")


def misspell_entry_1(data: Path, database_urls: dict[Path, str]) -> None:
    """Change entry 1's leaf in the store (its RPC name), as a tamperer with the database would."""
    if database_urls.get(data):
        sql = (
            "UPDATE audit_entries SET leaf = convert_to(replace(convert_from(leaf, 'UTF8'), "
            "'IssueCardToken', 'IssueCardTokem'), 'UTF8') WHERE idx = 1"
        )
    else:
        sql = (
            "UPDATE audit_entries SET leaf = CAST(replace(leaf, 'IssueCardToken', "
            "'IssueCardTokem') AS BLOB) WHERE idx = 1"
        )
    execute(data, database_urls, sql)


def beside_db(data: Path) -> set[str]:
    return {p.name for p in data.iterdir() if p.name.startswith("onecard.db")}


async def test_a_served_directory_exports_the_entries_of_the_newest_checkpoint(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    database_urls: dict[Path, str],
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=3600)
    await appended(gateway, pki, population, 3)
    await gateway.audit_log.checkpoint_now()
    await appended(gateway, pki, population, 2)
    data, out = tmp_path / "data", tmp_path / "export"
    code, text, _ = run(export_args(data, out, tmp_path, database_urls.get(data, "")), capsys)
    assert code == 0
    assert "exported 3 entries" in text and "2 newer entries are not in a signed checkpoint" in text
    assert len((out / "entries.jsonl").read_bytes().splitlines()) == 3
    code, text, _ = run(["audit", "verify", str(out), "--key", str(data / "audit-log.pub")], capsys)
    assert (code, text.split(",")[0]) == (0, "OK: 3 entries")


async def test_a_stopped_directory_with_its_key_is_exported_whole_under_a_new_checkpoint(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    before = beside_db(stopped)
    out = tmp_path / "export"
    fhir = out / "fhir" / "auditevents.jsonl"  # inside the export: written with it
    code, text, _ = run([*export_args(stopped, out, tmp_path, url), "--fhir", str(fhir)], capsys)
    assert code == 0
    assert "exported 6 entries" in text and "signed a checkpoint of all 6 entries" in text
    assert (out / "checkpoints" / "000000000006.note").is_file()
    assert len(fhir.read_text().splitlines()) == 6
    assert beside_db(stopped) == before  # no -wal or -shm made
    code, text, _ = run(
        ["audit", "verify", str(out), "--key", str(stopped / "audit-log.pub")], capsys
    )
    assert (code, text.split(",")[0]) == (0, "OK: 6 entries")


async def test_a_stopped_directory_whose_log_does_not_verify_is_not_signed(
    stopped: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    url: str,
    database_urls: dict[Path, str],
) -> None:
    misspell_entry_1(stopped, database_urls)
    out = tmp_path / "export"
    code, text, err = run(export_args(stopped, out, tmp_path, url), capsys)
    assert (code, text) == (2, "")
    assert err.count("\n") == 1 and "refusing to sign a checkpoint" in err
    assert "first bad entry: 1" in err
    assert not out.exists() and not list(tmp_path.glob(".export.partial-*"))


async def test_without_the_key_the_export_stops_at_the_newest_checkpoint(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    (stopped / "keys" / "audit-log.key").rename(tmp_path / "away.key")
    out = tmp_path / "export"
    code, text, _ = run(export_args(stopped, out, tmp_path, url), capsys)
    assert code == 0
    assert "exported 3 entries" in text and "3 newer entries are not in a signed" in text


@pytest.mark.sqlite_only  # copies the database file
async def test_a_read_only_copy_is_exported_without_creating_files(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    names = [*beside_db(stopped), "audit-log.pub"]  # the database with its -wal, if any
    for name in names:
        (copy / name).write_bytes((stopped / name).read_bytes())
        (copy / name).chmod(0o444)
    copy.chmod(0o555)
    try:
        out = tmp_path / "export"
        code, text, err = run(export_args(copy, out, tmp_path), capsys)
        assert (code, err) == (0, "") and "exported 3 entries" in text
        assert sorted(p.name for p in copy.iterdir()) == sorted(names)
    finally:
        copy.chmod(0o755)


async def test_a_non_empty_output_directory_is_refused(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    out = tmp_path / "export"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "000000000099.note").write_text("an older export's\n")
    code, text, err = run(export_args(stopped, out, tmp_path, url), capsys)
    assert (code, text) == (2, "")
    assert err == f"onecard: {out}: not an empty directory: export into a new one " + (
        "(an older export's checkpoints would be mixed into this one)\n"
    )
    assert os.listdir(out) == ["checkpoints"]


async def test_a_file_that_is_not_a_database_is_one_line_for_every_audit_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "onecard.db").write_bytes(b"not a database" * 100)
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{data}"\n')
    for args in (
        export_args(data, tmp_path / "export", tmp_path),
        ["audit", "rotate-key", "--config", str(config)],
    ):
        code, _, err = run(args, capsys)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("onecard: "), err


async def test_an_export_that_does_not_verify_is_written_and_said_so(
    stopped: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    url: str,
    database_urls: dict[Path, str],
) -> None:
    (stopped / "keys" / "audit-log.key").unlink()  # nothing to sign with: export to the newest
    misspell_entry_1(stopped, database_urls)
    out = tmp_path / "export"
    code, _, err = run(export_args(stopped, out, tmp_path, url), capsys)
    assert code == 1  # written as evidence, and not passed off as a good log
    assert err.count("\n") == 1 and "does NOT verify" in err and "first bad entry: 1" in err
    assert (out / "entries.jsonl").is_file()
