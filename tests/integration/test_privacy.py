"""Privacy by construction: no raw card number, ID number or name leaves a trace anywhere.

A real ``onecard serve`` process, logging at debug level to a file, handles every kind of
exchange (allowed, refused at each stage, malformed and unknown card numbers, a library's
question to two SIP2 libraries, a transit concession check, whose eligibility server is sent
the ID number and name, a regulator's
search by card number and a stream of entries). Then the database files, an export (leaves,
checkpoints and the FHIR AuditEvent file), the process's whole log output and a metrics scrape
are searched for every card number sent, in every spelling sent, and for every holder's name
and insurance number.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from pathlib import Path

import grpc
import pytest

from adapters.sip2.seed import EMPLOYEE as READER
from adapters.sip2.seed import Network
from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, common_pb2
from gateway.cli import main
from gateway.client import org_channel
from gateway.pki import ensure_pki
from gateway.ports import CardStatus
from tests.integration.calls import (
    check_concession,
    insurance_status,
    issue_token,
    patron_status,
    verify_card,
)
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, LIBRARY, REGULATOR, TRANSIT
from tests.integration.served import free_port, serve_env, start

pytestmark = pytest.mark.integration
UNKNOWN = "110105194912310038"  # well formed, not a citizen of the reference back end


async def test_no_card_number_or_name_in_the_database_export_logs_or_metrics(
    tmp_path: Path,
    population: Population,
    capsys: pytest.CaptureFixture[str],
    started: list[asyncio.subprocess.Process],
) -> None:
    data = tmp_path / "data"
    pki = ensure_pki(data / "pki")
    port, metrics_port = free_port(), free_port()
    env = serve_env(data, port, log_level="debug", audit_checkpoint_interval_s="0")
    env["ONECARD_METRICS_PORT"] = str(metrics_port)
    assert population.by_id_number(UNKNOWN) is None
    people = [population.first(card_status=status) for status in CardStatus]
    people.append(population.first(where=lambda p: p.id_number == READER))  # fines at bj-xicheng
    normal = population.first(card_status=CardStatus.NORMAL)
    sent = {UNKNOWN, normal.id_number[:-1], normal.id_number + "7"}  # unknown and malformed
    target = f"127.0.0.1:{port}"

    async def refused(call: object) -> None:
        with pytest.raises(grpc.aio.AioRpcError):
            await call  # type: ignore[misc]

    with (tmp_path / "gateway.log").open("wb") as log_file:
        proc = await start(started, env, pki, port, log_file)
        async with (
            org_channel(target, pki, CITIZEN_APP) as app,
            org_channel(target, pki, HOSPITAL) as hosp,
            org_channel(target, pki, LIBRARY) as lib,
            org_channel(target, pki, REGULATOR) as reg,
            org_channel(target, pki, TRANSIT) as bus,
        ):
            for person in people:
                spelled = f" {person.id_number.lower()} "  # accepted: trimmed, X in any case
                sent |= {person.id_number, spelled.strip()}
                try:
                    token = await issue_token(app, spelled)
                except grpc.aio.AioRpcError:
                    continue  # a card that is not usable: refused, and logged
                await insurance_status(hosp, person.id_number, token)
                await refused(insurance_status(hosp, person.id_number, token))  # replay
                for library_id in ("bj-dongcheng", "bj-xicheng"):  # over SIP2, by card, barcode
                    library_token = await issue_token(app, person.id_number)
                    await patron_status(lib, person.id_number, library_token, library_id)
                await check_concession(bus, person.id_number, await issue_token(app, spelled))
                await refused(
                    verify_card(
                        lib,
                        person.id_number,
                        await issue_token(app, person.id_number),
                        common_pb2.PURPOSE_COVERAGE,
                    )
                )
            for number in (UNKNOWN, normal.id_number[:-1], normal.id_number + "7"):
                await refused(issue_token(app, number))
            audit = audit_pb2_grpc.AuditServiceStub(reg)
            for number in (normal.id_number, UNKNOWN):
                request = audit_pb2.SearchEntriesRequest(
                    card=common_pb2.CardRef(card_number=number), first_page=True
                )
                try:
                    found = await audit.SearchEntries(request)
                except grpc.aio.AioRpcError:
                    continue
                assert found.entries  # the citizen's exchanges are found by pseudonym
            streamed = [
                c
                async for c in audit.GetEntries(
                    audit_pb2.GetEntriesRequest(start_index=0, end_index=10_000)
                )
            ]
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        )
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0

    export = tmp_path / "export"
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{data}"\n')
    fhir = tmp_path / "audit-events.ndjson"
    assert (
        main(
            ["audit", "export", "--config", str(config), "--out", str(export), "--fhir", str(fhir)]
        )
        == 0
    )
    capsys.readouterr()

    logs = (tmp_path / "gateway.log").read_bytes()
    places = {
        "database": b"".join(p.read_bytes() for p in data.glob("onecard.db*")),
        "search index": b"".join(p.read_bytes() for p in data.glob("onecard.search.db*")),
        "export": b"".join(p.read_bytes() for p in export.rglob("*") if p.is_file()),
        "FHIR export": fhir.read_bytes(),
        "logs": logs,
        "metrics": metrics,
        "streamed entries": b"".join(e.leaf for c in streamed for e in c.entries),
    }
    # The scan looks at real material: every exchange is in each copy of the log, and the
    # process really logged at debug level.
    assert places["export"].count(b'"rpc":') == places["streamed entries"].count(b'"rpc":') + 1
    assert b"onecard.v1." in places["search index"]  # the RPC names it codes
    leaves = (export / "entries.jsonl").read_bytes()
    assert logs.count(b'"rpc_completed"') == leaves.count(b'"outcome":"OK"') >= 5
    assert (
        logs.count(b'"rpc_refused"')
        == leaves.count(b'"outcome":') - leaves.count(b'"outcome":"OK"')
        >= 8
    )
    secrets = {s.upper() for s in sent} | sent
    barcodes = Network.default().barcodes("bj-xicheng")
    for person in people:
        secrets |= {person.name, person.psn_no}
        secrets |= {barcodes[person.id_number]} if person.id_number in barcodes else set()
    assert barcodes[READER] in secrets
    for where, blob in places.items():
        leaked = sorted(s for s in secrets if s.encode() in blob)
        assert leaked == [], f"{where} holds {len(leaked)} raw identifiers"
