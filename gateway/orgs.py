"""The organisation registry: which organisations may call the gateway, and as what.

Owns the ``Org`` value (id, type, name, district, status, an optional rate limit of its own),
the ``RateLimit`` value (a token bucket), the ``orgs.toml`` file format, its validation
(pydantic, strict, at this trust boundary only) and its writer. An org id is also a file name
(``clients/<org id>.pem``) and part of a certificate SAN URI, so its alphabet is narrow:
lowercase letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit.

    # OneCard organisation registry: who may call the gateway.
    # An org may have a rate limit of its own instead of its type's default (settings):
    #   rate_limit = { per_s = 400, burst = 800 }

    [[org]]
    id = "hosp-bj-001"
    type = "hospital"
    name = "Beijing Chaoyang Demo Hospital"
    district = "110105"
    status = "active"
    rate_limit = { per_s = 400, burst = 800 }   # optional: overrides the org type's default
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import SetupError

ORG_ID_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
DISTRICT_PATTERN = r"[0-9]{6}"
_ORG_ID = re.compile(ORG_ID_PATTERN)
_HEADER = (
    "# OneCard organisation registry: who may call the gateway.\n"
    "# An org may have a rate limit of its own instead of its type's default (settings):\n"
    "#   rate_limit = { per_s = 400, burst = 800 }\n"
)


class OrgType(enum.Enum):
    """What kind of organisation is calling; policies decide on this."""

    HOSPITAL = "hospital"
    LIBRARY = "library"
    TRANSIT = "transit"
    REGULATOR = "regulator"
    CITIZEN_APP = "citizen_app"


class OrgStatus(enum.Enum):
    """Whether a registered organisation may call now."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``per_s`` calls a second on average, up to ``burst`` at once."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_s > 0 and self.burst >= 1):
            raise ValueError(f"a rate limit needs per_s > 0 and burst >= 1, not {self}")


@dataclass(frozen=True, slots=True)
class Org:
    """A registered organisation. ``district`` is its 6-digit administrative division code.

    ``rate_limit`` overrides the default of its type (settings); None uses that default.
    """

    org_id: str
    org_type: OrgType
    name: str
    district: str
    status: OrgStatus = OrgStatus.ACTIVE
    rate_limit: RateLimit | None = None


class OrgRegistryError(SetupError):
    """The registry file, or a set of orgs, is invalid; the message says where and why."""


def is_valid_org_id(org_id: str) -> bool:
    """True if ``org_id`` is of the registry's form (safe as a file name and in a URI)."""
    return _ORG_ID.fullmatch(org_id) is not None


class OrgRegistry:
    """The registered organisations, by id. Immutable once built."""

    def __init__(self, orgs: Iterable[Org]) -> None:
        by_id: dict[str, Org] = {}
        for org in orgs:
            if not is_valid_org_id(org.org_id):
                raise OrgRegistryError(f"org id {org.org_id!r} is not of the form {ORG_ID_PATTERN}")
            if org.org_id in by_id:
                raise OrgRegistryError(f"org id {org.org_id!r} appears more than once")
            by_id[org.org_id] = org
        self._by_id = by_id

    @classmethod
    def load(cls, path: Path) -> OrgRegistry:
        """Read and validate ``path``; raises ``OrgRegistryError`` naming the file and entry."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise OrgRegistryError(f"{path}: no such org registry file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise OrgRegistryError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise OrgRegistryError(f"{path}: not valid TOML: {exc}") from None
        try:
            parsed = _RegistryFile.model_validate(data)
        except ValidationError as exc:
            lines = [_describe(path, data, e) for e in exc.errors()]
            raise OrgRegistryError("\n".join(lines)) from None
        if not parsed.org:
            raise OrgRegistryError(f"{path}: no [[org]] entries; nobody could call the gateway")
        _refuse_duplicates(path, parsed.org)
        return cls(entry.to_org() for entry in parsed.org)

    def get(self, org_id: str) -> Org | None:
        """The org registered under ``org_id``, or None."""
        return self._by_id.get(org_id)

    def __contains__(self, org_id: object) -> bool:
        return org_id in self._by_id

    def __iter__(self) -> Iterator[Org]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"OrgRegistry({len(self)} orgs)"


def dump_toml(orgs: Iterable[Org]) -> str:
    """The registry file for ``orgs``, in the order given; ``OrgRegistry.load`` reads it back."""
    blocks = [
        "[[org]]\n"
        f"id = {_toml_string(org.org_id)}\n"
        f"type = {_toml_string(org.org_type.value)}\n"
        f"name = {_toml_string(org.name)}\n"
        f"district = {_toml_string(org.district)}\n"
        f"status = {_toml_string(org.status.value)}\n"
        f"{_toml_rate_limit(org.rate_limit)}"
        for org in orgs
    ]
    return _HEADER + "".join("\n" + block for block in blocks)


# --- the file format, validated -------------------------------------------------------------

_Lenient = Field(strict=False)  # enums arrive from TOML as strings; still checked against values


class _RateLimitEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    per_s: Annotated[float, Field(gt=0, le=1_000_000, strict=False)]  # 50 is a float too
    burst: Annotated[int, Field(ge=1, le=1_000_000)]


class _OrgEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=f"^{ORG_ID_PATTERN}$")]
    type: Annotated[OrgType, _Lenient]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    district: Annotated[str, Field(pattern=f"^{DISTRICT_PATTERN}$")]
    status: Annotated[OrgStatus, _Lenient]
    rate_limit: _RateLimitEntry | None = None

    def to_org(self) -> Org:
        limit = self.rate_limit
        own = RateLimit(limit.per_s, limit.burst) if limit is not None else None
        return Org(self.id, self.type, self.name, self.district, self.status, own)


class _RegistryFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    org: list[_OrgEntry] = []


_ENUMS: dict[str, type[enum.Enum]] = {"type": OrgType, "status": OrgStatus}
_FORMS = {"id": ORG_ID_PATTERN, "district": "6 digits (administrative division code)"}
_KNOWN = "id, type, name, district, status, rate_limit"


def _describe(path: Path, data: dict[str, Any], error: Any) -> str:
    """One line per validation error: file, entry (index and id), field, what is wrong."""
    loc: tuple[int | str, ...] = error["loc"]
    if len(loc) < 2 or loc[0] != "org" or not isinstance(loc[1], int):
        where = ".".join(str(p) for p in loc) or "top level"
        return f"{path}: {where}: {error['msg']}"
    index = loc[1]
    entry = data["org"][index]
    ident = entry.get("id") if isinstance(entry, dict) else None
    label = f"org[{index}]" + (f" {ident!r}" if isinstance(ident, str) else "")
    field = ".".join(str(p) for p in loc[2:])
    return f"{path}: {label}: {_field_problem(field, error)}"


def _field_problem(field: str, error: Any) -> str:
    kind = error["type"]
    if not field:
        return f"must be a table ([[org]]), {error['msg'].lower()}"
    if kind == "missing":
        return f"{field} is missing"
    if kind == "extra_forbidden":
        known = "per_s, burst" if field.startswith("rate_limit.") else _KNOWN
        return f"{field} is not a known field (known: {known})"
    if field in _ENUMS:
        allowed = ", ".join(str(member.value) for member in _ENUMS[field])
        return f"{field} must be one of {allowed} (got {error['input']!r})"
    if kind == "string_pattern_mismatch" and field in _FORMS:
        return f"{field} must be {_FORMS[field]} (got {error['input']!r})"
    return f"{field}: {error['msg']} (got {error['input']!r})"


def _refuse_duplicates(path: Path, entries: list[_OrgEntry]) -> None:
    first_seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.id in first_seen:
            raise OrgRegistryError(
                f"{path}: org[{index}] {entry.id!r}: duplicate id "
                f"(already used by org[{first_seen[entry.id]}])"
            )
        first_seen[entry.id] = index


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_rate_limit(limit: RateLimit | None) -> str:
    if limit is None:
        return ""
    return f"rate_limit = {{ per_s = {limit.per_s!r}, burst = {limit.burst} }}\n"


def _toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
