"""Fixtures that start the real gateway and the real reference back end on 127.0.0.1.

Every test whose gateways come from ``gateway_factory`` runs on every store: SQLite, then
PostgreSQL with a schema of its own per data directory, migrated as ``onecard db upgrade`` does
(``tests/integration/stored.py`` reaches either store's rows). Tests of the SQLite file itself
are marked ``sqlite_only``; protocol and transport tests (back ends, TLS, request checks), whose
checks do not depend on the store, ``store_independent``: both run on SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.postgres import STORES, fresh_schema

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests whose gateways come from ``gateway_factory`` run once per store kind, except those
    marked ``sqlite_only`` (they read or damage the SQLite file itself) or ``store_independent``
    (protocol and transport tests, whose checks do not depend on the store)."""
    chosen = any(  # a test that names its stores itself
        m.args and m.args[0] == "store_kind"
        for m in metafunc.definition.iter_markers("parametrize")
    )
    one_store = any(
        metafunc.definition.get_closest_marker(name)
        for name in ("sqlite_only", "store_independent")
    )
    if "store_kind" in metafunc.fixturenames and not (chosen or one_store):
        metafunc.parametrize("store_kind", STORES, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store the test's gateways use (each in turn, unless ``sqlite_only``)."""
    kind: str = getattr(request, "param", "sqlite")
    return kind


@pytest.fixture
def database_urls() -> dict[Path, str]:
    """The PostgreSQL DSN of each data directory a test's gateways used (none on SQLite)."""
    return {}


@pytest.fixture
async def gateway_factory(
    tmp_path: Path, pki: PkiLayout, store_kind: str, database_urls: dict[Path, str]
) -> AsyncIterator[Callable[..., Any]]:
    """Start gateways with setting overrides; every one is stopped at the end of the test."""
    started: list[Gateway] = []
    references: list[Any] = []
    schemas = contextlib.ExitStack()

    async def start(**overrides: Any) -> Gateway:
        if "backends" not in overrides:
            reference = await start_reference_server()
            references.append(reference)
            overrides["backends"] = {"social_insurance": {"url": reference.url}}
        data_dir = overrides.pop("data_dir", tmp_path / "data")
        if store_kind == "postgres" and "store" not in overrides:
            if data_dir not in database_urls:  # one log per data directory, as on SQLite
                database_urls[data_dir] = schemas.enter_context(fresh_schema())
            overrides.update(store="postgres", database_url=database_urls[data_dir])
        settings = load_settings(
            data_dir=data_dir,
            pki_dir=pki.directory,
            listen_port=0,
            metrics_port=0,
            shutdown_grace_s=0.5,
            **overrides,
        )
        gateway = await start_gateway(settings)
        started.append(gateway)
        return gateway

    with schemas:
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
