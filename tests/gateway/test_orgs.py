"""The org registry: loading orgs.toml, its error messages, and writing it back."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.orgs import (
    Org,
    OrgRegistry,
    OrgRegistryError,
    OrgStatus,
    OrgType,
    dump_toml,
    is_valid_org_id,
)

HOSPITAL = """
[[org]]
id = "hosp-bj-001"
type = "hospital"
name = "Beijing Chaoyang Demo Hospital"
district = "110105"
status = "active"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orgs.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(OrgRegistryError) as info:
        OrgRegistry.load(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_loads_the_documented_format(tmp_path: Path) -> None:
    registry = OrgRegistry.load(_write(tmp_path, "# who may call\n" + HOSPITAL))
    assert len(registry) == 1
    assert registry.get("hosp-bj-001") == Org(
        "hosp-bj-001",
        OrgType.HOSPITAL,
        "Beijing Chaoyang Demo Hospital",
        "110105",
        OrgStatus.ACTIVE,
    )
    assert registry.get("hosp-bj-002") is None
    assert "hosp-bj-001" in registry
    assert [org.org_id for org in registry] == ["hosp-bj-001"]


def test_round_trip_keeps_every_field_and_awkward_names(tmp_path: Path) -> None:
    orgs = [
        Org("hosp-bj-001", OrgType.HOSPITAL, "北京朝阳示范医院", "110105"),
        Org(
            "lib-bj-009",
            OrgType.LIBRARY,
            'A "quoted" \\ name\twith\ncontrols\x7f',
            "110108",
            OrgStatus.SUSPENDED,
        ),
        Org("app-ecard-001", OrgType.CITIZEN_APP, "E-card app", "100000"),
        Org("reg-nhsa-001", OrgType.REGULATOR, "Regulator", "100000"),
        Org("transit-bj-001", OrgType.TRANSIT, "Transit", "110000"),
    ]
    text = dump_toml(orgs)
    assert text.startswith("# OneCard organisation registry")
    assert dump_toml(orgs) == text  # deterministic
    assert list(OrgRegistry.load(_write(tmp_path, text))) == orgs


def test_dump_matches_the_documented_layout() -> None:
    org = Org("hosp-bj-001", OrgType.HOSPITAL, "Beijing Chaoyang Demo Hospital", "110105")
    assert dump_toml([org]) == (
        "# OneCard organisation registry: who may call the gateway.\n"
        "# An org may have a rate limit of its own instead of its type's default (settings):\n"
        "#   rate_limit = { per_s = 400, burst = 800 }\n" + HOSPITAL
    )


def test_bad_toml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    message = _load_error(tmp_path, '[[org]]\nid = "hosp-bj-001\n')
    assert "not valid TOML" in message


def test_unknown_type_names_the_entry_and_the_allowed_types(tmp_path: Path) -> None:
    second = HOSPITAL.replace("hosp-bj-001", "hosp-x").replace('"hospital"', '"clinic"')
    message = _load_error(tmp_path, HOSPITAL + second)
    assert "org[1] 'hosp-x': type must be one of " in message
    assert "hospital, library, transit, regulator, citizen_app (got 'clinic')" in message


def test_unknown_status_is_refused(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL.replace('"active"', '"paused"'))
    assert "status must be one of active, suspended (got 'paused')" in message


def test_missing_field_is_named(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL.replace('district = "110105"\n', ""))
    assert "org[0] 'hosp-bj-001': district is missing" in message


def test_missing_id_still_names_the_entry_by_index(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL.replace('id = "hosp-bj-001"\n', ""))
    assert "org[0]: id is missing" in message


def test_duplicate_id_is_refused(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL + HOSPITAL)
    assert "org[1] 'hosp-bj-001': duplicate id (already used by org[0])" in message


def test_district_must_be_a_six_digit_string(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL.replace('"110105"', "110105"))
    assert "org[0] 'hosp-bj-001': district" in message
    message = _load_error(tmp_path, HOSPITAL.replace('"110105"', '"1101"'))
    assert "district must be 6 digits" in message


def test_org_id_alphabet_is_enforced(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL.replace('"hosp-bj-001"', '"../etc/passwd"'))
    assert "id must be" in message
    assert not is_valid_org_id("Hosp")
    assert not is_valid_org_id("")
    assert is_valid_org_id("hosp-bj-001")


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    message = _load_error(tmp_path, HOSPITAL + 'colour = "blue"\n')
    assert "colour is not a known field" in message


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    bad = HOSPITAL.replace('"hospital"', '"clinic"').replace('status = "active"\n', "")
    message = _load_error(tmp_path, bad)
    assert "type must be one of" in message
    assert "status is missing" in message


def test_an_empty_registry_is_refused(tmp_path: Path) -> None:
    assert "no [[org]] entries" in _load_error(tmp_path, "# nobody\n")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OrgRegistryError, match="no such org registry file"):
        OrgRegistry.load(tmp_path / "absent.toml")


def test_registry_refuses_duplicates_built_in_code() -> None:
    org = Org("hosp-bj-001", OrgType.HOSPITAL, "H", "110105")
    with pytest.raises(OrgRegistryError, match="more than once"):
        OrgRegistry([org, org])


def test_dump_is_valid_toml_for_an_empty_list() -> None:
    assert tomllib.loads(dump_toml([])) == {}
