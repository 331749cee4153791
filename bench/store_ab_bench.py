"""Durable audit appends of two source trees, side by side in one run (for a refactoring).

    .venv/bin/python bench/store_ab_bench.py BASE_TREE [--rounds 7] [--appends 64000]

``BASE_TREE`` is a checkout of the other version (``git archive <commit> | tar -x -C DIR``, with
its C extension built: ``python setup.py build_ext --inplace`` there). Each round runs
``audit_bench.durable_appends`` (64 writers; one record, then varied records) once in a fresh
process per tree, alternating which tree goes first, so that a slow spell of a shared machine
hits both. Quotes the median appends/s and the median CPU time per append (every thread of the
process: event loop, writer, search index) of each, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import asyncio, json, sys, tempfile, time
from pathlib import Path
import audit_bench
kind, writers, per_writer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
records = audit_bench.varied_records() if kind == "varied" else (audit_bench.RECORD,)
with tempfile.TemporaryDirectory(prefix="onecard-ab-") as tmp:
    cpu = time.process_time()
    rate = asyncio.run(audit_bench.durable_appends(Path(tmp), writers, per_writer, records))
    cpu = time.process_time() - cpu
import gateway
print(json.dumps({"rate": rate, "cpu_us": cpu / (writers * per_writer) * 1e6,
                  "tree": str(Path(gateway.__file__).parents[1])}))
"""


def _run(tree: Path, kind: str, writers: int, per_writer: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'bench'}")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(writers), str(per_writer)],
        env=env,
        cwd=tempfile.gettempdir(),
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    assert Path(str(result["tree"])).resolve() == tree.resolve(), (result, tree)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="the other source tree")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--appends", type=int, default=64_000, help="per run")
    parser.add_argument("--writers", type=int, default=64)
    args = parser.parse_args()
    trees = {"base": args.base, "this": Path(__file__).resolve().parents[1]}
    per_writer = args.appends // args.writers
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        order = ["base", "this"] if r % 2 == 0 else ["this", "base"]
        for kind in ("one", "varied"):
            for name in order:
                runs.setdefault((kind, name), []).append(
                    _run(trees[name], kind, args.writers, per_writer)
                )
    for kind in ("one", "varied"):
        medians = {}
        for name in ("base", "this"):
            rates = [run["rate"] for run in runs[kind, name]]
            cpu = statistics.median(run["cpu_us"] for run in runs[kind, name])
            medians[name] = (statistics.median(rates), cpu)
            print(
                f"{kind:>6} record(s), {name}: median {medians[name][0]:>8,.0f} appends/s, "
                f"{cpu:5.1f} µs CPU/append (runs: {', '.join(f'{x:,.0f}' for x in rates)})"
            )
        (rate_b, cpu_b), (rate_t, cpu_t) = medians["base"], medians["this"]
        print(f"{kind:>6} record(s): this/base {rate_t / rate_b:.3f} rate, {cpu_t / cpu_b:.3f} CPU")


if __name__ == "__main__":
    main()
