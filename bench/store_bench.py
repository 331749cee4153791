"""Durable audit appends/s on each store, SQLite beside PostgreSQL, in one run.

    .venv/bin/python bench/store_bench.py [--writers 64] [--appends 32000] [--repeat 3]
        [--database-url postgresql://postgres@127.0.0.1:5432/test]

Each store is opened as the gateway opens it (``gateway.store.open_store``; PostgreSQL in a
fresh schema migrated as ``onecard db upgrade`` does, dropped afterwards) and ``--writers``
asyncio tasks append varied records (``audit_bench.varied_records``) until ``--appends`` are
durable. Baselines measured in the same run: raw rows of leaf size committed in transactions
of 64 on each database (SQLite WAL synchronous=FULL; PostgreSQL synchronous_commit on).
PostgreSQL is also measured with the appends made by 1 and by 2 processes of their own (each
opens the shared log as a gateway process does, ``--writers`` and ``--appends`` shared out; the
rate runs from a common start to the last process's last append). Medians of ``--repeat``
runs, interleaved; quote ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_bench import LEAF, ORIGIN, raw_sqlite, varied_records

from gateway.audit.record import AuditRecord
from gateway.audit.signer import Ed25519FileSigner
from gateway.store import open_store, pg_schema


async def appends(
    kind: str, directory: Path, dsn: str, writers: int, total: int, recs: Sequence[AuditRecord]
) -> float:
    """Durable appends/s through the store's audit log with ``writers`` concurrent tasks."""
    directory = Path(tempfile.mkdtemp(dir=directory))
    signer = Ed25519FileSigner.generate(directory / "log.key", ORIGIN)
    store = await open_store(
        kind, directory, lambda _: signer, checkpoint_interval_s=1.0, database_url=dsn
    )
    per_writer = total // writers

    async def writer(k: int) -> None:
        for i in range(k * per_writer, (k + 1) * per_writer):
            await store.audit_log.append(recs[i % len(recs)])

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    elapsed = time.perf_counter() - started
    await store.close()
    return writers * per_writer / elapsed


def _process_appends(
    directory: str, key: str, dsn: str, writers: int, total: int, start: Any, done: Any
) -> None:
    """One process of ``processes_appends``: open the shared log, wait for the others, append."""
    signer = Ed25519FileSigner(Path(key), ORIGIN)
    recs = varied_records()

    async def run() -> None:
        store = await open_store(
            "postgres",
            Path(directory),
            lambda _: signer,
            checkpoint_interval_s=1.0,
            database_url=dsn,
        )
        per_writer = total // writers

        async def writer(k: int) -> None:
            for i in range(k * per_writer, (k + 1) * per_writer):
                await store.audit_log.append(recs[i % len(recs)])

        start.wait()
        await asyncio.gather(*(writer(k) for k in range(writers)))
        done.put(time.perf_counter())
        await store.close()

    asyncio.run(run())


def processes_appends(directory: Path, dsn: str, processes: int, writers: int, total: int) -> float:
    """Durable appends/s of ``processes`` gateway processes appending to one PostgreSQL log
    (``writers`` tasks and ``total`` appends in all, shared out), from a common start."""
    directory = Path(tempfile.mkdtemp(dir=directory))
    key = directory / "log.key"
    Ed25519FileSigner.generate(key, ORIGIN)
    spawn = multiprocessing.get_context("spawn")
    start, done = spawn.Barrier(processes + 1), spawn.Queue()
    share = (str(directory), str(key), dsn, writers // processes, total // processes)
    workers = [
        spawn.Process(target=_process_appends, args=(*share, start, done)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    finished = max(done.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    return (total // processes) // (writers // processes) * writers / (finished - started)


def raw_postgres(dsn: str, rows: int, batch: int) -> float:
    """Rows/s inserting leaf-sized rows into a table like audit_entries, ``batch`` per commit."""
    leaf = b"x" * len(LEAF)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw (idx bigint PRIMARY KEY, leaf bytea, org text, subject text)"
        )
        started = time.perf_counter()
        for start in range(0, rows, batch):
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO raw VALUES (%s, %s, %s, %s)",
                    [(i, leaf, "hosp-bj-001", "12" * 32) for i in range(start, start + batch)],
                )
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE raw")
    return rows / elapsed


class Schema:
    """A fresh, migrated schema on the server for one run; dropped on exit."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"onecard_bench_{secrets.token_hex(4)}"
        self.dsn = make_conninfo(server, options=f"-csearch_path={self.name}")

    def __enter__(self) -> str:
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{self.name}"')
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            pg_schema.upgrade(conn)
        return self.dsn

    def __exit__(self, *_: object) -> None:
        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{self.name}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--appends", type=int, default=32_000, help="durable appends per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/test", help="server"
    )
    args = parser.parse_args()
    recs = varied_records()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="onecard-store-bench-") as tmp:
        for _ in range(args.repeat):
            results.setdefault("sqlite appends", []).append(
                asyncio.run(appends("sqlite", Path(tmp), "", args.writers, args.appends, recs))
            )
            for processes in (1, 2):
                with Schema(args.database_url) as dsn:
                    results.setdefault(f"postgres, {processes} process(es)", []).append(
                        processes_appends(Path(tmp), dsn, processes, args.writers, args.appends)
                    )
            with Schema(args.database_url) as dsn:
                results.setdefault("postgres raw, 64 per commit", []).append(
                    raw_postgres(dsn, 64_000, 64)
                )
            results.setdefault("sqlite raw, 64 per commit", []).append(
                raw_sqlite(Path(tmp), 64_000, 64)
            )
    print(f"{args.writers} writers, {args.appends} varied records per run, median of {args.repeat}")
    medians = {name: statistics.median(runs) for name, runs in results.items()}
    for name, runs in results.items():
        shown = ", ".join(f"{r:,.0f}" for r in runs)
        print(f"{name:32} {medians[name]:>10,.0f}/s   runs: {shown}")
    lite = medians["sqlite appends"]
    pg = one = medians["postgres, 1 process(es)"]
    two = medians["postgres, 2 process(es)"]
    print(f"postgres, 2 processes / 1 process (each in its own process): {two / one:.2f}x")
    print(
        f"postgres/sqlite durable appends: {pg / lite:.2f}x; each store against its own raw "
        f"rows: sqlite {lite / medians['sqlite raw, 64 per commit']:.2f}x, postgres "
        f"{pg / medians['postgres raw, 64 per commit']:.2f}x"
    )


if __name__ == "__main__":
    main()
