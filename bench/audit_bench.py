"""Audit log benchmark: durable appends, proofs at 10^6 entries, full verification speed.

    .venv/bin/python bench/audit_bench.py [--entries 1000000] [--writers 64]

Everything runs on this machine with its baselines measured in the same run. For the appends
(of one record over and over, and of varied records, ``varied_records``): raw SQLite inserts of
rows of the same size (WAL, synchronous=FULL), committing each row and in transactions of 64.
For the verification, which runs with the C loops (``gateway/audit/_native.c``) and the Python
ones: hashing the same leaves with SHA-256 alone (hashlib, one call per leaf).
Appends and verifications are the median of ``--repeat`` runs; quote ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway.audit import _verify_fast as fast
from gateway.audit.export import export_log
from gateway.audit.log import SearchQuery
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.record import ZERO_HASH, AuditRecord, leaf_bytes
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.audit.verify import verify_export
from gateway.store.sqlite import SqliteStore, connect
from gateway.store.sqlite_audit import SqliteAuditLog

ORIGIN = "bench.onecard.example/audit"
RECORD = AuditRecord(
    time="2026-11-24T17:33:40.659634Z",
    request_id="5accea05dd3440bf99a8cfc9ee01f479",
    org="hosp-bj-001",
    org_type="hospital",
    cert_sha256="ab" * 32,
    rpc="onecard.v1.InsuranceService/GetInsuranceStatus",
    outcome="OK",
    reason="",
    released_sha256="cd" * 32,
    latency_us=523,
    purpose="COVERAGE",
    basis="card_present",
    basis_ref="token:" + "ef" * 16,
    subject="12" * 32,
    decision="allow",
    policies=("hospital-reads-insurance-status",),
    policy_set="34" * 32,
    backend="social_insurance",
)
LEAF = leaf_bytes(0, ZERO_HASH, RECORD.body())  # an entry's leaf: what is stored and hashed
RPCS = (
    "onecard.v1.InsuranceService/GetInsuranceStatus",
    "onecard.v1.HealthRecordService/GetSharedRecord",
    "onecard.v1.LibraryService/ValidateCard",
    "onecard.v1.TransitService/CheckConcession",
)


def varied_records(count: int = 4096, citizens: int = 10_000) -> list[AuditRecord]:
    """Records as a busy gateway writes them: 50 organisations, four RPCs, a tenth of them
    denied, and the pseudonyms of ``citizens`` card holders (so the search index's subject
    B-tree takes inserts all over, not at one spot)."""
    rng = random.Random(2026)
    people = [rng.randbytes(32).hex() for _ in range(citizens)]
    return [
        dataclasses.replace(
            RECORD,
            request_id=rng.randbytes(16).hex(),
            org=f"hosp-{rng.randrange(50):03d}",
            rpc=rng.choice(RPCS),
            decision="deny" if rng.random() < 0.1 else "allow",
            subject=rng.choice(people),
        )
        for _ in range(count)
    ]


def raw_sqlite(directory: Path, rows: int, batch: int) -> float:
    """Rows/s inserting leaf-sized rows into a table like audit_entries."""
    conn = connect(Path(tempfile.mkdtemp(dir=directory)) / "raw.db")
    conn.execute("CREATE TABLE t (idx INTEGER PRIMARY KEY, leaf BLOB, org TEXT, subject TEXT)")
    leaf = b"x" * len(LEAF)
    started = time.perf_counter()
    for start in range(0, rows, batch):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)",
            [(i, leaf, "hosp-bj-001", "12" * 32) for i in range(start, start + batch)],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return rows / elapsed


def leaf_hashes(count: int = 300_000) -> float:
    """Leaves/s that one process hashes (SHA-256 of 0x00 || leaf): verification's floor."""
    started = time.perf_counter()
    for _ in range(count):
        hash_leaf(LEAF)
    return count / (time.perf_counter() - started)


async def durable_appends(
    directory: Path, writers: int, per_writer: int, records: Sequence[AuditRecord] = (RECORD,)
) -> float:
    """Appends/s through SqliteAuditLog with ``writers`` concurrent asyncio tasks, each
    appending ``records`` in turn from its own starting point."""
    directory = Path(tempfile.mkdtemp(dir=directory))
    store = SqliteStore(directory / "appends.db")
    signer = Ed25519FileSigner.generate(directory / "appends.key", ORIGIN)
    log = SqliteAuditLog(store, signer, checkpoint_interval_s=1.0)

    async def writer(k: int) -> None:
        for i in range(k * per_writer, (k + 1) * per_writer):
            await log.append(records[i % len(records)])

    started = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    elapsed = time.perf_counter() - started
    await store.close()
    return writers * per_writer / elapsed


def verification(export: Path, verifiers: VerifierSet, workers: int) -> float:
    """Entries/s of one full verification of ``export``."""
    report = verify_export(export, verifiers, workers=workers)
    assert report.ok, report.problem
    return report.entries / report.elapsed_s


@contextlib.contextmanager
def python_loops() -> Iterator[None]:
    """Verify with the Python loops of ``_verify_fast`` (workers read the environment)."""
    saved = {name: getattr(fast, name) for name in fast.LOOPS}
    os.environ["ONECARD_AUDIT_NATIVE"] = "0"
    for name in fast.LOOPS:
        setattr(fast, name, getattr(fast, f"py_{name}"))
    try:
        yield
    finally:
        del os.environ["ONECARD_AUDIT_NATIVE"]
        for name, function in saved.items():
            setattr(fast, name, function)


async def build_log(directory: Path, entries: int) -> Path:
    """A log of ``entries`` entries, written in large transactions (setup, not measured).

    The same ``run_batch``/``finish_batch`` the writer thread runs, on a connection of our own
    with the store's writer stopped; returns the signing key's path.
    """
    key = directory / "big.key"
    store = SqliteStore(directory / "big.db")
    log = SqliteAuditLog(store, Ed25519FileSigner.generate(key, ORIGIN), checkpoint_interval_s=0)
    await store.close()
    conn = connect(directory / "big.db")
    payload = (RECORD, RECORD.body())
    for start in range(0, entries, 50_000):
        conn.execute("BEGIN")
        log.run_batch(conn, [payload] * min(50_000, entries - start))
        log.finish_batch(conn)  # signs a checkpoint
        conn.execute("COMMIT")
    conn.close()
    # Build the search index now, so that it is not built from the leaves during the proofs.
    store = SqliteStore(directory / "big.db")
    await SqliteAuditLog(store, Ed25519FileSigner(key, ORIGIN), checkpoint_interval_s=0).search(
        SearchQuery(limit=1)
    )
    await store.close()
    return key


async def proofs(path: Path, key: Path, size: int, samples: int = 2000) -> float:
    """Median seconds for one inclusion proof at tree size ``size`` (read from stored nodes)."""
    store = SqliteStore(path)
    log = SqliteAuditLog(store, Ed25519FileSigner(key, ORIGIN), checkpoint_interval_s=0)
    times = []
    for i in range(samples):
        index = (i * 7919) % size
        started = time.perf_counter()
        await log.inclusion_proof(index, size)
        times.append(time.perf_counter() - started)
    await store.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--appends", type=int, default=128_000, help="total durable appends")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="onecard-bench-"))
    try:
        row1 = statistics.median(raw_sqlite(tmp, 5_000, 1) for _ in range(args.repeat))
        row64 = statistics.median(raw_sqlite(tmp, 128_000, 64) for _ in range(args.repeat))
        per_writer = args.appends // args.writers
        varied = varied_records()
        runs: dict[str, list[float]] = {"one record": [], "varied records": []}
        for _ in range(args.repeat):  # interleaved, so that a slow spell hits both
            runs["one record"].append(asyncio.run(durable_appends(tmp, args.writers, per_writer)))
            runs["varied records"].append(
                asyncio.run(durable_appends(tmp, args.writers, per_writer, varied))
            )
        print(f"raw SQLite, commit per row:       {row1:>10,.0f} rows/s")
        print(f"raw SQLite, transactions of 64:   {row64:>10,.0f} rows/s")
        for label, rates in runs.items():
            appends = statistics.median(rates)
            print(
                f"durable audit appends, {args.writers} writers, {label}: "
                f"{appends:>10,.0f} appends/s ({appends / row1:.1f}x commit-per-row, "
                f"{appends / row64:.2f}x batches of 64; runs: "
                f"{', '.join(f'{r:,.0f}' for r in rates)})"
            )
        started = time.perf_counter()
        key = asyncio.run(build_log(tmp, args.entries))
        print(f"built a log of {args.entries:,} entries in {time.perf_counter() - started:.1f} s")
        median = asyncio.run(proofs(tmp / "big.db", key, args.entries))
        print(f"inclusion proof at {args.entries:,} entries: median {median * 1e6:,.0f} µs")
        export = tmp / "export"
        export_log(tmp / "big.db", export, origin=ORIGIN)
        verifiers = VerifierSet([Verifier.parse(Ed25519FileSigner(key, ORIGIN).verifier_key())])
        floor = leaf_hashes()
        print(f"SHA-256 of a {len(LEAF)}-byte leaf alone, 1 process: {floor:>10,.0f} leaves/s")
        for loops in ("C", "Python"):
            if loops == "C" and not fast.NATIVE:
                print("full verification with the C loops: not built here (see setup.py)")
                continue
            with python_loops() if loops == "Python" else contextlib.nullcontext():
                for workers in (1, 2):
                    rate = statistics.median(
                        verification(export, verifiers, workers) for _ in range(args.repeat)
                    )
                    print(
                        f"full verification, {loops} loops, {workers} process(es): "
                        f"{rate:>12,.0f} entries/s ({rate / floor:.2f}x hashing the leaves alone)"
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
