"""``onecard audit export``: the log as files a regulator can verify offline.

Reads the gateway's database (read-only; the gateway may keep running) and writes the export
directory of docs/audit-format.md: ``entries.jsonl`` (line i is exactly leaf i), every signed
checkpoint under ``checkpoints/``, and ``log.json``. Optionally the entries as FHIR R4
AuditEvent resources, one per line.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.audit.fhir import export_fhir
from gateway.errors import SetupError

_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    entries: int
    checkpoints: int
    directory: Path


def export_log(
    database: Path, out: Path, *, origin: str, fhir_file: Path | None = None
) -> ExportSummary:
    """Write the export of ``database`` into the directory ``out`` (created if missing)."""
    if not database.is_file():
        raise SetupError(f"{database}: no gateway database here (see --data-dir)")
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "audit_entries" not in tables:
            raise SetupError(
                f"{database}: holds no audit log yet (made by an older gateway: start the "
                "gateway once to upgrade it)"
            )
        with conn:  # one read transaction: entries and checkpoints from the same snapshot
            conn.execute("BEGIN")
            (checkpoints_dir := out / "checkpoints").mkdir(parents=True, exist_ok=True)
            count = 0
            with (out / "entries.jsonl").open("wb") as f:
                for _, leaf in _leaves(conn):
                    f.write(leaf + b"\n")
                    count += 1
            rows = conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size").fetchall()
            for size, note in rows:
                (checkpoints_dir / f"{size:012d}.note").write_bytes(note)
            if fhir_file is not None:
                with fhir_file.open("w", encoding="utf-8") as f:
                    export_fhir(_leaves(conn), f, log_origin=origin)
    finally:
        conn.close()
    (out / "log.json").write_text(
        json.dumps(
            {"origin": origin, "size": count, "exported_at": dt.datetime.now(dt.UTC).isoformat()},
            indent=2,
        )
        + "\n"
    )
    return ExportSummary(count, len(rows), out)


def _leaves(conn: sqlite3.Connection) -> Iterator[tuple[int, bytes]]:
    after = -1
    while True:
        rows = conn.execute(
            "SELECT idx, leaf FROM audit_entries WHERE idx > ? ORDER BY idx LIMIT ?",
            (after, _PAGE),
        ).fetchall()
        if not rows:
            return
        for idx, leaf in rows:
            yield int(idx), bytes(leaf)
        after = rows[-1][0]
