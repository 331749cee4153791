"""FHIR R4 AuditEvent export of audit entries (IHE BALP style)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.fhir import MalformedLeafError, audit_event, export_fhir, outcome_code

FIXTURES = Path(__file__).parent / "fixtures"
ORIGIN = "onecard.example.gov.cn/audit"

# A hospital checks insurance at registration with the citizen's e-card token (the example row
# of docs/audit-format.md: its time, rpc, purpose and backend; the hashes are made up).
RECORD: dict[str, Any] = {
    "v": 1,
    "time": "2026-11-24T17:33:40.659634Z",
    "request_id": "req-7f3c2a90",
    "org": "beijing-union-hospital",
    "org_type": "hospital",
    "cert_sha256": "c3d4e5f6" * 8,
    "rpc": "onecard.v1.InsuranceService/GetInsuranceStatus",
    "purpose": "COVERAGE",
    "basis": "card_present",
    "basis_ref": "token:5d41402abc4b2a76",
    "emergency": False,
    "subject": "5e0a1f2b" * 8,
    "decision": "allow",
    "policies": ["insurance-coverage-card-present"],
    "policy_set": "9a8b7c6d" * 8,
    "backend": "social_insurance",
    "outcome": "OK",
    "reason": "",
    "released_sha256": "d1e2f3a4" * 8,
    "latency_us": 1830,
}
INDEX = 41
LEAF = b'{"i":41,"prev":"%s","r":%s}' % (
    b"ab" * 32,
    json.dumps(RECORD, sort_keys=True, separators=(",", ":")).encode(),
)
LEAF_HASH = bytes.fromhex("1ce3d4e0c5264666275897f7794f31417258125b0b22ec832f56d29ea33fcedb")

RESIDENT_ID = re.compile(r"\d{17}[\dXx]")


def record(**changes: Any) -> dict[str, Any]:
    return RECORD | changes


def event_of(rec: dict[str, Any]) -> dict[str, Any]:
    return audit_event(INDEX, LEAF_HASH, rec, log_origin=ORIGIN)


REFUSED = record(
    outcome="PERMISSION_DENIED",
    reason="policy_denied",
    decision="deny",
    policies=[],
    backend="",
    released_sha256="",
)
BACKEND_DOWN = record(outcome="UNAVAILABLE", reason="backend_unavailable", released_sha256="")
NO_CARD = record(
    outcome="INVALID_ARGUMENT",
    reason="card_number_invalid",
    subject="",
    basis="",
    basis_ref="",
    decision="",
    policies=[],
    policy_set="",
    backend="",
    released_sha256="",
)
EMERGENCY = record(
    rpc="onecard.v1.HealthRecordService/ListDiagnosticReports",
    purpose="ETREAT",
    basis="emergency",
    basis_ref="emergency:PATIENT_INCAPACITATED",
    emergency=True,
    policies=["health-records-break-glass"],
    backend="health_records",
)
LIBRARY = record(
    org="city-library-07",
    org_type="library",
    rpc="onecard.v1.CardService/VerifyCard",
    purpose="LIBRARY_SERVICE",
    backend="social_insurance",
)
UNNAMED_CALLER = record(org="", org_type="", cert_sha256="", request_id="", purpose="")
# Version 2: admission control's aggregate of the calls of one org it shed in one interval.
SHED = record(
    v=2,
    calls=7312,
    rpc="",
    outcome="RESOURCE_EXHAUSTED",
    reason="rate_limited",
    cert_sha256="",
    purpose="",
    subject="",
    basis="",
    basis_ref="",
    decision="",
    policies=[],
    policy_set="",
    backend="",
    released_sha256="",
    latency_us=0,
)
VARIANTS = {
    "insurance_query": RECORD,
    "refused": REFUSED,
    "backend_down": BACKEND_DOWN,
    "no_card": NO_CARD,
    "emergency": EMERGENCY,
    "library": LIBRARY,
    "unnamed_caller": UNNAMED_CALLER,
    "shed": SHED,
}

try:
    from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
except ImportError:  # pragma: no cover - depends on the environment
    FhirAuditEvent = None


def assert_valid_r4(event: dict[str, Any]) -> None:
    if FhirAuditEvent is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fhir.resources is not installed: CI must validate the AuditEvents")
        pytest.skip("fhir.resources not installed (pip install fhir.resources)")
    model = FhirAuditEvent.model_validate(event)
    # Nothing was dropped or reshaped on the way in: every element is a real R4 element.
    assert model.model_dump(mode="json", exclude_none=True) == event


def entities_of_type(event: dict[str, Any], system: str) -> list[dict[str, Any]]:
    return [e for e in event["entity"] if e["type"]["system"] == system]


def details(event: dict[str, Any]) -> dict[str, list[str]]:
    (entry,) = entities_of_type(event, "urn:onecard:entity-type")
    found: dict[str, list[str]] = {}
    for detail in entry["detail"]:
        found.setdefault(detail["type"], []).append(detail["valueString"])
    return found


def purpose_codes(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (concept["coding"][0]["system"], concept["coding"][0]["code"])
        for concept in event.get("purposeOfEvent", [])
    ]


# -- golden ---------------------------------------------------------------------------------


def test_the_leaf_hash_of_the_golden_leaf() -> None:
    assert hashlib.sha256(b"\x00" + LEAF).digest() == LEAF_HASH


def test_an_insurance_query_gives_the_expected_audit_event() -> None:
    expected = json.loads((FIXTURES / "auditevent_insurance_query.json").read_text("utf-8"))
    assert event_of(RECORD) == expected


def test_export_writes_the_same_event_as_one_compact_sorted_line() -> None:
    expected = json.loads((FIXTURES / "auditevent_insurance_query.json").read_text("utf-8"))
    out = io.StringIO()

    count = export_fhir([(INDEX, LEAF)], out, log_origin=ORIGIN)

    assert count == 1
    line = json.dumps(expected, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert out.getvalue() == line + "\n"


def test_export_writes_one_line_per_leaf_in_order() -> None:
    second = b'{"i":42,"prev":"%s","r":%s}' % (
        LEAF_HASH.hex().encode(),
        json.dumps(REFUSED, sort_keys=True, separators=(",", ":")).encode(),
    )
    out = io.StringIO()

    assert export_fhir([(INDEX, LEAF), (42, second)], out, log_origin=ORIGIN) == 2

    ids = [json.loads(line)["id"] for line in out.getvalue().splitlines()]
    assert ids == ["onecard-41", "onecard-42"]


def test_export_of_nothing_writes_nothing() -> None:
    out = io.StringIO()
    assert export_fhir([], out, log_origin=ORIGIN) == 0
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("index", "leaf", "message"),
    [
        (40, LEAF, "it says index 41"),
        (INDEX, LEAF[:-1], "not JSON"),
        (INDEX, b"\xff", "not JSON"),
        (INDEX, b'{"i":41,"prev":"00","r":[]}', "no record"),
        (INDEX, b"[41]", "no record"),
    ],
)
def test_export_refuses_a_malformed_leaf(index: int, leaf: bytes, message: str) -> None:
    with pytest.raises(MalformedLeafError, match=message):
        export_fhir([(index, leaf)], io.StringIO(), log_origin=ORIGIN)


# -- validity -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_event_is_a_valid_r4_audit_event(name: str) -> None:
    assert_valid_r4(event_of(VARIANTS[name]))


# -- outcome --------------------------------------------------------------------------------


def test_ok_is_success_and_claims_balp() -> None:
    event = event_of(RECORD)
    assert event["outcome"] == "0"
    assert "outcomeDesc" not in event
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
    ]


def test_a_refusal_is_a_minor_failure_with_its_reason() -> None:
    event = event_of(REFUSED)
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "policy_denied"
    assert details(event)["grpc_status"] == ["PERMISSION_DENIED"]
    assert details(event)["decision"] == ["deny"]


def test_a_backend_failure_is_a_serious_failure() -> None:
    event = event_of(BACKEND_DOWN)
    assert event["outcome"] == "8"
    assert event["outcomeDesc"] == "backend_unavailable"


def test_failures_do_not_claim_the_balp_success_profiles() -> None:
    # BALP's Query profiles fix outcome to success; "failures are recorded differently".
    for rec in (REFUSED, BACKEND_DOWN, NO_CARD):
        assert "meta" not in event_of(rec)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("OK", "0"),
        ("PERMISSION_DENIED", "4"),
        ("INVALID_ARGUMENT", "4"),
        ("FAILED_PRECONDITION", "4"),
        ("NOT_FOUND", "4"),
        ("UNAUTHENTICATED", "4"),
        ("RESOURCE_EXHAUSTED", "4"),
        ("UNAVAILABLE", "8"),
        ("DEADLINE_EXCEEDED", "8"),
        ("INTERNAL", "8"),
        ("UNKNOWN", "8"),
        ("DATA_LOSS", "8"),
        ("NOT_A_STATUS", "8"),
    ],
)
def test_outcome_codes(status: str, code: str) -> None:
    assert outcome_code(status) == code


# -- patient --------------------------------------------------------------------------------


def test_the_patient_is_named_by_pseudonym_only() -> None:
    (patient,) = [e for e in event_of(RECORD)["entity"] if e["type"]["code"] == "1"]
    assert patient["role"]["code"] == "1"
    assert patient["what"] == {
        "type": "Patient",
        "identifier": {"system": "urn:onecard:pseudonym", "value": RECORD["subject"]},
    }


def test_no_subject_means_no_patient_entity() -> None:
    event = event_of(NO_CARD)
    assert all(e.get("role", {}).get("code") != "1" for e in event["entity"])
    assert "urn:onecard:pseudonym" not in json.dumps(event)


def test_a_successful_call_without_a_subject_claims_the_plain_query_profile() -> None:
    event = event_of(record(subject=""))
    assert event["meta"]["profile"] == [
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Query"
    ]


# -- purpose and emergency ------------------------------------------------------------------


def test_hl7_purposes_use_v3_act_reason() -> None:
    act_reason = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
    for purpose in ("TREAT", "ETREAT", "COVERAGE", "HPAYMT", "PATRQT", "HCOMPL"):
        assert purpose_codes(event_of(record(purpose=purpose))) == [(act_reason, purpose)]


def test_onecard_purposes_use_the_onecard_code_system() -> None:
    event = event_of(LIBRARY)
    assert event["purposeOfEvent"] == [
        {
            "coding": [
                {
                    "system": "urn:onecard:purpose",
                    "code": "LIBRARY_SERVICE",
                    "display": "library service",
                }
            ]
        }
    ]
    fare = event_of(record(purpose="FARE_CONCESSION"))
    assert purpose_codes(fare) == [("urn:onecard:purpose", "FARE_CONCESSION")]


def test_no_purpose_means_no_purpose_of_event() -> None:
    assert "purposeOfEvent" not in event_of(UNNAMED_CALLER)


def test_emergency_access_is_flagged() -> None:
    event = event_of(EMERGENCY)
    act_reason = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
    assert purpose_codes(event) == [(act_reason, "ETREAT")]
    assert details(event)["break-glass"] == ["true"]
    assert details(event)["basis_ref"] == ["emergency:PATIENT_INCAPACITATED"]


def test_emergency_adds_etreat_to_another_purpose() -> None:
    event = event_of(record(purpose="TREAT", emergency=True))
    act_reason = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
    assert purpose_codes(event) == [(act_reason, "TREAT"), (act_reason, "ETREAT")]


def test_ordinary_access_is_not_flagged() -> None:
    assert details(event_of(RECORD))["break-glass"] == ["false"]


# -- agents and the log ---------------------------------------------------------------------


def test_the_calling_organisation_is_the_requestor() -> None:
    agents = event_of(RECORD)["agent"]
    requestors = [agent for agent in agents if agent["requestor"]]
    assert requestors == [agents[0]]
    assert agents[0]["who"] == {
        "identifier": {"system": "urn:onecard:org", "value": "beijing-union-hospital"}
    }
    assert agents[0]["role"][0]["coding"][0] == {
        "system": "urn:onecard:org-type",
        "code": "hospital",
    }


def test_the_gateway_is_an_agent_and_the_observer() -> None:
    event = event_of(RECORD)
    gateway = {
        "identifier": {"system": "urn:onecard:log", "value": ORIGIN},
        "display": "OneCard gateway",
    }
    assert event["agent"][2]["who"] == gateway
    assert event["agent"][2]["requestor"] is False
    assert event["source"]["observer"] == gateway
    assert event["source"]["site"] == ORIGIN


def test_the_log_entry_ties_back_to_the_merkle_leaf() -> None:
    (entry,) = entities_of_type(event_of(RECORD), "urn:onecard:entity-type")
    assert entry["what"]["identifier"] == {
        "system": "urn:onecard:audit-leaf",
        "value": f"{INDEX}:{LEAF_HASH.hex()}",
    }
    assert event_of(RECORD)["id"] == f"onecard-{INDEX}"


def test_empty_record_fields_leave_no_empty_strings() -> None:
    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return []

    for rec in (NO_CARD, UNNAMED_CALLER, SHED):
        assert "" not in strings(event_of(rec))


def test_a_shed_aggregate_says_how_many_calls_and_why() -> None:
    event = event_of(SHED)
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "rate_limited"
    assert "subtype" not in event  # no one RPC: the entry covers every RPC the org called
    (entry,) = entities_of_type(event, "urn:onecard:entity-type")
    assert {"type": "calls", "valueString": "7312"} in entry["detail"]
    assert {"type": "calls", "valueString": "1"} not in entry["detail"]


def test_a_single_call_carries_no_calls_detail_in_either_version() -> None:
    for rec in (RECORD, record(v=2, calls=1)):
        (entry,) = entities_of_type(event_of(rec), "urn:onecard:entity-type")
        assert all(detail["type"] != "calls" for detail in entry["detail"])


# -- personal data --------------------------------------------------------------------------


def test_the_id_number_scan_catches_an_id_number() -> None:
    assert RESIDENT_ID.search('{"x":"11010519491231002X"}')
    assert RESIDENT_ID.search("110101199003074477")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_no_raw_identifier_appears(name: str) -> None:
    out = io.StringIO()
    leaf = b'{"i":41,"prev":"%s","r":%s}' % (
        b"ab" * 32,
        json.dumps(VARIANTS[name], sort_keys=True, separators=(",", ":")).encode(),
    )
    export_fhir([(INDEX, leaf)], out, log_origin=ORIGIN)
    assert not RESIDENT_ID.search(out.getvalue())
