"""``onecard audit export``: the log as files a regulator can verify offline.

Writes the export directory of docs/audit-format.md: ``entries.jsonl`` (line i is exactly leaf
i), the signed checkpoints under ``checkpoints/``, and ``log.json``; optionally the entries as
FHIR R4 AuditEvent resources, one per line. Every exported entry is covered by a signed
checkpoint, so that the export verifies as a whole:

- a directory a live gateway serves (``store.lock.is_served``): the entries up to its newest
  checkpoint (the gateway signs one within ``audit_checkpoint_interval_s`` of every append);
- a stopped directory holding the signing key: all entries, with a checkpoint over them signed
  here, but only once the export, that checkpoint included, verifies against the published
  keys (``audit-log.pub``): the stored leaves' chain, schema and the root of every stored
  checkpoint; state that does not check is never signed;
- a stopped directory without the key: the entries up to the newest checkpoint, said so.

The log is read through the store (``gateway.store.read_log``: for SQLite, read-only without
creating files, ``mode=ro`` beside a live gateway, ``immutable=1`` otherwise, so a read-only
copy works and no ``-wal`` or ``-shm`` file appears; ``store.sqlite_snapshot``; for PostgreSQL,
one repeatable-read transaction: ``store.pg_audit.read_only``). The export is
written beside ``out`` and renamed into place: a failed export leaves nothing behind. ``out``
must be missing or empty.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gateway.audit import _verify_fast as fast
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.fhir import export_fhir
from gateway.audit.note import NoteError, VerifierSet
from gateway.audit.signer import Ed25519FileSigner
from gateway.audit.verify import load_key_files, open_log_checkpoint, verify_export
from gateway.errors import SetupError
from gateway.store import read_log
from gateway.store.lock import is_served

_PAGE = 10_000
KEY_FILE = Path("keys") / "audit-log.key"
PUBLISHED_KEYS = "audit-log.pub"


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote, and how its newest checkpoint came about."""

    entries: int
    checkpoints: int
    directory: Path
    signed_here: bool
    left_out: int
    """Durable entries not covered by a checkpoint, so not exported."""
    problem: str = ""
    """Why the export does not verify against the published keys ("" if it does): it is
    written all the same, as evidence for ``onecard audit verify`` to name the damage."""


def export_log(
    database: Path,
    out: Path,
    *,
    origin: str,
    fhir_file: Path | None = None,
    database_url: str = "",
) -> ExportSummary:
    """Export the log of ``database`` (``DATA_DIR/onecard.db``) into ``out``; see the module
    docstring. ``origin`` names the log when it has no checkpoint yet. With ``database_url``
    the log is the PostgreSQL one it names, and ``database`` is only a path in the data
    directory (its keys, published keys and serving lock: ``DATA_DIR/onecard.db`` too)."""
    _check_out(out)
    if not database_url and not database.is_file():
        raise SetupError(f"{database}: no gateway database here (see --data-dir)")
    data_dir = database.parent
    served = is_served(data_dir)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
    except OSError as e:
        raise SetupError(f"{out}: cannot write an export there ({e.strerror})") from None
    try:
        summary = _write(database, partial, served=served, origin=origin, database_url=database_url)
        if fhir_file is not None:
            _write_fhir(partial, out, fhir_file, origin)
        _finish(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dataclasses.replace(summary, directory=out)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SetupError(
            f"{out}: not an empty directory: export into a new one (an older export's "
            "checkpoints would be mixed into this one)"
        )


def _write(
    database: Path, partial: Path, *, served: bool, origin: str, database_url: str
) -> ExportSummary:
    # ``database`` is a SQLite file (``gateway.store.database_path``), or with a
    # ``database_url`` the PostgreSQL log it names: one snapshot either way
    kind = "postgres" if database_url else "sqlite"
    with read_log(kind, database.parent, served=served, database_url=database_url) as log:
        rows = log.checkpoints()
        total = log.size()
        newest = rows[-1][0] if rows else 0
        signer = None if served else _signer(database.parent, rows, origin)
        size = total if signer is not None else newest
        (partial / "checkpoints").mkdir()
        for note_size, note in rows:
            (partial / "checkpoints" / f"{note_size:012d}.note").write_bytes(note)
        tree, count = fast.Tree(), 0
        with (partial / "entries.jsonl").open("wb") as f:
            for start in range(0, size, _PAGE):
                page = log.leaves(start, min(start + _PAGE, size))
                block = b"".join(leaf + b"\n" for leaf in page)
                f.write(block)
                tree.extend(fast.hash_leaves(block))
                count += len(page)
    signed_here = signer is not None and count > newest
    if signer is not None and signed_here:
        checkpoint = Checkpoint(signer.name, count, tree.root())
        note_path = partial / "checkpoints" / f"{count:012d}.note"
        note_path.write_bytes(sign_checkpoint(checkpoint, signer))
        _check_before_publishing(partial, database.parent, note_path)
    problem = ""
    if not signed_here and count and (database.parent / PUBLISHED_KEYS).exists():
        problem = _problem(partial, database.parent)
    (partial / "log.json").write_text(
        json.dumps(
            {
                "origin": signer.name if signer is not None else origin,
                "size": count,
                "exported_at": dt.datetime.now(dt.UTC).isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
    return ExportSummary(
        count, len(rows) + signed_here, partial, signed_here, total - count, problem
    )


def _signer(data_dir: Path, rows: list[tuple[int, bytes]], origin: str) -> Ed25519FileSigner | None:
    """The log's signing key, named as the log's origin (its checkpoints'), if it is here."""
    key = data_dir / KEY_FILE
    if not key.exists():
        return None
    if rows:
        origin = rows[-1][1].split(b"\n", 1)[0].decode("utf-8", "replace")
    return Ed25519FileSigner(key, origin)


def _problem(partial: Path, data_dir: Path) -> str:
    """Why the export does not verify against the published keys, or ""."""
    report = verify_export(partial, _published_keys(data_dir))
    return "" if report.problem is None else str(report.problem)


def _check_before_publishing(partial: Path, data_dir: Path, note_path: Path) -> None:
    """Verify the export, the checkpoint just signed included, against the published keys."""
    keys = _published_keys(data_dir)
    report = verify_export(partial, keys)
    if report.problem is not None:
        note_path.unlink()
        raise SetupError(
            f"{data_dir}: refusing to sign a checkpoint over a log that does not verify "
            f"({report.problem}); run onecard audit verify on an export of it"
        )
    try:  # the key signed it: is that key one the log publishes?
        open_log_checkpoint(note_path.read_bytes(), keys, None)
    except (NoteError, ValueError):
        note_path.unlink()
        raise SetupError(
            f"{data_dir / KEY_FILE}: not a key published in {data_dir / PUBLISHED_KEYS}"
        ) from None


def _published_keys(data_dir: Path) -> VerifierSet:
    return load_key_files([data_dir / PUBLISHED_KEYS])


def _write_fhir(partial: Path, out: Path, fhir_file: Path, origin: str) -> None:
    """The exported entries as FHIR; a file inside ``out`` is written into the partial copy."""
    inside = fhir_file.resolve().is_relative_to(out.resolve())
    target = (
        partial / fhir_file.resolve().relative_to(out.resolve())
        if inside
        else fhir_file.with_name(fhir_file.name + ".partial")
    )
    if inside:
        target.parent.mkdir(parents=True, exist_ok=True)
    with (partial / "entries.jsonl").open("rb") as leaves, target.open("w", encoding="utf-8") as f:
        indexed = ((i, line.rstrip(b"\n")) for i, line in enumerate(leaves))
        export_fhir(indexed, f, log_origin=origin)
    if not inside:
        target.replace(fhir_file)


def _finish(partial: Path, out: Path) -> None:
    _check_out(out)  # still empty: nothing appeared there meanwhile
    if out.exists():
        out.rmdir()
    partial.rename(out)
