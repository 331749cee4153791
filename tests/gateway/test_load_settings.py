"""The load settings: defaults per org type, a TOML table or a JSON variable, and the
per-organisation override in the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DEFAULT_RATE_LIMITS, ConfigError, load_settings
from gateway.orgs import Org, OrgRegistry, OrgRegistryError, OrgType, RateLimit, dump_toml


def test_every_org_type_has_a_default_and_the_bounds_have_theirs() -> None:
    settings = load_settings()
    assert set(settings.rate_limits) == set(OrgType)
    assert settings.max_in_flight == 128
    assert settings.shed_audit_interval_s == 10.0


def test_a_toml_table_changes_one_type_and_keeps_the_others(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("max_in_flight = 64\n\n[rate_limits.library]\nper_s = 20\nburst = 40\n")
    settings = load_settings(config)
    assert settings.max_in_flight == 64
    assert settings.rate_limits[OrgType.LIBRARY].limit() == RateLimit(per_s=20, burst=40)
    assert settings.rate_limits[OrgType.HOSPITAL] == DEFAULT_RATE_LIMITS[OrgType.HOSPITAL]


def test_the_environment_takes_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECARD_RATE_LIMITS", '{"transit": {"per_s": 5, "burst": 7}}')
    monkeypatch.setenv("ONECARD_SHED_AUDIT_INTERVAL_S", "2.5")
    settings = load_settings()
    assert settings.rate_limits[OrgType.TRANSIT].limit() == RateLimit(per_s=5, burst=7)
    assert settings.rate_limits[OrgType.LIBRARY] == DEFAULT_RATE_LIMITS[OrgType.LIBRARY]
    assert settings.shed_audit_interval_s == 2.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate_limits": {"museum": {"per_s": 1, "burst": 1}}}, "rate_limits.museum"),
        ({"rate_limits": {"library": {"per_s": 0, "burst": 1}}}, "rate_limits.library.per_s"),
        ({"rate_limits": {"library": {"per_s": 1}}}, "rate_limits.library.burst: Field required"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"shed_audit_interval_s": 0}, "shed_audit_interval_s"),
    ],
)
def test_bad_load_settings_name_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(**overrides)


def test_an_org_of_the_registry_may_have_a_rate_limit_of_its_own(tmp_path: Path) -> None:
    orgs = [
        Org("lib-bj-001", OrgType.LIBRARY, "Library", "110101"),
        Org("hosp-big", OrgType.HOSPITAL, "Big", "110105", rate_limit=RateLimit(400, 800)),
        Org("hosp-odd", OrgType.HOSPITAL, "Odd", "110105", rate_limit=RateLimit(0.5, 1)),
    ]
    path = tmp_path / "orgs.toml"
    path.write_text(dump_toml(orgs))
    assert "rate_limit = { per_s = 400, burst = 800 }" in path.read_text()
    assert list(OrgRegistry.load(path)) == orgs


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("rate_limit = { per_s = 0, burst = 1 }", "rate_limit.per_s: Input should be greater"),
        ("rate_limit = { per_s = 1, burst = 1.5 }", "rate_limit.burst"),
        ("rate_limit = { per_s = 1, burst = 1, x = 2 }", "rate_limit.x is not a known field"),
        ("rate_limit = 5", "rate_limit"),
    ],
)
def test_a_bad_rate_limit_in_the_registry_names_the_org(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "orgs.toml"
    text = dump_toml([Org("lib-bj-001", OrgType.LIBRARY, "Library", "110101")])
    path.write_text(text + line + "\n")
    with pytest.raises(OrgRegistryError, match="org\\[0\\] 'lib-bj-001': " + message):
        OrgRegistry.load(path)
