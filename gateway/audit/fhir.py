"""Export of audit entries as FHIR R4 AuditEvent resources, in the IHE BALP style.

This module owns the mapping from one audit record (docs/audit-format.md) to one AuditEvent,
as plain JSON-ready dicts (no FHIR library at run time), and the JSON-lines export of a run of
leaves. It adds nothing the record does not hold: the citizen appears only as the record's
pseudonym, and the request body (which carries the card number) was never kept.

Shape, following IHE Basic Audit Log Patterns (BALP) "Query" / "PatientQuery":

- ``type`` audit-event-type ``rest``, ``subtype`` the gRPC method, ``action`` E (execute);
- agents: the calling organisation as the requestor (information recipient), the TLS client
  named by its certificate fingerprint (source role), the gateway (destination role);
- entities: the patient by pseudonym only, the query (the method, never the request body),
  the request id, and the log entry itself: its index and leaf hash (so a FHIR consumer can
  ask the log for an inclusion proof) with the policy decision as details.

An aggregate entry of admission control (record version 2: ``calls`` calls of one organisation
shed for one reason, ``rpc`` "") has no subtype and no query entity, and carries ``calls`` as a
detail of its log-entry entity; version 1 records (no ``calls``) are single calls.

BALP's profiles describe *successful* queries only ("failures are recorded differently"), so
``meta.profile`` is claimed for outcome OK alone; refusals and failures keep the same shape
without the claim. The record holds no network addresses, which BALP requires for the client
and server agents; those carry a data-absent-reason extension instead of a guessed value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from gateway.audit.rfc6962 import hash_leaf

__all__ = ["MalformedLeafError", "audit_event", "export_fhir"]

BALP_QUERY = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Query"
BALP_PATIENT_QUERY = (
    "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

ONECARD_RPC = "urn:onecard:rpc"
ONECARD_ORG = "urn:onecard:org"
ONECARD_ORG_TYPE = "urn:onecard:org-type"
ONECARD_CERT = "urn:onecard:cert-sha256"
ONECARD_LOG = "urn:onecard:log"
ONECARD_PSEUDONYM = "urn:onecard:pseudonym"
ONECARD_PURPOSE = "urn:onecard:purpose"
ONECARD_ENTITY_TYPE = "urn:onecard:entity-type"
ONECARD_LEAF = "urn:onecard:audit-leaf"

# Purposes of use (common.proto) that HL7 v3 ActReason defines, with its display strings.
_HL7_PURPOSES = {
    "TREAT": "treatment",
    "ETREAT": "Emergency Treatment",
    "COVERAGE": "coverage under policy or program",
    "HPAYMT": "healthcare payment",
    "PATRQT": "patient requested",
    "HCOMPL": "health compliance",
}
# Purposes HL7 has no code for: OneCard's own code system.
_ONECARD_PURPOSES = {
    "LIBRARY_SERVICE": "library service",
    "FARE_CONCESSION": "transit fare concession",
}

# AuditEvent.outcome (audit-event-outcome): 4 = the call was refused, the caller can fix it
# (HTTP 4xx); 8 = the gateway or a backend failed (HTTP 5xx). Names not listed map to 8.
_SUCCESS = "0"
_MINOR_FAILURE = "4"
_SERIOUS_FAILURE = "8"
_REFUSALS = frozenset(
    {
        "CANCELLED",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNAUTHENTICATED",
    }
)


class MalformedLeafError(ValueError):
    """A leaf is not ``{"i":<index>,"prev":"<hex>","r":{...}}`` for the index it is stored at."""


def audit_event(
    index: int, leaf_hash: bytes, record: Mapping[str, Any], *, log_origin: str
) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for log entry ``index`` (leaf hash ``leaf_hash``) of ``record``."""
    ok = record["outcome"] == "OK"
    subject = record["subject"]
    event: dict[str, Any] = {"resourceType": "AuditEvent", "id": f"onecard-{index}"}
    if ok:
        event["meta"] = {"profile": [BALP_PATIENT_QUERY if subject else BALP_QUERY]}
    event["type"] = _coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation")
    if record["rpc"]:
        event["subtype"] = [_coding(ONECARD_RPC, record["rpc"], record["rpc"].rpartition("/")[2])]
    event |= {
        "action": "E",
        "recorded": record["time"],
        "outcome": outcome_code(record["outcome"]),
    }
    if record["reason"]:
        event["outcomeDesc"] = record["reason"]
    purposes = _purposes_of_event(record["purpose"], emergency=record["emergency"])
    if purposes:
        event["purposeOfEvent"] = purposes
    gateway = _gateway_reference(log_origin)
    event["agent"] = [_requestor(record), _client(record), _server(gateway)]
    event["source"] = {
        "site": log_origin,
        "observer": gateway,
        "type": [_coding(SECURITY_SOURCE_TYPE, "4", "Application Server")],
    }
    event["entity"] = _entities(index, leaf_hash, record)
    return event


def outcome_code(status: str) -> str:
    """The audit-event-outcome code for a gRPC status code name."""
    if status == "OK":
        return _SUCCESS
    if status in _REFUSALS:
        return _MINOR_FAILURE
    return _SERIOUS_FAILURE


def export_fhir(leaves: Iterable[tuple[int, bytes]], out: TextIO, *, log_origin: str) -> int:
    """Write one AuditEvent per leaf to ``out`` as JSON lines; return how many were written."""
    count = 0
    for index, leaf in leaves:
        record = _record_of(index, leaf)
        event = audit_event(index, hash_leaf(leaf), record, log_origin=log_origin)
        out.write(json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def _record_of(index: int, leaf: bytes) -> Mapping[str, Any]:
    try:
        entry = json.loads(leaf)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedLeafError(f"malformed leaf {index}: not JSON") from exc
    if not isinstance(entry, dict) or not isinstance(entry.get("r"), dict):
        raise MalformedLeafError(f"malformed leaf {index}: no record")
    if entry.get("i") != index:
        raise MalformedLeafError(f"malformed leaf {index}: it says index {entry.get('i')!r}")
    record: Mapping[str, Any] = entry["r"]
    return record


def _coding(system: str, code: str, display: str = "") -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, display: str = "") -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _purposes_of_event(purpose: str, *, emergency: bool) -> list[dict[str, Any]]:
    purposes = []
    if purpose in _HL7_PURPOSES:
        purposes.append(_concept(ACT_REASON, purpose, _HL7_PURPOSES[purpose]))
    elif purpose:
        purposes.append(_concept(ONECARD_PURPOSE, purpose, _ONECARD_PURPOSES.get(purpose, "")))
    if emergency and purpose != "ETREAT":
        purposes.append(_concept(ACT_REASON, "ETREAT", _HL7_PURPOSES["ETREAT"]))
    return purposes


def _unknown_network() -> dict[str, Any]:
    # BALP requires agent.network for client and server; the record keeps no addresses.
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}


def _gateway_reference(log_origin: str) -> dict[str, Any]:
    return {
        "identifier": {"system": ONECARD_LOG, "value": log_origin},
        "display": "OneCard gateway",
    }


def _requestor(record: Mapping[str, Any]) -> dict[str, Any]:
    """The calling organisation: BALP's "user" agent (information recipient, requestor)."""
    org, org_type = record["org"], record["org_type"]
    agent: dict[str, Any] = {
        "type": _concept(PARTICIPATION_TYPE, "IRCP", "information recipient"),
        "who": (
            {"identifier": {"system": ONECARD_ORG, "value": org}}
            if org
            else {"display": "organisation not named by its certificate"}
        ),
        "requestor": True,
    }
    if org_type:
        agent["role"] = [_concept(ONECARD_ORG_TYPE, org_type)]
    return agent


def _client(record: Mapping[str, Any]) -> dict[str, Any]:
    """The TLS client, named by its certificate: BALP's "client" agent (source role)."""
    cert = record["cert_sha256"]
    return {
        "type": _concept(DCM, "110153", "Source Role ID"),
        "who": (
            {"identifier": {"system": ONECARD_CERT, "value": cert}}
            if cert
            else {"display": "client certificate not recorded"}
        ),
        "requestor": False,
        "network": _unknown_network(),
    }


def _server(gateway: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway: BALP's "server" agent (destination role)."""
    return {
        "type": _concept(DCM, "110152", "Destination Role ID"),
        "who": dict(gateway),
        "requestor": False,
        "network": _unknown_network(),
    }


def _entities(index: int, leaf_hash: bytes, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    entities = []
    if record["subject"]:
        entities.append(
            {
                "what": {
                    "type": "Patient",
                    "identifier": {"system": ONECARD_PSEUDONYM, "value": record["subject"]},
                },
                "type": _coding(AUDIT_ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    # The query is the method: the request body carries the card number and is not kept.
    rpc = record["rpc"]
    if rpc:
        entities.append(
            {
                "type": _coding(AUDIT_ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "24", "Query"),
                "description": rpc,
                "query": base64.b64encode(rpc.encode()).decode("ascii"),
            }
        )
    if record["request_id"]:
        entities.append(
            {
                "type": _coding(BALP_ENTITY_TYPE, "XrequestId"),
                "what": {"identifier": {"value": record["request_id"]}},
            }
        )
    entities.append(
        {
            "type": _coding(ONECARD_ENTITY_TYPE, "audit-log-entry", "OneCard audit log entry"),
            "what": {"identifier": {"system": ONECARD_LEAF, "value": f"{index}:{leaf_hash.hex()}"}},
            "detail": _decision_details(record),
        }
    )
    return entities


def _decision_details(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """What the gateway decided and on what ground, as (type, valueString) pairs."""
    pairs = [("decision", record["decision"])]
    pairs += [("policy", policy) for policy in record["policies"]]
    pairs += [
        ("policy_set", record["policy_set"]),
        ("basis", record["basis"]),
        ("basis_ref", record["basis_ref"]),
        ("break-glass", "true" if record["emergency"] else "false"),
        ("backend", record["backend"]),
        ("grpc_status", record["outcome"]),
        ("released_sha256", record["released_sha256"]),
    ]
    calls = record.get("calls", 1)  # version 1 records have none: one call each
    if calls != 1:
        pairs.append(("calls", str(calls)))
    # FHIR has no empty strings: an absent value is an absent detail.
    return [{"type": kind, "valueString": value} for kind, value in pairs if value]
