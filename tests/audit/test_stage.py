"""The audit stage: findings become record fields by name; an answer's token is redeemed."""

from __future__ import annotations

import dataclasses
import datetime as dt

from gateway.audit.log import TokenSpend
from gateway.audit.record import AuditRecord
from gateway.audit.stage import AuditStage
from gateway.findings import Findings
from tests.gateway.fakes import FakeAuditLog

FOUND = Findings(
    purpose="COVERAGE",
    basis="card_present",
    basis_ref="token:ab",
    emergency=False,
    subject="5b" * 32,
    decision="allow",
    policies=("hospital-reads-insurance-status",),
    policy_set="27" * 32,
    backend="social_insurance",
    spend=TokenSpend(b"t" * 16, 2_000_000_000),
)


def test_every_finding_but_the_spend_is_a_record_field() -> None:
    findings = {f.name for f in dataclasses.fields(Findings)}
    assert findings - set(AuditRecord.__dataclass_fields__) == {"spend"}


async def _record(stage: AuditStage, outcome: str) -> None:
    await stage.record(
        received_at=dt.datetime(2026, 11, 25, tzinfo=dt.UTC),
        request_id="6f1c9d7e-4b1a-4c2e-8f3a-1d2e3f4a5b6c",
        rpc="onecard.v1.InsuranceService/GetInsuranceStatus",
        org="hosp-bj-001",
        org_type="hospital",
        cert_sha256="ab" * 32,
        findings=FOUND,
        outcome=outcome,
        reason="" if outcome == "OK" else "backend_timeout",
        released=None,
        latency_us=10,
    )


async def test_the_findings_land_in_the_record_and_only_an_answer_redeems() -> None:
    log = FakeAuditLog()
    stage = AuditStage(log)
    await _record(stage, "DEADLINE_EXCEEDED")
    assert not log.ledger.redeemed  # a failed exchange leaves the token usable
    await _record(stage, "OK")
    assert log.ledger.redeemed == {b"t" * 16}
    await _record(stage, "OK")  # the same token again: recorded as a replay instead
    first, answer, replay = log.records
    for name in ("purpose", "basis", "basis_ref", "subject", "decision", "policies", "backend"):
        assert getattr(first, name) == getattr(FOUND, name)
    assert (answer.outcome, replay.outcome, replay.reason) == (
        "OK",
        "PERMISSION_DENIED",
        "token_replayed",
    )
