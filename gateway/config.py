"""Configuration: a TOML file plus ``ONECARD_*`` environment variables, validated by pydantic.

Precedence: environment over file over defaults. Every default is the embedded set-up (SQLite
under ``var/``, the reference back ends started in-process, a development PKI created on first
start), and every address defaults to loopback.

    ONECARD_LISTEN_PORT=7443 onecard serve --config gateway.toml

A settings group per back end, named as in ``gateway.backends.BACKENDS`` (docs/operations.md):
``url`` (absent: its reference server, started in-process on 127.0.0.1), ``timeout_s`` (the cap
on each call to it; ``request_budget_s`` still bounds the whole request) and ``credentials``
(the names its adapter asks for; secret, never printed). A back end not named gets the defaults.

    [backends.social_insurance]
    url = "https://si.example.org"
    timeout_s = 1.5

    ONECARD_BACKENDS__SOCIAL_INSURANCE__URL=https://si.example.org   ("__" nests)

The flat ``social_insurance_url`` and ``backend_timeout_s`` of earlier versions still work,
as deprecated spellings of ``backends.social_insurance.url`` and ``.timeout_s`` (the gateway
logs ``setting_deprecated`` once at start); giving both spellings of one setting is an error.

Load settings (docs/operations.md): ``max_in_flight``, ``shed_audit_interval_s`` and, per org
type, a token bucket that the registry may override per organisation:

    [rate_limits.library]
    per_s = 20
    burst = 40

    ONECARD_RATE_LIMITS='{"library": {"per_s": 20, "burst": 40}}'   (types not named keep theirs)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.errors import SetupError
from gateway.orgs import OrgType, RateLimit

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"
_SHIPPED_POLICIES = Path(__file__).resolve().parent / "_policies"  # copied in by setup.py


def default_policies_dir() -> Path:
    """The policies an installed gateway ships with; in a source checkout, ``policies/``."""
    return _SHIPPED_POLICIES if _SHIPPED_POLICIES.is_dir() else REPO_POLICIES


class ConfigError(SetupError):
    """The configuration file or environment is invalid; the message says where and why."""


class RateLimitSetting(BaseModel):
    """A token bucket in the settings: ``per_s`` calls a second, ``burst`` at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_s: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)

    def limit(self) -> RateLimit:
        return RateLimit(self.per_s, self.burst)


class BackendSettings(BaseModel):
    """One back end's settings group, ``[backends.NAME]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None, min_length=1, description="None: its reference server, started in-process"
    )
    timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="cap on each call to this back end"
    )
    credentials: dict[str, SecretStr] = Field(
        default_factory=dict, description="what the adapter signs in with; names are its own"
    )
    keys_dir: Path | None = Field(
        default=None, description="where its reference keys are made; None: DATA_DIR/keys"
    )
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="further endpoints by name, for a back end read from several (FHIR)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the adapter's own settings (SIP2's libraries); the adapter validates them",
    )


# The flat settings of earlier versions: (back end, key of its group) each now spells.
_DEPRECATED: dict[str, tuple[str, str]] = {
    "social_insurance_url": ("social_insurance", "url"),
    "backend_timeout_s": ("social_insurance", "timeout_s"),
}


# Per organisation, by type. One gateway process answers a few hundred full requests a second
# on a small machine (docs/benchmarks.md): no single org's default may take all of it.
DEFAULT_RATE_LIMITS: dict[OrgType, RateLimitSetting] = {
    OrgType.HOSPITAL: RateLimitSetting(per_s=100, burst=200),
    OrgType.LIBRARY: RateLimitSetting(per_s=50, burst=100),
    OrgType.TRANSIT: RateLimitSetting(per_s=100, burst=200),
    OrgType.REGULATOR: RateLimitSetting(per_s=20, burst=40),
    OrgType.CITIZEN_APP: RateLimitSetting(per_s=200, burst=400),
}


class Settings(BaseSettings):
    """Every knob of ``onecard serve``."""

    model_config = SettingsConfigDict(
        env_prefix="ONECARD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(Path("var"), description="SQLite database, keys and the dev PKI")
    store: str = Field(
        "sqlite", description="the durable state's store: sqlite (DATA_DIR) or postgres"
    )
    database_url: str = Field(
        "", description='store = "postgres": its libpq DSN (onecard db upgrade migrates it)'
    )
    listen_host: str = Field("127.0.0.1", description="gRPC listen address")
    listen_port: int = Field(7443, ge=0, le=65535, description="gRPC port (0 picks one)")
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="None disables /metrics")
    pki_dir: Path | None = Field(None, description="defaults to DATA_DIR/pki (made if missing)")
    orgs_file: Path | None = Field(None, description="org registry; defaults to PKI_DIR/orgs.toml")
    policies_dir: Path = Field(
        default_factory=default_policies_dir, description="Cedar policies and schema"
    )
    backends: dict[str, BackendSettings] = Field(
        default_factory=dict,
        description="a settings group per back end; one not named gets BackendSettings()",
    )
    social_insurance_url: str | None = Field(
        None, description="deprecated spelling of backends.social_insurance.url"
    )
    backend_timeout_s: float | None = Field(
        None, gt=0, le=60, description="deprecated spelling of backends.social_insurance.timeout_s"
    )
    request_budget_s: float = Field(
        3.0, gt=0, le=120, description="cap on a whole request, every back-end call included"
    )
    token_ttl_s: int = Field(60, ge=10, le=600)
    max_message_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    utc_offset_hours: int = Field(8, ge=-12, le=14, description="time zone policies see")
    shutdown_grace_s: float = Field(5.0, ge=0, le=120)
    audit_origin: str = Field(
        "onecard.local/audit", description="the log's name in its checkpoints (C2SP origin)"
    )
    audit_checkpoint_interval_s: float = Field(1.0, ge=0, le=3600)
    max_in_flight: int = Field(
        128, ge=1, le=100_000, description="onecard.v1 calls admitted at once; beyond: shed"
    )
    max_in_flight_per_org: int = Field(
        32, ge=1, le=100_000, description="one organisation's calls in flight; beyond: shed"
    )
    rate_limits: dict[OrgType, RateLimitSetting] = Field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMITS),
        description="per-organisation token bucket by org type; the registry may override",
    )
    shed_audit_interval_s: float = Field(
        10.0, gt=0, le=3600, description="one audit entry per org and reason per interval"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @field_validator("rate_limits", mode="after")
    @classmethod
    def _keep_unnamed_types(
        cls, given: dict[OrgType, RateLimitSetting]
    ) -> dict[OrgType, RateLimitSetting]:
        return {**DEFAULT_RATE_LIMITS, **given}

    @model_validator(mode="before")
    @classmethod
    def _deprecated_into_groups(cls, data: Any) -> Any:
        """Copy each flat deprecated setting into its back end's group (both given: an error)."""
        if not isinstance(data, dict) or all(data.get(old) is None for old in _DEPRECATED):
            return data
        backends = dict(data.get("backends") or {})
        for old, (backend, key) in _DEPRECATED.items():
            if data.get(old) is None:
                continue
            group = backends.get(backend) or {}
            if isinstance(group, BackendSettings):
                group = group.model_dump(exclude_unset=True)
            if not isinstance(group, dict):
                continue  # not a table: the group's own validation says so
            if key in group:
                raise ValueError(
                    f"{old} is the deprecated spelling of backends.{backend}.{key}, and both "
                    f"are set: keep backends.{backend}.{key} only"
                )
            backends[backend] = {**group, key: data[old]}
        return {**data, "backends": backends}

    def deprecations(self) -> list[tuple[str, str]]:
        """The deprecated settings in use, each with the one that replaces it."""
        return [
            (old, f"backends.{backend}.{key}")
            for old, (backend, key) in _DEPRECATED.items()
            if getattr(self, old) is not None
        ]

    def backend(self, name: str) -> BackendSettings:
        """The settings group of back end ``name`` (the defaults when it has none)."""
        return self.backends.get(name) or BackendSettings()

    @property
    def effective_pki_dir(self) -> Path:
        return self.pki_dir if self.pki_dir is not None else self.data_dir / "pki"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Load the file (if any), apply the environment and ``overrides``, validate everything."""
    values: dict[str, object] = {}
    if config_file is not None:
        try:
            values = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{config_file}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: not valid TOML: {exc}") from None
    values.update(overrides)
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        where = f"{config_file} or " if config_file else ""
        lines = [_problem(e["loc"], e["msg"]) for e in exc.errors()]
        raise ConfigError(
            f"invalid configuration ({where}ONECARD_* environment):\n" + "\n".join(lines)
        ) from None


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One line of a ``ConfigError``: the setting, if the check was about one, and the problem."""
    where = ".".join(str(part) for part in loc)
    msg = msg.removeprefix("Value error, ")  # pydantic's prefix to a validator's own message
    return f"  {where}: {msg}" if where else f"  {msg}"
