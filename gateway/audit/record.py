"""Audit records and their canonical leaf bytes (format: docs/audit-format.md).

A record is built once per exchange from what the stages found; its body is canonical JSON
(sorted keys, no whitespace, ASCII only). The log wraps the body with the entry's index and the
previous leaf's hash when it sequences the entry, and those bytes are the leaf: hashed once,
stored as they are, never re-serialised. The citizen appears only as a keyed pseudonym.

From record version 3 on, the record also carries ``back``: the index of the previous entry
about the same ``subject`` (``null`` for the first, and for a record without a subject). Only
the sequencer knows it, so the body is built without it and ``chain_leaves`` splices it in as
the record's first key (``"back"`` sorts before ``"backend"``), keeping the body canonical.
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
    "NO_BACK",
    "RECORD_SCHEMAS",
    "RECORD_VERSION",
    "ZERO_HASH",
    "AuditRecord",
    "Pseudonymizer",
    "canonical_json",
    "chain_leaves",
    "leaf_bytes",
    "leaf_link",
    "py_chain_leaves",
    "py_record_body",
    "record_body",
    "rfc3339",
    "with_back",
]

RECORD_VERSION = 3
ZERO_HASH = bytes(32)
NO_BACK = -1
"""A ``chain_leaves`` back-link that leaves the body as it is (a record of version < 3)."""

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
    # the data category read, and the index of the previous entry about the subject (or null)
    3: {**_V1, "calls": "int", "category": "string", "back": "index"},
}
"""The leaf format's record (docs/audit-format.md), per record version ``v``: every key and its
JSON type (``string``, ``int``, ``bool``, ``strings``: a list of strings, ``index``: a
non-negative integer or ``null``); ``v`` itself is
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
    category: str = ""
    v: int = RECORD_VERSION

    def body(self) -> bytes:
        """The canonical JSON of this record: ``canonical_json`` of its fields, byte for byte.

        It runs once per exchange on the event loop: ``record_body``, in C where it is built.
        A version 3 record's ``back`` is not among them: ``chain_leaves`` adds it.
        """
        return record_body(self)


def py_record_body(record: AuditRecord) -> bytes:
    """``AuditRecord.body``, written out by hand: about four times faster than building a dict
    for ``json.dumps``. The keys are in sorted order; strings go through the C escaper
    ``json.dumps`` itself uses."""
    r, q = record, _quote
    return (
        f'{{"backend":{q(r.backend)},"basis":{q(r.basis)},'
        f'"basis_ref":{q(r.basis_ref)},"calls":{int(r.calls)},"category":{q(r.category)},'
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


def leaf_bytes(index: int, prev_leaf_hash: bytes, body: bytes, back: int | None = NO_BACK) -> bytes:
    """The leaf for entry ``index``: ``{"i":index,"prev":"<hex>","r":<body>}``, the body with
    its back-link first unless ``back`` is ``NO_BACK`` (``with_back``)."""
    body = with_back(body, back)
    return b'{"i":%d,"prev":"%s","r":%s}' % (index, prev_leaf_hash.hex().encode(), body)


def with_back(body: bytes, back: int | None) -> bytes:
    """``body`` with ``"back":<back>`` (``null`` for None) as its first key; ``NO_BACK``: as is."""
    if back == NO_BACK:
        return body
    if back is not None and (not isinstance(back, int) or back < 0):
        raise ValueError(f"chain_leaves: back-link {back!r} is not an index, None or NO_BACK")
    if not body.startswith(b"{"):
        raise ValueError("chain_leaves: a body with a back-link must be a JSON object")
    return b'{"back":%s,%s' % (b"null" if back is None else b"%d" % back, body[1:])


def leaf_link(leaf: bytes) -> tuple[int, str, int | None]:
    """A leaf's index, its record's subject and back-link (None: null, or a record before
    version 3). Raises ``ValueError`` for bytes that are not a leaf."""
    try:
        parsed = json.loads(leaf)
        record = parsed["r"]
        index, subject, back = int(parsed["i"]), str(record["subject"]), record.get("back")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a leaf of the audit format: {exc}") from None
    if back is not None and (not isinstance(back, int) or isinstance(back, bool) or back < 0):
        raise ValueError(f"leaf {index}: back-link {back!r} is not an index")
    return index, subject, back


def py_chain_leaves(
    bodies: list[bytes], index: int, prev: bytes, backs: list[int | None] | None = None
) -> tuple[list[bytes], list[bytes]]:
    """The leaves of entries ``index, index + 1, ...`` with ``bodies``, and their leaf hashes.

    ``prev`` is the leaf hash of entry ``index - 1`` (``ZERO_HASH`` before entry 0); each
    leaf's hash is the next one's ``prev``. ``backs``, if given, holds each body's back-link
    (``with_back``: an index, None for ``null``, or ``NO_BACK``). ``chain_leaves`` is this, in
    C where it is built.
    """
    if index < 0:
        raise ValueError(f"chain_leaves: index {index} is negative")
    if len(prev) != len(ZERO_HASH):
        raise ValueError(f"chain_leaves: prev has {len(prev)} bytes, not {len(ZERO_HASH)}")
    for body in bodies:
        if not isinstance(body, bytes):
            raise TypeError(f"each body must be bytes, not {type(body).__name__}")
    if backs is not None and len(backs) != len(bodies):
        raise ValueError(f"chain_leaves: {len(backs)} back-links for {len(bodies)} bodies")
    linked = bodies if backs is None else list(map(with_back, bodies, backs))
    leaves, hashes = [], []
    for i, body in enumerate(linked, index):
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
