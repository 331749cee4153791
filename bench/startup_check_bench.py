"""What the audit log's self-check costs at start-up, at 10^6 entries.

    .venv/bin/python bench/startup_check_bench.py [--entries 1000000] [--unsigned 50000]

Builds a log of ``--entries`` entries whose newest signed checkpoint lies ``--unsigned`` entries
before its end (as after a crash: the check then also merges the nodes covering that gap), then
times, each as the median of ``--repeat`` runs on a fresh connection:

- the self-check as start-up runs it (``Sequencer._load``: newest checkpoint opened, the
  border at its size, the nodes up to the log's size, the newest entry and its inclusion path);
- the baseline in the same run: rebuilding the compact range from the border alone, which is
  all that start-up read before the check (one query, no signature);
- opening the whole ``SqliteAuditLog`` (identity, check, search index file).

The page cache is warm (the database was just written); quote the check against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from audit_bench import ORIGIN, RECORD  # bench/ is on sys.path when run as a script

from gateway.audit.compact import CompactRange, border_ids
from gateway.audit.signer import Ed25519FileSigner
from gateway.store.sqlite import SqliteStore, connect, log_size
from gateway.store.sqlite_audit import SqliteAuditLog, _read_nodes, _Rows, _snapshot

_BATCH = 50_000


async def build(directory: Path, entries: int, unsigned: int) -> tuple[Path, Path]:
    """A log of ``entries``; its newest checkpoint at ``entries - unsigned`` (setup)."""
    db, key = directory / "big.db", directory / "big.key"
    store = SqliteStore(db)
    log = SqliteAuditLog(store, Ed25519FileSigner.generate(key, ORIGIN), checkpoint_interval_s=0)
    await store.close()
    payload = (RECORD, RECORD.body(), None)  # no token redeemed
    signed = entries - unsigned
    with closing(connect(db)) as conn:
        at = 0
        while at < entries:
            step = min(_BATCH, (signed if at < signed else entries) - at)
            conn.execute("BEGIN")
            log.run_batch(conn, [payload] * step)
            if at + step <= signed:
                log.finish_batch(conn)  # signs a checkpoint of this size
            conn.execute("COMMIT")
            at += step
    return db, key


def median_s(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--unsigned", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="onecard-startup-bench-"))
    try:
        started = time.perf_counter()
        db, key = asyncio.run(build(tmp, args.entries, args.unsigned))
        print(
            f"built a log of {args.entries:,} entries (newest checkpoint at "
            f"{args.entries - args.unsigned:,}) in {time.perf_counter() - started:.1f} s"
        )
        store = SqliteStore(db)
        log = SqliteAuditLog(store, Ed25519FileSigner(key, ORIGIN), checkpoint_interval_s=0)

        def check() -> None:
            with closing(connect(db, readonly=True)) as conn, _snapshot(conn):
                rng, _, _ = log._sequencer._load(_Rows(conn))
                assert rng.size == args.entries

        def border_only() -> None:
            with closing(connect(db, readonly=True)) as conn:
                size = log_size(conn)
                CompactRange.from_border(size, _read_nodes(conn, border_ids(size)))

        async def open_log() -> None:
            opened = SqliteStore(db)
            SqliteAuditLog(opened, Ed25519FileSigner(key, ORIGIN), checkpoint_interval_s=0)
            await opened.close()

        base = median_s(border_only, args.repeat)
        checked = median_s(check, args.repeat)
        whole = median_s(lambda: asyncio.run(open_log()), max(3, args.repeat // 4))
        asyncio.run(store.close())
        print(f"baseline: compact range from the border alone: median {base * 1e3:8.2f} ms")
        print(f"self-check (start-up and after a rollback):    median {checked * 1e3:8.2f} ms")
        print(f"opening the SqliteAuditLog (identity + check): median {whole * 1e3:8.2f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
