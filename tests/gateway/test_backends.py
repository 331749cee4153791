"""The back-end seam: settings groups, the back-end table, the wiring functions, the closers.

A throw-away back end (tests/gateway/throwaway_backend.py: a port, a fake adapter, a settings
group, a table row) is wired here exactly as a real one is, with nothing else edited;
tests/integration/test_backend_seam.py serves it from a real gateway.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from adapters.fhir import FhirClient, wire_fhir
from adapters.social_insurance import SocialInsuranceClient
from adapters.social_insurance.wiring import wire_backend as wire_social_insurance
from gateway.backends import BACKENDS, BackendRow, WiringError, wire_backends
from gateway.config import BackendSettings, ConfigError, load_settings
from gateway.ports import CARD_REGISTRY, HEALTH_RECORDS, INSURANCE_BACKEND, WiredBackend
from gateway.services import SERVICES
from gateway.services.table import SERVICE_TABLE
from tests.gateway.throwaway_backend import FORECAST, ForecastBackend

Closers = list[Callable[[], Awaitable[None]]]


async def _close(closers: Closers) -> None:
    for close in reversed(closers):
        await close()


async def test_a_throw_away_back_end_is_wired_from_its_settings_group_and_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[backends.forecast]\nurl = "http://127.0.0.1:9/forecast"\ntimeout_s = 0.5\n'
        '[backends.forecast.credentials]\napi_key = "s3cret"\n'
    )
    monkeypatch.setenv("ONECARD_BACKENDS__FORECAST__TIMEOUT_S", "0.25")  # over the file
    monkeypatch.setenv("ONECARD_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings(config)
    forecast = ForecastBackend()
    closers: Closers = []

    ports = await wire_backends(settings, (*BACKENDS, BackendRow("forecast", forecast)), closers)

    (fake,) = forecast.built
    bound = ports.get(FORECAST)
    assert bound.port is fake
    assert (bound.backend, bound.timeout_s) == ("forecast", 0.25)
    assert fake.settings.url == "http://127.0.0.1:9/forecast"
    assert fake.settings.credentials["api_key"].get_secret_value() == "s3cret"
    assert fake.settings.keys_dir == tmp_path / "data" / "keys"  # beside the gateway's keys
    assert "s3cret" not in repr(settings)
    assert ports.urls["forecast"] == "http://127.0.0.1:9/forecast"
    assert ports.get(CARD_REGISTRY).backend == "social_insurance"  # the real row, still there
    assert [close.__name__ for close in closers] == [
        *(f"close_{row.name}" for row in BACKENDS),
        "close_forecast",
    ]
    await _close(closers)
    assert fake.closed == 1


async def test_the_social_insurance_row_without_url_starts_and_stops_its_reference_server() -> None:
    wired = await wire_social_insurance(BackendSettings())
    try:
        client = {provided.key: provided.implementation for provided in wired.provides}
        assert set(client) == {CARD_REGISTRY, INSURANCE_BACKEND}
        assert client[CARD_REGISTRY] is client[INSURANCE_BACKEND]
        assert isinstance(client[CARD_REGISTRY], SocialInsuranceClient)
        address = urlsplit(wired.url)
        assert address.hostname == "127.0.0.1"
        assert address.port is not None
        socket.create_connection((address.hostname, address.port), timeout=2).close()
    finally:
        await wired.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address.hostname, address.port), timeout=2).close()


async def test_the_social_insurance_row_with_url_starts_nothing() -> None:
    wired = await wire_social_insurance(BackendSettings(url="http://127.0.0.1:9"))
    await wired.close()
    assert wired.url == "http://127.0.0.1:9"


async def test_the_social_insurance_row_takes_no_credentials() -> None:
    given = BackendSettings.model_validate({"credentials": {"password": "x"}})
    with pytest.raises(ConfigError, match=r"backends.social_insurance.credentials: .* none"):
        await wire_social_insurance(given)


async def test_a_group_for_no_back_end_is_refused_before_anything_starts() -> None:
    forecast = ForecastBackend()
    settings = load_settings(backends={"forcast": {"timeout_s": 1}})
    closers: Closers = []
    with pytest.raises(WiringError, match=r"backends.forcast: no such back end \(known: fore"):
        await wire_backends(settings, (BackendRow("forecast", forecast),), closers)
    assert (forecast.built, closers) == ([], [])


async def test_two_rows_of_one_name_are_refused() -> None:
    forecast = ForecastBackend()
    rows = (BackendRow("forecast", forecast), BackendRow("forecast", forecast))
    with pytest.raises(WiringError, match="'forecast' has two rows"):
        await wire_backends(load_settings(), rows, [])


async def test_two_back_ends_for_one_port_are_refused_and_what_started_is_closable() -> None:
    first, second = ForecastBackend(), ForecastBackend()
    closers: Closers = []
    rows = (BackendRow("forecast", first), BackendRow("weather", second))
    with pytest.raises(WiringError, match="forecast and weather both provide the forecast port"):
        await wire_backends(load_settings(), rows, closers)
    await _close(closers)
    assert [fake.closed for fake in (*first.built, *second.built)] == [1, 1]


async def test_a_port_no_back_end_provides_is_named() -> None:
    ports = await wire_backends(load_settings(), (BackendRow("forecast", ForecastBackend()),), [])
    with pytest.raises(WiringError, match="no back end provides the card registry port"):
        ports.get(CARD_REGISTRY)


async def test_a_failing_wiring_function_leaves_the_earlier_closers_registered() -> None:
    forecast = ForecastBackend()

    async def broken(settings: BackendSettings) -> WiredBackend:
        raise OSError("cannot start")

    closers: Closers = []
    rows = (BackendRow("forecast", forecast), BackendRow("broken", broken))
    with pytest.raises(OSError, match="cannot start"):
        await wire_backends(load_settings(), rows, closers)
    await _close(closers)
    assert forecast.built[0].closed == 1


# -- the settings group and its deprecated flat spellings ---------------------------------------


def test_a_back_end_without_a_group_gets_the_defaults() -> None:
    settings = load_settings()
    assert settings.backend("social_insurance") == BackendSettings()
    assert (BackendSettings().url, BackendSettings().timeout_s) == (None, 2.0)


def test_file_group_and_nested_environment_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[backends.social_insurance]\ntimeout_s = 1.5\n")
    monkeypatch.setenv("ONECARD_BACKENDS__SOCIAL_INSURANCE__URL", "http://127.0.0.1:9")
    group = load_settings(config).backend("social_insurance")
    assert (group.url, group.timeout_s) == ("http://127.0.0.1:9", 1.5)


def test_a_bad_group_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[backends.social_insurance]\ntimeout_s = 0\nurll = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert "backends.social_insurance.timeout_s: Input should be greater than 0" in str(info.value)
    assert "backends.social_insurance.urll: Extra inputs are not permitted" in str(info.value)


def test_the_flat_settings_still_work_and_say_they_are_deprecated() -> None:
    settings = load_settings(social_insurance_url="http://127.0.0.1:9", backend_timeout_s=0.7)
    group = settings.backend("social_insurance")
    assert (group.url, group.timeout_s) == ("http://127.0.0.1:9", 0.7)
    assert settings.deprecations() == [
        ("social_insurance_url", "backends.social_insurance.url"),
        ("backend_timeout_s", "backends.social_insurance.timeout_s"),
    ]
    assert load_settings().deprecations() == []


def test_a_flat_setting_beside_its_group_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("backend_timeout_s = 1\n[backends.social_insurance]\ntimeout_s = 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    assert str(info.value).splitlines()[1] == (
        "  backend_timeout_s is the deprecated spelling of backends.social_insurance.timeout_s, "
        "and both are set: keep backends.social_insurance.timeout_s only"
    )
    group = load_settings(backend_timeout_s=1, backends={"social_insurance": {"url": "x"}})
    assert (group.backend("social_insurance").url, group.backend("social_insurance").timeout_s) == (
        "x",
        1.0,
    )


# -- the service table ---------------------------------------------------------------------------


def test_the_service_table_serves_every_onecard_service_once() -> None:
    assert [row.descriptor for row in SERVICE_TABLE] == list(SERVICES)


async def test_the_social_insurance_row_takes_no_sources_or_options() -> None:
    given = BackendSettings.model_validate({"sources": {"b": "http://127.0.0.1:9"}})
    with pytest.raises(ConfigError, match=r"backends.social_insurance: .* no sources or options"):
        await wire_social_insurance(given)


async def test_the_fhir_row_without_sources_starts_and_stops_its_reference_server() -> None:
    wired = await wire_fhir(BackendSettings())
    try:
        ((key, client),) = [(p.key, p.implementation) for p in wired.provides]
        assert key == HEALTH_RECORDS and isinstance(client, FhirClient)
        assert [s.name for s in client.sources] == ["reference"]
        address = urlsplit(wired.url)
        assert (address.hostname, address.path) == ("127.0.0.1", "/fhir")
        assert address.port is not None
        socket.create_connection((address.hostname, address.port), timeout=2).close()
    finally:
        await wired.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address.hostname, address.port), timeout=2).close()


async def test_the_fhir_row_reads_its_url_and_named_sources_in_order() -> None:
    given = BackendSettings.model_validate(
        {
            "url": "https://exchange.example/fhir/",
            "sources": {"hosp-a": "http://127.0.0.1:9/base/fhir"},
            "options": {"identifier_system": "urn:example:id", "page_size": "5"},
        }
    )
    wired = await wire_fhir(given)
    await wired.close()
    (provided,) = wired.provides
    client = provided.implementation
    assert isinstance(client, FhirClient)
    assert [(s.name, s.base_url) for s in client.sources] == [
        ("main", "https://exchange.example/fhir"),
        ("hosp-a", "http://127.0.0.1:9/base/fhir"),
    ]


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ({"credentials": {"token": "x"}}, r"backends.fhir.credentials: this back end takes none"),
        ({"options": {"page_sise": "5"}}, r"backends.fhir.options.page_sise: no such option"),
        ({"options": {"max_pages": "0"}}, r"options.max_pages: a whole number from 1 to 1000"),
        ({"sources": {"Bad Name": "http://h/fhir"}}, r"sources.Bad Name: a source name is"),
        ({"sources": {"a": "ftp://h/fhir"}}, r"source a: 'ftp://h/fhir' is not a FHIR base URL"),
        ({"url": "http://h/fhir?x=1"}, r"source main: .* is not a FHIR base URL"),
        (
            {"url": "http://h/fhir", "sources": {"main": "http://g/fhir"}},
            r"sources.main: 'main' is the name of backends.fhir.url",
        ),
    ],
)
async def test_the_fhir_row_refuses_settings_it_cannot_use(
    group: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await wire_fhir(BackendSettings.model_validate(group))
