"""The demo (``./dev demo``, the README's first command) plays its whole tour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.demo import run_demo

pytestmark = pytest.mark.integration
STEP = re.compile(r"^\s*(\d+)\. .* (ALLOW|REFUSED) +(\w*).*\[audit #(\d+)\]$")


async def test_the_demo_tour_runs_and_every_step_is_audited(tmp_path: Path) -> None:
    lines: list[str] = []
    await run_demo(lines.append, data_dir=tmp_path / "data")

    steps = [m.groups() for m in map(STEP.match, lines) if m]
    assert [(verdict, code) for _, verdict, code, _ in steps] == [
        ("ALLOW", "by"),
        ("ALLOW", "by"),
        ("ALLOW", "by"),
        ("REFUSED", "PERMISSION_DENIED"),
        ("REFUSED", "FAILED_PRECONDITION"),
        ("REFUSED", "PERMISSION_DENIED"),
        ("REFUSED", "INVALID_ARGUMENT"),
        ("REFUSED", "PERMISSION_DENIED"),
        ("ALLOW", ""),
        ("ALLOW", ""),
        ("ALLOW", "by"),
    ]
    assert [int(n) for n, _, _, _ in steps] == list(range(1, 12))
    indexes = [int(index) for _, _, _, index in steps]
    assert indexes == sorted(set(indexes))  # each step has its own entry, in order
    assert (
        "      receipt #1 is in the signed tree: 4 hashes lead from its leaf to the root" in lines
    )
    assert any(line.startswith("      senior fare: yes, may be relied on until") for line in lines)
    assert lines[-2].startswith("audit log: 14 entries, one per exchange")
    assert (tmp_path / "data" / "onecard.db").is_file()  # --data-dir keeps the log
