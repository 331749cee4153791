"""Review of issue 17: `onecard db upgrade` run several times at once on one empty schema.

Each run must end with the schema at the latest version and say so; one that found another
run mid-way (it read version 1, the other then applied 0002) said "schema version 1 is
current; nothing to do", which is false: the schema is at the latest version, and an operator
reading it would think the gateway will refuse to start (likewise "schema version 0 -> 1" from
a run whose 0002 another applied).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.store import pg_schema
from tests.postgres import fresh_schema

pytestmark = pytest.mark.integration
RUNS = 6
ROUNDS = 3


def test_concurrent_db_upgrades_each_report_the_schema_version_they_leave() -> None:
    said: list[str] = []
    for _ in range(ROUNDS):
        with fresh_schema(upgraded=False) as dsn:
            env = dict(os.environ, ONECARD_STORE="postgres", ONECARD_DATABASE_URL=dsn)
            runs = [
                subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "db", "upgrade"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(RUNS)
            ]
            for run in runs:
                out, _ = run.communicate(timeout=60)
                assert run.returncode == 0, out
                said.append(out.strip().splitlines()[-1])
    latest = f"schema version {pg_schema.LATEST} is current"
    arrived = f"-> {pg_schema.LATEST}"
    wrong = [line for line in said if latest not in line and arrived not in line]
    assert wrong == [], f"runs that misreport the version they leave: {wrong}"
