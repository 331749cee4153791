"""A real ``onecard serve`` process on loopback, for tests that kill it or read its logs."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import IO

from gateway.client import org_channel
from gateway.pki import PkiLayout
from tests.integration.conftest import CITIZEN_APP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_env(data: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a gateway on 127.0.0.1:``port`` keeping its state in ``data``."""
    env = dict(
        os.environ,
        ONECARD_DATA_DIR=str(data),
        ONECARD_LISTEN_PORT=str(port),
        ONECARD_METRICS_PORT=str(free_port()),
    )
    env.update({f"ONECARD_{name.upper()}": value for name, value in settings.items()})
    return env


async def start(
    started: list[asyncio.subprocess.Process],
    env: dict[str, str],
    pki: PkiLayout,
    port: int,
    output: IO[bytes] | None = None,
) -> asyncio.subprocess.Process:
    """Start ``onecard serve``; return once it accepts mutual-TLS connections."""
    sink = output if output is not None else asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", env=env, stdout=sink, stderr=sink
    )
    started.append(proc)
    async with org_channel(f"127.0.0.1:{port}", pki, CITIZEN_APP) as ch:
        await asyncio.wait_for(ch.channel_ready(), timeout=30)
    return proc
