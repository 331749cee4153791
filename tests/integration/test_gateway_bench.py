"""The gateway benchmark's quick mode runs end to end, so its harness cannot rot unnoticed.

Speed itself is never asserted here (docs/benchmarks.md holds the measured numbers); this only
proves that every process starts, every scenario's calls succeed (or are refused as the
scenario expects) and every figure is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_quick_mode_measures_every_scenario_against_the_bare_server() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gateway_bench.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout[: out.stdout.rindex("}") + 1])
    assert set(result["rows"]) == {"bare", "visit", "library", "consent", "refusal"}
    for name, runs in result["rows"].items():
        (run,) = runs
        for key in ("calls_per_s", "cpu_ms_per_call", "p50_ms", "p99_ms", "single_p50_ms"):
            assert run[key] > 0, (name, key, run)
    assert result["rss_start_mb"] > 0
    assert result["response_bytes"] > 0
    assert "throughput / bare" in out.stdout
    soak = result["soak"]  # quick mode soaks for 1 s, sampling RSS every 0.25 s
    assert soak["calls"] > 0
    assert soak["failed_ops"] == 0
    assert len(soak["rss_mb"]) >= 3
    assert min(soak["rss_mb"]) > 0
    assert "soak: visits at" in out.stdout
