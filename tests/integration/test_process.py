"""``onecard serve`` as an operator runs it: one process per data directory, and a full disk.

The full-disk test mounts a small tmpfs (it needs root, as CI has); elsewhere it is skipped
with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import issue_token
from tests.integration.conftest import CITIZEN_APP
from tests.integration.served import free_port, serve_env, start

pytestmark = pytest.mark.integration


async def _serve_once(env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


async def test_a_second_gateway_on_the_same_data_directory_is_refused(
    tmp_path: Path, pki: PkiLayout, started: list[asyncio.subprocess.Process]
) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = serve_env(data, port, pki_dir=str(pki.directory), log_level="warning")
    first = await start(started, env, pki, port)
    code, stderr = await _serve_once(serve_env(data, free_port(), pki_dir=str(pki.directory)))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert str(data) in lines[0] and "already serving this data directory" in lines[0]
    assert first.returncode is None  # the first one serves on, untouched
    first.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(first.wait(), timeout=30) == 0


@contextlib.contextmanager
def _small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * chunk):
                    pass
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_fails_closed_stops_cleanly_and_refuses_start_in_one_line(
    tmp_path: Path,
    pki: PkiLayout,
    population: Population,
    started: list[asyncio.subprocess.Process],
) -> None:
    card = population.first(card_status=CardStatus.NORMAL).id_number
    with _small_disk(tmp_path / "disk", "8m") as disk:
        data = disk / "data"
        port = free_port()
        env = serve_env(
            data,
            port,
            pki_dir=str(pki.directory),
            log_level="warning",
            audit_checkpoint_interval_s="3600",  # the stop has a checkpoint left to sign
        )
        stderr_path = tmp_path / "serve.err"
        with stderr_path.open("wb") as err:
            proc = await start(started, env, pki, port, output=err)
            async with org_channel(f"127.0.0.1:{port}", pki, CITIZEN_APP) as app:
                await issue_token(app, card)
                await issue_token(app, card)
                filler = _fill(disk)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    for _ in range(50):  # until the WAL has no room left either
                        await issue_token(app, card)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert reason(info.value) == "store_unavailable"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 2
        said = stderr_path.read_text()
        assert "Traceback" not in said
        assert said.strip().splitlines()[-1].startswith("onecard: stopped, but checkpoint_now")

        code, stderr = await _serve_once(env)
        assert code == 2, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert "disk" in stderr and "Traceback" not in stderr

        os.unlink(filler)
        proc = await start(started, env, pki, port)
        async with org_channel(f"127.0.0.1:{port}", pki, CITIZEN_APP) as app:
            await issue_token(app, card)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
