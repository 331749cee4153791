"""The back-end seam in a real gateway: a throw-away back end added by a row, served, closed.

The back end ("forecast": port, fake adapter, settings group, row) is the one of
tests/gateway/throwaway_backend.py; here ``start_gateway`` gets it in its back-end table, a service
row's factory receives its port, a call goes through over mutual TLS, and ``stop`` closes it.
"""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from adapters.social_insurance.seed import Population
from gateway.backends import BACKENDS, BackendRow, Bound, WiringError
from gateway.bootstrap import start_gateway
from gateway.client import org_channel
from gateway.config import load_settings
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from gateway.services.table import SERVICE_TABLE, ServiceParts
from tests.gateway.throwaway_backend import FORECAST, Forecast, ForecastBackend
from tests.integration.calls import issue_token
from tests.integration.conftest import CITIZEN_APP

pytestmark = pytest.mark.integration


async def test_a_row_wires_a_back_end_whose_port_reaches_a_service_and_stop_closes_it(
    tmp_path: Path, pki: PkiLayout, population: Population
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[backends.forecast]\nurl = "http://127.0.0.1:9"\ntimeout_s = 0.5\n')
    settings = load_settings(
        config, data_dir=tmp_path / "data", pki_dir=pki.directory, listen_port=0, metrics_port=None
    )
    forecast = ForecastBackend()
    seen: list[Bound[Forecast]] = []
    card_row = next(row for row in SERVICE_TABLE if row.descriptor.name == "CardService")

    def card_service(parts: ServiceParts) -> object:
        seen.append(parts.ports.get(FORECAST))
        return card_row.build(parts)

    services = tuple(
        replace(row, build=card_service) if row is card_row else row for row in SERVICE_TABLE
    )
    gateway = await start_gateway(
        settings, backends=(*BACKENDS, BackendRow("forecast", forecast)), services=services
    )
    try:
        (fake,) = forecast.built
        assert [(bound.port, bound.timeout_s) for bound in seen] == [(fake, 0.5)]
        assert gateway.ports.urls["forecast"] == "http://127.0.0.1:9"
        person = population.first(card_status=CardStatus.NORMAL)
        async with org_channel(gateway.target, gateway.pki, CITIZEN_APP) as app:
            assert await issue_token(app, person.id_number)  # the rebuilt row, served
        assert fake.closed == 0
    finally:
        await gateway.stop(0)
    assert fake.closed == 1
    reference = urlsplit(gateway.ports.urls["social_insurance"])  # started by its own row
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((reference.hostname, reference.port), timeout=2).close()


async def test_a_failed_start_closes_the_back_ends_already_wired(
    tmp_path: Path, pki: PkiLayout
) -> None:
    forecast = ForecastBackend()
    settings = load_settings(
        data_dir=tmp_path / "data", pki_dir=pki.directory, listen_port=0, metrics_port=None
    )
    rows = (BackendRow("forecast", forecast),)  # no card registry: the pipeline cannot be built
    with pytest.raises(WiringError, match="no back end provides the card registry port"):
        await start_gateway(settings, backends=rows)
    assert forecast.built[0].closed == 1


async def test_a_deprecated_setting_is_one_warning_at_start(tmp_path: Path, pki: PkiLayout) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data",
        pki_dir=pki.directory,
        listen_port=0,
        metrics_port=None,
        backend_timeout_s=1.0,
    )
    with capture_logs() as logs:
        gateway = await start_gateway(settings)
        await gateway.stop(0)
    warned = [log for log in logs if log["event"] == "setting_deprecated"]
    assert warned == [
        {
            "event": "setting_deprecated",
            "log_level": "warning",
            "setting": "backend_timeout_s",
            "use": "backends.social_insurance.timeout_s",
        }
    ]
