"""What the offline verifier's record schema check costs: full verification with and without it.

    .venv/bin/python bench/verify_schema_bench.py [--entries 1000000] [--repeat 5]

Writes an export of ``--entries`` varied records (checkpoints every 65,536 entries and at the
end) and verifies it with ``verify_export`` in one process, alternately with the schema check
(``_verify_fast.check_records``, as ``onecard audit verify`` runs) and with it replaced by a
no-op (the baseline, measured in the same run), in the C loops and then in the Python ones.
Prints the median entries/s of ``--repeat`` runs of each, and the schema check's cost per entry.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.audit import _verify_fast as fast
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.note import VerifierSet
from gateway.audit.record import ZERO_HASH, AuditRecord, leaf_bytes
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.audit.verify import verify_export

sys.path.insert(0, str(Path(__file__).parent))
from audit_bench import ORIGIN, RECORD  # the benchmark's record, shared

CHECKPOINT_EVERY = 1 << 16


def write_export(directory: Path, entries: int) -> VerifierSet:
    signer = Ed25519FileSigner.generate(directory / "log.key", ORIGIN)
    out = directory / "export"
    (out / "checkpoints").mkdir(parents=True)
    tree, prev = fast.Tree(), ZERO_HASH
    with (out / "entries.jsonl").open("wb") as f:
        for i in range(entries):
            record: AuditRecord = dataclasses.replace(
                RECORD, request_id=f"{i:032x}", latency_us=i % 9973
            )
            leaf = leaf_bytes(i, prev, record.body())
            prev = hash_leaf(leaf)
            f.write(leaf + b"\n")
            tree.extend([prev])
            if (i + 1) % CHECKPOINT_EVERY == 0 or i + 1 == entries:
                note = sign_checkpoint(Checkpoint(ORIGIN, i + 1, tree.root()), signer)
                (out / "checkpoints" / f"{i + 1:012d}.note").write_bytes(note)
    return VerifierSet.parse([signer.verifier_key()])


@contextlib.contextmanager
def loops(name: str, schema: bool) -> Iterator[None]:
    saved = {n: getattr(fast, n) for n in fast.LOOPS}
    try:
        if name == "Python":
            for n in fast.LOOPS:
                setattr(fast, n, getattr(fast, f"py_{n}"))
        if not schema:
            fast.check_records = lambda block, programs: -1  # type: ignore[assignment]
        yield
    finally:
        for n, function in saved.items():
            setattr(fast, n, function)


def rate(export: Path, verifiers: VerifierSet, entries: int) -> float:
    started = time.perf_counter()
    report = verify_export(export, verifiers, workers=1)
    assert report.ok, report.problem
    return entries / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="onecard-schema-bench-"))
    try:
        verifiers = write_export(tmp, args.entries)
        for name in ("C", "Python") if fast.NATIVE else ("Python",):
            rates: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeat):
                for schema in (False, True):  # alternated, so that load hits both alike
                    with loops(name, schema):
                        rates[schema].append(rate(tmp / "export", verifiers, args.entries))
            without, with_ = (statistics.median(rates[s]) for s in (False, True))
            cost = (1 / with_ - 1 / without) * 1e6
            print(
                f"{name} loops, 1 process, {args.entries:,} entries: {with_:,.0f} entries/s with "
                f"the schema check, {without:,.0f} without ({with_ / without:.2f}x; "
                f"{cost:.2f} µs per entry)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
