"""The regulator's report, through AuditService.GetReport and `onecard audit report`, and the
consent key set through `onecard consent keys`: figures computed from the log's entries."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, common_pb2, consent_pb2
from gateway.bootstrap import Gateway
from gateway.cli import main
from gateway.consent_artefact import verify_artefact
from gateway.ports import CardStatus
from tests.integration.calls import (
    consent_basis,
    emergency_basis,
    grant_consent,
    insurance_on,
    revoke_consent,
)
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, REGULATOR
from tests.integration.stored import config_file

pytestmark = pytest.mark.integration
Channel = Callable[[str], grpc.aio.Channel]
WHY = "Patient unconscious after a fall; coverage needed for emergency surgery"


async def _activity(channel: Channel, population: Population) -> str:
    """Two consents granted, one revoked; one emergency access; three refusals. The artefact."""
    person = population.first(card_status=CardStatus.NORMAL)
    emergency = emergency_basis(common_pb2.EMERGENCY_REASON_LIFE_THREATENING, WHY)
    async with channel(CITIZEN_APP) as app, channel(HOSPITAL) as hosp, channel(LIBRARY) as lib:
        to_hospital = consent_pb2.Grantee(org_id=HOSPITAL)
        first = await grant_consent(app, person.id_number, to_hospital)
        await grant_consent(app, person.id_number, to_hospital)
        await revoke_consent(app, person.id_number, first.consent.consent_id)
        await insurance_on(hosp, person.id_number, emergency, common_pb2.PURPOSE_ETREAT)
        for call in (
            insurance_on(hosp, person.id_number, consent_basis(first.consent.consent_id)),
            insurance_on(lib, person.id_number, emergency, common_pb2.PURPOSE_ETREAT),
            insurance_on(lib, person.id_number, emergency, common_pb2.PURPOSE_ETREAT),
        ):
            with pytest.raises(grpc.aio.AioRpcError):
                await call
    return first.artefact


async def test_the_report_counts_emergencies_refusals_and_consents(
    gateway: Gateway, channel: Channel, population: Population
) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await _activity(channel, population)
    request = audit_pb2.GetReportRequest()
    request.since.FromDatetime(since)
    request.until.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    async with channel(REGULATOR) as reg:
        report = await audit_pb2_grpc.AuditServiceStub(reg).GetReport(request)
        empty = audit_pb2.GetReportRequest()
        empty.since.FromDatetime(since - dt.timedelta(days=2))
        empty.until.FromDatetime(since - dt.timedelta(days=1))
        nothing = await audit_pb2_grpc.AuditServiceStub(reg).GetReport(empty)
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await audit_pb2_grpc.AuditServiceStub(hosp).GetReport(request)

    assert [(c.org, c.code, c.count) for c in report.emergency_accesses] == [
        (HOSPITAL, "LIFE_THREATENING", 1)
    ]
    (access,) = report.emergency_details
    assert (access.org, access.outcome, access.justification) == (HOSPITAL, "OK", WHY)
    assert [(c.org, c.code, c.count) for c in report.refusals] == [
        (HOSPITAL, "consent_revoked", 1),
        (LIBRARY, "emergency_not_hospital", 2),
    ]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert [(d.day, d.granted, d.revoked) for d in report.consent_changes] == [(today, 2, 1)]
    assert report.entries == 7
    assert report.receipt.log_origin == gateway.audit_log.origin
    assert (nothing.entries, list(nothing.refusals)) == (0, [])
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_report_and_key_set_on_the_command_line(
    gateway: Gateway,
    channel: Channel,
    population: Population,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    database_urls: dict[Path, str],
) -> None:
    artefact = await _activity(channel, population)
    await gateway.stop()
    data = tmp_path / "data"
    config = config_file(tmp_path / "gw.toml", data, database_urls.get(data, ""))
    capsys.readouterr()
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()

    assert (
        main(["audit", "report", "--config", str(config), "--since", since, "--format", "csv"]) == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert main(["audit", "report", "--config", str(config), "--since", since]) == 0
    text = capsys.readouterr().out
    assert main(["consent", "keys", "--config", str(config)]) == 0
    key_set = json.loads(capsys.readouterr().out)

    by_section = {(r["section"], r["org"], r["code"]): r["count"] for r in rows}
    assert by_section[("emergency_accesses", HOSPITAL, "LIFE_THREATENING")] == "1"
    assert by_section[("refusals", LIBRARY, "emergency_not_hospital")] == "2"
    (detail,) = [r for r in rows if r["section"] == "emergency_access"]
    assert detail["justification"] == WHY
    assert [r["count"] for r in rows if r["section"].startswith("consents_")] == ["2", "1"]
    assert "Break-glass accesses per hospital and reason" in text and WHY in text
    assert verify_artefact(artefact, key_set)["iss"] == gateway.audit_log.origin
