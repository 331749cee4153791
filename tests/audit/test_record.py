"""Audit records: the hand-written canonical body is exactly ``canonical_json`` of the fields."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.audit.record import (
    RECORD_SCHEMAS,
    RECORD_VERSION,
    AuditRecord,
    Pseudonymizer,
    canonical_json,
    leaf_bytes,
)

pytestmark = pytest.mark.usefixtures("loops")  # record_body in C, then in Python

BASE = AuditRecord(
    time="2026-11-24T17:33:40.659634Z",
    request_id="5accea05dd3440bf99a8cfc9ee01f479",
    org="hosp-bj-001",
    org_type="hospital",
    cert_sha256="ab" * 32,
    rpc="onecard.v1.InsuranceService/GetInsuranceStatus",
    outcome="OK",
    reason="",
    released_sha256="cd" * 32,
    latency_us=523,
)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"policies": ("a",), "emergency": True, "latency_us": 0},
        {"policies": ("hospital-reads", "guard/2"), "decision": "allow", "basis": "consent"},
        {"reason": 'quote " backslash \\ newline \n tab \t nul \x00'},
        {"org": "bibliothèque-ü", "purpose": "急诊", "backend": "\U0001f3e5"},
        {"request_id": "", "subject": "12" * 32, "v": 7, "latency_us": 10**15},
    ],
)
def test_body_is_the_canonical_json_of_the_fields(changes: dict[str, object]) -> None:
    record = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    assert record.body() == canonical_json(fields)
    assert json.loads(record.body()) == {
        k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()
    }
    assert record.body().isascii()


def test_leaf_wraps_the_body_with_index_and_previous_hash() -> None:
    body = BASE.body()
    leaf = leaf_bytes(41, bytes(range(32)), body)
    assert json.loads(leaf) == {"i": 41, "prev": bytes(range(32)).hex(), "r": json.loads(body)}
    assert leaf.endswith(body + b"}")


def test_pseudonyms_are_stable_per_key_and_differ_between_keys() -> None:
    first, second = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    assert first("PSN0001") == first("PSN0001") != first("PSN0002")
    assert first("PSN0001") != second("PSN0001")
    assert len(first("PSN0001")) == 64 and "PSN0001" not in first("PSN0001")


def test_the_schema_table_names_every_field_of_a_record_with_its_json_type() -> None:
    """``RECORD_SCHEMAS`` (what the verifier checks) is what ``AuditRecord.body`` writes."""
    types = {str: "string", int: "int", bool: "bool", list: "strings"}
    body = json.loads(dataclasses.replace(BASE, policies=("a",)).body())
    assert body.pop("v") == RECORD_VERSION
    # the back-link (an index or null) is the sequencer's: chain_leaves adds it to the body
    assert {key: types[type(value)] for key, value in body.items()} | {"back": "index"} == (
        RECORD_SCHEMAS[RECORD_VERSION]
    )
