"""Fixtures that start the real gateway and the real reference back end on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.social_insurance import start_reference_server
from adapters.social_insurance.seed import Population
from gateway.bootstrap import Gateway, start_gateway
from gateway.client import org_channel
from gateway.config import load_settings
from gateway.pki import PkiLayout, init_pki

HOSPITAL = "hosp-bj-001"
LIBRARY = "lib-bj-001"
TRANSIT = "transit-bj-001"
REGULATOR = "reg-nhsa-001"
CITIZEN_APP = "app-ecard-001"
SUSPENDED = "lib-bj-009"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def population() -> Population:
    return Population.default()


@pytest.fixture
async def gateway_factory(tmp_path: Path, pki: PkiLayout) -> AsyncIterator[Callable[..., Any]]:
    """Start gateways with setting overrides; every one is stopped at the end of the test."""
    started: list[Gateway] = []
    references: list[Any] = []

    async def start(**overrides: Any) -> Gateway:
        if "backends" not in overrides:
            reference = await start_reference_server()
            references.append(reference)
            overrides["backends"] = {"social_insurance": {"url": reference.url}}
        settings = load_settings(
            data_dir=overrides.pop("data_dir", tmp_path / "data"),
            pki_dir=pki.directory,
            listen_port=0,
            metrics_port=0,
            shutdown_grace_s=0.5,
            **overrides,
        )
        gateway = await start_gateway(settings)
        started.append(gateway)
        return gateway

    yield start

    for gateway in started:
        await gateway.stop(0)
    for reference in references:
        await reference.close()


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any]) -> Gateway:
    gw: Gateway = await gateway_factory()
    return gw


@pytest.fixture
def channel(gateway: Gateway) -> Callable[[str], grpc.aio.Channel]:
    def open_channel(org_id: str) -> grpc.aio.Channel:
        return org_channel(gateway.target, gateway.pki, org_id)

    return open_channel


@pytest.fixture
async def started() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes a test started with ``start``: any still running at the end are killed."""
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
