"""Review of issue 17: a key retired by `onecard audit rotate-key` signs nothing after the
rotation, even in a gateway that kept running.

The guard between hosts is the shared session lock each gateway's writer session holds on the
log; it goes with the session. When that session is lost (a network fault, an operator's
pg_terminate_backend) and the gateway is idle, `rotate-key` on another host of the same log
takes the lock and records a new key; the gateway then reconnects and, without this fix, went on
signing checkpoints with the retired key.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import grpc
import psycopg
import pytest

from adapters.social_insurance.seed import Population
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.cli import main
from gateway.client import org_channel
from gateway.pki import ensure_pki
from gateway.ports import CardStatus
from tests.integration.calls import insurance_status, issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL
from tests.integration.served import free_port, serve_env, start
from tests.postgres import fresh_schema

pytestmark = pytest.mark.integration
ORIGIN = "onecard.local/audit"


def _terminate_writer(dsn: str, pid: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"onecard-writer pid={pid}",),
        ).fetchall()
    return len(rows)


async def test_retired_key_signs_nothing_after_a_rotation_while_the_writer_session_was_lost(
    tmp_path: Path,
    population: Population,
    started: list[asyncio.subprocess.Process],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, other_host = tmp_path / "data", tmp_path / "other-host"
    pki = ensure_pki(data / "pki")
    card = next(p.id_number for p in population if p.card_status == CardStatus.NORMAL and p.schemes)
    with fresh_schema() as dsn:
        port = free_port()
        settings = {"store": "postgres", "database_url": dsn, "log_level": "warning"}
        # a long interval: the gateway's writer reconnects at its next batch, not on a timer
        env = serve_env(data, port, audit_checkpoint_interval_s="30", **settings)
        proc = await start(started, env, pki, port)
        target = f"127.0.0.1:{port}"
        async with (
            org_channel(target, pki, CITIZEN_APP) as app,
            org_channel(target, pki, HOSPITAL) as hosp,
        ):
            await insurance_status(hosp, card, await issue_token(app, card))
            # a second host of the same log: its own data directory with the same keys
            shutil.copytree(data, other_host, ignore=shutil.ignore_patterns("onecard.lock"))
            assert _terminate_writer(dsn, proc.pid) == 1
            with pytest.MonkeyPatch.context() as mp:
                for name, value in serve_env(other_host, free_port(), **settings).items():
                    mp.setenv(name, value)
                rotated = main(["audit", "rotate-key"])
            err = capsys.readouterr().err
            # the old key would keep signing: the first batch on the lost session fails, the
            # next one reconnects
            for _ in range(2):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await insurance_status(hosp, card, await issue_token(app, card))
        await asyncio.sleep(1)
        with psycopg.connect(dsn) as conn:
            notes = conn.execute("SELECT size, note FROM audit_checkpoints ORDER BY size")
            checkpoints = [(int(s), bytes(n)) for s, n in notes.fetchall()]
            keys = conn.execute("SELECT verifier_key, from_size FROM audit_keys ORDER BY seq")
            recorded = keys.fetchall()
    old = VerifierSet([Verifier.parse((data / "audit-log.pub").read_text().strip())])
    signed_by_old = [size for size, note in checkpoints if _opens(note, old)]
    if rotated != 0:  # the gateway reconnected first: the lock refused the rotation
        assert "serving this log" in err, err
        return
    (_, rotated_at) = recorded[-1]
    assert [size for size in signed_by_old if size > rotated_at] == [], (
        f"the retired key signed checkpoints after the rotation at size {rotated_at}: "
        f"{signed_by_old}"
    )


def _opens(note: bytes, verifiers: VerifierSet) -> bool:
    try:
        open_checkpoint(note, verifiers, ORIGIN)
    except Exception:
        return False
    return True
