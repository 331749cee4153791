"""``onecard serve --workers 2`` on PostgreSQL as an operator runs it: both workers answer on one
port, a worker killed with SIGKILL is restarted while calls keep succeeding, one organisation's
rate limit holds across both, SIGTERM stops everything with exit status 0, and the one log that
both wrote verifies. PostgreSQL: ``tests/postgres.py`` (skipped with its reason elsewhere, a
failure under CI=true). The refusals that need no worker are in tests/gateway/test_workers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.client import org_credentials
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from gateway.shared_buckets import LEASE_MAX
from tests.integration.calls import issue_token
from tests.integration.conftest import CITIZEN_APP
from tests.postgres import fresh_schema

pytestmark = pytest.mark.integration

_LISTENING = re.compile(
    r"listening on 127\.0\.0\.1:(\d+) \(mutual TLS\); 2 workers, pids (\d+), (\d+); "
    r"metrics on 127\.0\.0\.1:(\d+), (\d+);"
)


@dataclass
class Served:
    """A running ``onecard serve --workers 2`` and what its line and log say."""

    proc: asyncio.subprocess.Process
    port: int
    pids: list[int]
    metrics: list[int]
    log: Path
    env: dict[str, str]

    def events(self, name: str) -> list[dict[str, object]]:
        """The JSON log lines of event ``name`` so far (supervisor and workers share stderr)."""
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found


@contextlib.asynccontextmanager
async def _serve_workers(tmp_path: Path, pki: PkiLayout, **settings: str) -> AsyncIterator[Served]:
    with fresh_schema() as dsn:
        env = dict(
            os.environ,
            ONECARD_STORE="postgres",
            ONECARD_DATABASE_URL=dsn,
            ONECARD_DATA_DIR=str(tmp_path / "data"),
            ONECARD_PKI_DIR=str(pki.directory),
            ONECARD_LISTEN_PORT="0",
            ONECARD_METRICS_PORT="0",
            ONECARD_LOG_FORMAT="json",
            ONECARD_AUDIT_CHECKPOINT_INTERVAL_S="0.2",
        )
        env.update({f"ONECARD_{name.upper()}": value for name, value in settings.items()})
        log = tmp_path / "serve.err"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "serve", "--workers", "2",
                env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
            try:
                match = await _wait_for_line(log, proc)
                yield Served(
                    proc,
                    int(match[1]),
                    [int(match[2]), int(match[3])],
                    [int(match[4]), int(match[5])],
                    log,
                    env,
                )
            finally:
                if proc.returncode is None:
                    proc.kill()  # its workers see their pipe close and stop
                    await proc.wait()


async def _wait_for_line(log: Path, proc: asyncio.subprocess.Process) -> re.Match[str]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        match = _LISTENING.search(log.read_text())
        if match:
            return match
        if proc.returncode is not None:
            pytest.fail(f"onecard serve --workers 2 exited {proc.returncode}: {log.read_text()}")
        await asyncio.sleep(0.1)
    pytest.fail(f"onecard serve --workers 2 never said it listens: {log.read_text()}")


def _channel(port: int, pki: PkiLayout) -> grpc.aio.Channel:
    """A channel of its own (its own TCP connection), so that connections spread over workers."""
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        org_credentials(pki, CITIZEN_APP),
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


async def _tokens_on_fresh_channels(port: int, pki: PkiLayout, card: str, n: int) -> None:
    """One IssueCardToken on each of ``n`` new connections; every one must succeed."""
    channels = [_channel(port, pki) for _ in range(n)]
    try:
        await asyncio.gather(*(issue_token(ch, card) for ch in channels))
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))


def _answered(metrics_port: int) -> float:
    """The onecard.v1 calls a worker answered, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("onecard_requests_total{") and 'rpc="onecard.v1.' in line
    )


async def _restarted(served: Served, index: int, old_pid: int) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for event in served.events("worker_started"):
            if event["worker"] == index and event["pid"] != old_pid:
                return event
        await asyncio.sleep(0.1)
    pytest.fail(f"worker {index} was not restarted: {served.log.read_text()}")


async def test_two_workers_answer_survive_a_kill_and_stop_cleanly(
    tmp_path: Path, pki: PkiLayout, population: Population
) -> None:
    card = population.first(card_status=CardStatus.NORMAL).id_number
    async with _serve_workers(tmp_path, pki) as served:
        await _tokens_on_fresh_channels(served.port, pki, card, 24)
        assert all(_answered(port) > 0 for port in served.metrics), "one worker answered all"

        os.kill(served.pids[0], signal.SIGKILL)
        exited = None
        while not exited:
            await asyncio.sleep(0.05)
            exited = served.events("worker_exited")
        assert exited[0]["status"] == "killed by SIGKILL" and exited[0]["worker"] == 0
        await _tokens_on_fresh_channels(served.port, pki, card, 8)  # the other answers meanwhile
        restarted = await _restarted(served, 0, served.pids[0])
        await _tokens_on_fresh_channels(served.port, pki, card, 24)
        assert _answered(int(str(restarted["metrics_port"]))) > 0  # the new worker answers too

        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), timeout=60) == 0
        for pid in (served.pids[1], int(str(restarted["pid"]))):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert len(served.events("gateway_stopped")) == 2
        _export_and_verify(served.env, tmp_path)


def _export_and_verify(env: dict[str, str], tmp_path: Path) -> None:
    """The log both workers (and the restarted one) appended to is one log that verifies."""
    out = tmp_path / "export"
    onecard = [sys.executable, "-m", "gateway.cli", "audit"]
    subprocess.run([*onecard, "export", "--out", str(out)], env=env, check=True, timeout=120)
    key = str(Path(env["ONECARD_DATA_DIR"]) / "audit-log.pub")
    verified = subprocess.run(
        [*onecard, "verify", str(out), "--key", key],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    entries = re.search(r"OK: (\d+) entries", verified.stdout)
    assert entries is not None and int(entries[1]) >= 56, verified.stdout  # every call's entry


async def test_one_organisations_rate_limit_holds_across_both_workers(
    tmp_path: Path, pki: PkiLayout, population: Population
) -> None:
    card = population.first(card_status=CardStatus.NORMAL).id_number
    per_s, burst = 10, 40
    limits = json.dumps({"citizen_app": {"per_s": per_s, "burst": burst}})
    async with _serve_workers(tmp_path, pki, rate_limits=limits) as served:
        channels = [_channel(served.port, pki) for _ in range(16)]
        outcomes: dict[str, int] = {}
        started = time.monotonic()
        until = started + 2.0

        async def flood(channel: grpc.aio.Channel) -> None:
            while time.monotonic() < until:
                try:
                    await issue_token(channel, card)
                    key = "OK"
                except grpc.aio.AioRpcError as err:
                    key = f"{err.code().name}/{reason(err)}"
                    await asyncio.sleep(0.005)
                outcomes[key] = outcomes.get(key, 0) + 1

        try:
            await asyncio.gather(*(flood(ch) for ch in channels))
        finally:
            await asyncio.gather(*(ch.close() for ch in channels))
        elapsed = time.monotonic() - started
        answered = [_answered(port) for port in served.metrics]
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), timeout=60) == 0

    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED/rate_limited"}, outcomes
    assert all(n > 0 for n in answered), answered  # both workers took part
    # One bucket for both (plus what two leases may hold), where two buckets would admit twice
    # the burst: a shared limit, not one per process.
    assert burst <= outcomes["OK"] <= per_s * elapsed + burst + 2 * LEASE_MAX, outcomes
