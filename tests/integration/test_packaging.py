"""An installed gateway carries its own policies: the wheel ships ``policies/`` as package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway.config import REPO_POLICIES, default_policies_dir
from gateway.policy import PolicyEngine
from gateway.policytest import load_cases, run_case
from gateway.services import response_types

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_a_built_wheel_ships_the_policies_their_schema_and_their_tests(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    source = tmp_path / "src"
    for name in filter(None, tracked):
        path = REPO / name.decode()
        if path.is_file():
            (source / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name.decode())
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, *build, str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "installed")
    shipped = tmp_path / "installed" / "gateway" / "_policies"
    expected = sorted(p.relative_to(REPO_POLICIES) for p in REPO_POLICIES.rglob("*") if p.is_file())
    assert sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file()) == expected
    engine = PolicyEngine.load(shipped, responses=response_types())
    assert engine.sha256 == PolicyEngine.load(REPO_POLICIES).sha256
    results = [run_case(engine, src, case) for src, case in load_cases(shipped / "tests")]
    assert results and all(not r.problems for r in results)


def test_a_source_checkout_uses_the_policies_at_the_top_of_the_repository() -> None:
    assert default_policies_dir() == REPO / "policies"
