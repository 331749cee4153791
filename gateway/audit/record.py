"""Audit records and their canonical leaf bytes (format: docs/audit-format.md).

A record is built once per exchange from what the stages found; its body is canonical JSON
(sorted keys, no whitespace, ASCII only). The log wraps the body with the entry's index and the
previous leaf's hash when it sequences the entry, and those bytes are the leaf: hashed once,
stored as they are, never re-serialised. The citizen appears only as a keyed pseudonym.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass, field, fields

RECORD_VERSION = 1
ZERO_HASH = bytes(32)


@dataclass(slots=True)
class Trail:
    """What the stages of one call found out, filled in as the call goes (never personal data)."""

    purpose: str = ""
    basis: str = ""
    basis_ref: str = ""
    emergency: bool = False
    subject: str = ""
    decision: str = ""
    policies: tuple[str, ...] = ()
    policy_set: str = ""
    backend: str = ""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One exchange, allowed or refused, as it goes into the log."""

    time: str
    request_id: str
    org: str
    org_type: str
    cert_sha256: str
    rpc: str
    outcome: str
    reason: str
    released_sha256: str
    latency_us: int
    purpose: str = ""
    basis: str = ""
    basis_ref: str = ""
    emergency: bool = False
    subject: str = ""
    decision: str = ""
    policies: tuple[str, ...] = field(default_factory=tuple)
    policy_set: str = ""
    backend: str = ""
    v: int = RECORD_VERSION

    def body(self) -> bytes:
        """The canonical JSON of this record."""
        return canonical_json({name: getattr(self, name) for name in _FIELDS})


_FIELDS = tuple(f.name for f in fields(AuditRecord))


def canonical_json(value: object) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_bytes(index: int, prev_leaf_hash: bytes, body: bytes) -> bytes:
    """The leaf for entry ``index``: ``{"i":index,"prev":"<hex>","r":<body>}``."""
    return b'{"i":%d,"prev":"%s","r":%s}' % (index, prev_leaf_hash.hex().encode(), body)


def rfc3339(moment: dt.datetime) -> str:
    """UTC time with microseconds, as records carry it."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Pseudonymizer:
    """Keyed pseudonyms of card holders: HMAC-SHA256(audit key, holder id), hex."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, holder_id: str) -> str:
        return hmac.new(self._key, holder_id.encode("utf-8"), hashlib.sha256).hexdigest()
