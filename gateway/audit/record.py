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
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote

from gateway.audit._accel import NATIVE
from gateway.audit.rfc6962 import hash_leaf

__all__ = [
    "RECORD_SCHEMAS",
    "RECORD_VERSION",
    "ZERO_HASH",
    "AuditRecord",
    "Pseudonymizer",
    "canonical_json",
    "chain_leaves",
    "leaf_bytes",
    "py_chain_leaves",
    "py_record_body",
    "record_body",
    "rfc3339",
]

RECORD_VERSION = 2
ZERO_HASH = bytes(32)

_V1: dict[str, str] = {
    "time": "string",
    "request_id": "string",
    "org": "string",
    "org_type": "string",
    "cert_sha256": "string",
    "rpc": "string",
    "purpose": "string",
    "basis": "string",
    "basis_ref": "string",
    "emergency": "bool",
    "subject": "string",
    "decision": "string",
    "policies": "strings",
    "policy_set": "string",
    "backend": "string",
    "outcome": "string",
    "reason": "string",
    "released_sha256": "string",
    "latency_us": "int",
}

RECORD_SCHEMAS: dict[int, dict[str, str]] = {
    1: _V1,
    2: {**_V1, "calls": "int"},  # how many calls the entry stands for (shed calls, in aggregate)
}
"""The leaf format's record (docs/audit-format.md), per record version ``v``: every key and its
JSON type (``string``, ``int``, ``bool``, ``strings``: a list of strings); ``v`` itself is
implied. The verifier refuses a record that is not exactly one of these (keys sorted, canonical
JSON). A new version is one line: ``2: {**_V1, "new_key": "int"},``."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One exchange, allowed or refused, as it goes into the log (``calls`` 1); or, written by
    admission control, ``calls`` calls of one organisation that it shed for one reason."""

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
    calls: int = 1
    v: int = RECORD_VERSION

    def body(self) -> bytes:
        """The canonical JSON of this record: ``canonical_json`` of its fields, byte for byte.

        It runs once per exchange on the event loop: ``record_body``, in C where it is built.
        """
        return record_body(self)


def py_record_body(record: AuditRecord) -> bytes:
    """``AuditRecord.body``, written out by hand: about four times faster than building a dict
    for ``json.dumps``. The keys are in sorted order; strings go through the C escaper
    ``json.dumps`` itself uses."""
    r, q = record, _quote
    return (
        f'{{"backend":{q(r.backend)},"basis":{q(r.basis)},'
        f'"basis_ref":{q(r.basis_ref)},"calls":{int(r.calls)},'
        f'"cert_sha256":{q(r.cert_sha256)},'
        f'"decision":{q(r.decision)},"emergency":{"true" if r.emergency else "false"},'
        f'"latency_us":{int(r.latency_us)},"org":{q(r.org)},'
        f'"org_type":{q(r.org_type)},"outcome":{q(r.outcome)},'
        f'"policies":[{",".join(map(q, r.policies))}],'
        f'"policy_set":{q(r.policy_set)},"purpose":{q(r.purpose)},'
        f'"reason":{q(r.reason)},"released_sha256":{q(r.released_sha256)},'
        f'"request_id":{q(r.request_id)},"rpc":{q(r.rpc)},'
        f'"subject":{q(r.subject)},"time":{q(r.time)},"v":{int(r.v)}}}'
    ).encode("ascii")


def canonical_json(value: object) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_bytes(index: int, prev_leaf_hash: bytes, body: bytes) -> bytes:
    """The leaf for entry ``index``: ``{"i":index,"prev":"<hex>","r":<body>}``."""
    return b'{"i":%d,"prev":"%s","r":%s}' % (index, prev_leaf_hash.hex().encode(), body)


def py_chain_leaves(
    bodies: list[bytes], index: int, prev: bytes
) -> tuple[list[bytes], list[bytes]]:
    """The leaves of entries ``index, index + 1, ...`` with ``bodies``, and their leaf hashes.

    ``prev`` is the leaf hash of entry ``index - 1`` (``ZERO_HASH`` before entry 0); each
    leaf's hash is the next one's ``prev``. ``chain_leaves`` is this, in C where it is built.
    """
    if index < 0:
        raise ValueError(f"chain_leaves: index {index} is negative")
    if len(prev) != len(ZERO_HASH):
        raise ValueError(f"chain_leaves: prev has {len(prev)} bytes, not {len(ZERO_HASH)}")
    for body in bodies:
        if not isinstance(body, bytes):
            raise TypeError(f"each body must be bytes, not {type(body).__name__}")
    leaves, hashes = [], []
    for i, body in enumerate(bodies, index):
        leaf = leaf_bytes(i, prev, body)
        prev = hash_leaf(leaf)
        leaves.append(leaf)
        hashes.append(prev)
    return leaves, hashes


if NATIVE:
    from gateway.audit._native import chain_leaves, record_body
else:
    chain_leaves, record_body = py_chain_leaves, py_record_body


def rfc3339(moment: dt.datetime) -> str:
    """UTC time with microseconds, as records carry it."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Pseudonymizer:
    """Keyed pseudonyms of card holders: HMAC-SHA256(audit key, holder id), hex."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, holder_id: str) -> str:
        return hmac.new(self._key, holder_id.encode("utf-8"), hashlib.sha256).hexdigest()
