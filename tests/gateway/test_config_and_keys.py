import os
import stat
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
from gateway.keys import KeyFileError, load_or_create_secret


def test_defaults_are_the_embedded_loopback_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ONECARD_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.listen_host == "127.0.0.1"
    assert settings.metrics_host == "127.0.0.1"
    assert settings.backend("social_insurance").url is None  # the reference server, in-process
    assert settings.effective_pki_dir == Path("var/pki")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("listen_port = 8000\n[backends.social_insurance]\ntimeout_s = 1.5\n")
    monkeypatch.setenv("ONECARD_LISTEN_PORT", "9000")
    settings = load_settings(config)
    assert settings.listen_port == 9000
    assert settings.backend("social_insurance").timeout_s == 1.5


def test_errors_name_the_field_and_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("listen_port = 70000\nbackend_timeot_s = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    text = str(info.value)
    assert "listen_port: Input should be less than or equal to 65535" in text
    assert "backend_timeot_s: Extra inputs are not permitted" in text
    assert str(config) in text


def test_missing_and_malformed_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("listen_port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_secrets_are_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token.key"
    first = load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_secret(path)
