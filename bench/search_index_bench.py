"""Search index benchmark: the cost of indexing one entry as the index grows.

    .venv/bin/python bench/search_index_bench.py [--entries 6000000] [--citizens 200000]

Writes the audit search index's own table (``sqlite_search._SCHEMA``, ``_INSERT``) in chunks of
``CHUNK`` rows of random citizens' pseudonym keys, as the index thread does, and reports the
microseconds per row over each stretch of growth: once with the subject B-tree split by spans of
the log (the layout in use), once with one B-tree of subjects (the layout before), side by side.
SQLite alone, in one process, on a database under the system's temporary directory.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from gateway.store import sqlite_search
from gateway.store.sqlite import connect

MARKS = (100_000, 1_000_000, 3_000_000, 6_000_000)


def grow(path: Path, entries: int, citizens: int, *, spans: bool) -> list[tuple[int, float]]:
    """µs per row over each stretch up to the marks, for one layout."""
    conn = connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")
    schema = sqlite_search._SCHEMA
    if not spans:
        schema = schema.replace("(span, subject, idx)", "(subject, idx)")
    conn.executescript(schema)
    rng = random.Random(7)
    keys = [rng.getrandbits(64) - (1 << 63) for _ in range(citizens)]
    results, done = [], 0
    for mark in (m for m in MARKS if m <= entries):
        started, first = time.perf_counter(), done
        while done < mark:
            rows = [
                (i, f"2026-11-24T17:33:40.{i % 10**6:06d}Z", i % 50, i % 4, 1, 2, 0,
                 rng.choice(keys), i >> sqlite_search.SPAN_BITS)
                for i in range(done, done + sqlite_search.CHUNK)
            ]  # fmt: skip
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sqlite_search._INSERT, (json.dumps(rows),))
            conn.execute("COMMIT")
            done += len(rows)
        results.append((mark, (time.perf_counter() - started) / (done - first) * 1e6))
    conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=MARKS[-1])
    parser.add_argument("--citizens", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onecard-bench-") as tmp:
        split = grow(Path(tmp) / "spans.db", args.entries, args.citizens, spans=True)
        whole = grow(Path(tmp) / "whole.db", args.entries, args.citizens, spans=False)
    print("index size   split by spans   one subject B-tree   (µs per row over the stretch)")
    for (mark, a), (_, b) in zip(split, whole, strict=True):
        print(f"{mark:>10,}   {a:>14.2f}   {b:>18.2f}")


if __name__ == "__main__":
    main()
