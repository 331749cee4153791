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
        ("ALLOW", "by"),  # a library asks another branch about a reader, over SIP2
        ("ALLOW", "by"),  # a hospital lists another hospital's lab reports (card present)
        ("ALLOW", "by"),  # and reads the newest as FHIR JSON
        ("ALLOW", "by"),  # a bus operator checks a senior fare (Cal-ITP eligibility)
        ("ALLOW", "by"),  # the citizen grants the hospital a consent
        ("ALLOW", "by"),  # the hospital reads on it, the patient not present
        ("ALLOW", "by"),  # the citizen revokes it
        ("REFUSED", "PERMISSION_DENIED"),  # the very next read on it is refused
        ("ALLOW", "by"),  # an emergency read
        ("ALLOW", "by"),  # the citizen grants the hospital a consent for lab reports only
        ("ALLOW", "by"),  # the hospital lists lab reports on it
        ("REFUSED", "PERMISSION_DENIED"),  # but not imaging
        ("ALLOW", "by"),  # imaging summaries in an emergency
        ("ALLOW", "by"),  # the citizen's access history
    ]
    assert [int(n) for n, _, _, _ in steps] == list(range(1, 25))
    indexes = [int(index) for _, _, _, index in steps]
    assert indexes == sorted(set(indexes))  # each step has its own entry, in order
    assert (
        "      receipt #1 is in the signed tree: 4 hashes lead from its leaf to the root" in lines
    )
    (standing,) = [line for line in lines if "amount withheld" in line]
    assert "李*: patron known" in standing and "fines: True" in standing
    assert any(line.strip().startswith("FHIR R4 Bundle of ") for line in lines)
    assert any(line.startswith("      senior fare: yes, may be relied on until") for line in lines)
    assert any("(consent_revoked)" in line for line in lines)
    assert any("artefact (JWS, EdDSA) verified with consent-keys.json" in line for line in lines)
    # The citizen's history: their entries (not the refusals that named no card of theirs,
    # nor the library's reader's), newest first from the history's own entry, complete.
    history = [line.split()[0] for line in lines if re.match(r"^      #\d+ ", line)]
    assert history == [f"#{n}" for n in (*range(29, 13, -1), 7, 6, 4, 3, 2, 1, 0)]
    assert any(line.startswith("      completeness check: complete: 23 entries") for line in lines)
    assert any("(consent_other_category)" in line for line in lines)
    assert any(" EMERGENCY " in line for line in lines)  # the break-glass read, flagged
    assert lines[-2].startswith("audit log: 30 entries, one per exchange")
    assert (tmp_path / "data" / "onecard.db").is_file()  # --data-dir keeps the log
