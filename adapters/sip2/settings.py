"""The libraries of the network, as the ``[backends.library]`` settings group describes them.

Each library is a row of ``options.libraries``; its login password is a credential named by its
network id (``credentials.<network_id>``), so it stays a secret everywhere settings are shown::

    [backends.library]
    timeout_s = 2.0
    credentials = { bj-xicheng = "sip-password" }

    [[backends.library.options.libraries]]
    network_id = "bj-xicheng"          # how callers name the library (GetPatronStatus)
    org_id = "lib-bj-002"              # its organisation in orgs.toml: sees its own fine amounts
    host = "sip.xicheng-lib.example"
    port = 6001
    tls = true                         # SIP2 over TLS, verified against ca_file (or the system)
    institution_id = "XCLIB"           # the AO field
    encoding = "utf-8"                 # cp850 is SIP2's traditional default
    terminator = "CR"                  # or "CRLF"
    login_user = "onecard"             # 93 login (CN); none: no login
    location = "ONECARD"               # 93 login location (CP)
    patron_id = "barcode"              # or "card_number"
    barcodes_file = "xicheng-barcodes.csv"   # card_number,barcode rows the library provides

This module validates that table (pydantic, strict: a trust boundary) into ``Library`` values.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from gateway.config import BackendSettings, ConfigError

NETWORK_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
TERMINATORS: Mapping[str, bytes] = {"CR": b"\r", "CRLF": b"\r\n"}

_Text = Annotated[StrictStr, Field(max_length=64, pattern=r"^[^|\r\n]*$")]


class LibrarySettings(BaseModel):
    """One library of the network, as written in the settings file (strict scalars; paths
    and lists as TOML gives them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    network_id: StrictStr = Field(pattern=NETWORK_ID_PATTERN)
    name: StrictStr = Field(default="", max_length=128)
    org_id: StrictStr | None = Field(default=None, pattern=NETWORK_ID_PATTERN)
    host: StrictStr = Field(min_length=1, max_length=253)
    port: StrictInt = Field(ge=1, le=65535)
    tls: StrictBool = False
    ca_file: Path | None = None
    institution_id: _Text
    encoding: StrictStr = "cp850"
    terminator: Literal["CR", "CRLF"] = "CR"
    login_user: _Text | None = None
    location: _Text = ""
    patron_id: Literal["card_number", "barcode"] = "card_number"
    barcodes_file: Path | None = None
    pool_size: StrictInt = Field(default=2, ge=1, le=16)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. cp850, utf-8)") from None


class LibraryOptions(BaseModel):
    """The ``options`` of ``[backends.library]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    libraries: tuple[LibrarySettings, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Library:
    """A library as the adapter uses it: its settings, its login password, its barcodes."""

    settings: LibrarySettings
    password: str = field(default="", repr=False)
    barcodes: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def network_id(self) -> str:
        return self.settings.network_id

    @property
    def terminator(self) -> bytes:
        return TERMINATORS[self.settings.terminator]

    def patron_identifier(self, card_number: str) -> str | None:
        """What this library knows the reader by; None: the library has no barcode for them."""
        if self.settings.patron_id == "card_number":
            return card_number
        return self.barcodes.get(card_number)


def libraries_from(settings: BackendSettings, group: str) -> tuple[Library, ...]:
    """The libraries of ``settings.options``; ``ConfigError`` naming the key when one is off."""
    try:
        options = LibraryOptions.model_validate(settings.options)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"backends.{group}.options.{where}: {error['msg']}") from None
    ids = [lib.network_id for lib in options.libraries]
    if duplicate := next((i for i in ids if ids.count(i) > 1), None):
        raise ConfigError(f"backends.{group}.options.libraries: {duplicate!r} is listed twice")
    if unknown := sorted(set(settings.credentials) - set(ids)):
        raise ConfigError(
            f"backends.{group}.credentials.{unknown[0]}: no library has this network id"
        )
    return tuple(
        Library(
            lib,
            password=_password(settings, lib),
            barcodes=_barcodes(lib, group) if lib.patron_id == "barcode" else {},
        )
        for lib in options.libraries
    )


def _password(settings: BackendSettings, lib: LibrarySettings) -> str:
    secret = settings.credentials.get(lib.network_id)
    return secret.get_secret_value() if secret is not None else ""


def _barcodes(lib: LibrarySettings, group: str) -> dict[str, str]:
    """``card_number,barcode`` rows (a header line allowed) from the library's mapping file."""
    where = f"backends.{group}.options.libraries[{lib.network_id}].barcodes_file"
    if lib.barcodes_file is None:
        raise ConfigError(f"{where}: patron_id = 'barcode' needs the library's mapping file")
    try:
        with lib.barcodes_file.open(encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {lib.barcodes_file} ({exc.strerror})") from None
    if rows and rows[0] == ["card_number", "barcode"]:
        rows = rows[1:]
    if bad := next((n for n, row in enumerate(rows, 1) if len(row) != 2 or not all(row)), None):
        raise ConfigError(f"{where}: data row {bad} is not card_number,barcode")
    return {card.strip().upper(): barcode.strip() for card, barcode in rows}
