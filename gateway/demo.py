"""``onecard demo``: everything on loopback, then a scripted tour over real gRPC with mutual TLS.

It starts the reference back ends (social insurance, FHIR R4, SIP2 libraries, a Cal-ITP
eligibility server), creates a development PKI, starts the gateway on a free port, and plays the
counters: the citizen app, a hospital, a library (which also asks another branch about a reader,
over SIP2), a regulator, a hospital reading another hospital's lab report (FHIR), a bus operator
checking a senior fare; then a standing consent (granted, used without the patient, revoked,
refused), emergency access, and the citizen's access history with its completeness check. One
line per
step with the decision and the reason. Card numbers in the output are synthetic citizens of the
reference back end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    consent_pb2,
    consent_pb2_grpc,
    health_pb2,
    health_pb2_grpc,
    insurance_pb2,
    insurance_pb2_grpc,
    library_pb2,
    library_pb2_grpc,
    transit_pb2,
    transit_pb2_grpc,
)
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.history_check import check_history
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import verify_inclusion
from gateway.bootstrap import Gateway, start_gateway
from gateway.client import org_channel, refusal_reason
from gateway.config import load_settings
from gateway.consent_artefact import verify_artefact
from gateway.ports import CardStatus
from gateway.store import read_log

HOSPITAL = "hosp-bj-001"
LIBRARY = "lib-bj-001"
CITIZEN_APP = "app-ecard-001"
SUSPENDED_LIBRARY = "lib-bj-009"
REGULATOR = "reg-nhsa-001"
TRANSIT = "transit-bj-001"
CITIZEN = "11010519491231002X"
READER = "110101199003074477"  # a reader with fines at another branch (adapters.sip2.seed)
OTHER_BRANCH = "bj-xicheng"

M = TypeVar("M", bound=Message)
_Print = Callable[[str], None]


@dataclass
class _Tour:
    gateway: Gateway
    out: _Print
    verifier_key: Path
    step: int = 0

    def channel(self, org_id: str) -> grpc.aio.Channel:
        return org_channel(self.gateway.target, self.gateway.pki, org_id)

    async def ask(self, who: str, what: str, call: Callable[[], Awaitable[M]]) -> M | None:
        """Run one step; print ALLOW or REFUSED with the reason; return the response or None."""
        self.step += 1
        head = f"{self.step:>2}. {who:<14} {what:<46}"
        try:
            response = await call()
        except grpc.aio.AioRpcError as err:
            reason = refusal_reason(err)
            trailers: Any = err.trailing_metadata() or ()
            index = next((v for k, v in trailers if k == "onecard-audit-index"), "?")
            self.out(
                f"{head} REFUSED {err.code().name} ({reason}): {err.details()} [audit #{index}]"
            )
            return None
        decision = getattr(response, "decision", None)
        by = f"by {', '.join(decision.policy_ids)} " if decision is not None else ""
        receipt = getattr(response, "receipt", None)
        index = receipt.leaf_index if receipt is not None else "?"
        self.out(f"{head} ALLOW   {by}[audit #{index}]")
        return response

    async def token(self, card_number: str) -> str:
        async with self.channel(CITIZEN_APP) as ch:
            response = await card_pb2_grpc.CardServiceStub(ch).IssueCardToken(
                card_pb2.IssueCardTokenRequest(
                    card=common_pb2.CardRef(card_number=card_number),
                    purpose=common_pb2.PURPOSE_PATRQT,
                )
            )
        return str(response.token)


def _basis(token: str) -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token=token))


async def _play(tour: _Tour) -> None:
    out = tour.out
    population = Population.default()
    lost = population.first(card_status=CardStatus.REPORTED_LOST)
    card = common_pb2.CardRef(card_number=CITIZEN)

    async with (
        tour.channel(CITIZEN_APP) as app,
        tour.channel(HOSPITAL) as hosp,
        tour.channel(LIBRARY) as lib,
    ):
        app_cards = card_pb2_grpc.CardServiceStub(app)
        issued = await tour.ask(
            "citizen app",
            "IssueCardToken (e-card QR code)",
            lambda: app_cards.IssueCardToken(
                card_pb2.IssueCardTokenRequest(card=card, purpose=common_pb2.PURPOSE_PATRQT)
            ),
        )
        if issued is None:
            raise RuntimeError("the citizen app could not get a token; see the line above")
        out(f"      token {issued.token[:24]}... valid 60 s, single use, bound to the card")

        hosp_insurance = insurance_pb2_grpc.InsuranceServiceStub(hosp)
        status_request = insurance_pb2.GetInsuranceStatusRequest(
            card=card, purpose=common_pb2.PURPOSE_COVERAGE, basis=_basis(issued.token)
        )
        status = await tour.ask(
            "hospital",
            "GetInsuranceStatus with the token",
            lambda: hosp_insurance.GetInsuranceStatus(status_request),
        )
        if status is not None:
            for s in status.schemes:
                state = insurance_pb2.SchemeStatus.Name(s.status).removeprefix("SCHEME_STATUS_")
                out(f"      {s.insutype} {s.type_name}: {state.lower()} since {s.start_date}")
            disclosed = set(status.decision.disclosed_fields)
            withheld = [
                f.name
                for f in insurance_pb2.InsuranceScheme.DESCRIPTOR.fields
                if f"schemes.{f.name}" not in disclosed
            ]
            out(f"      withheld by policy: {', '.join(withheld)}")

        lib_token = await tour.token(CITIZEN)
        verified = await tour.ask(
            "library",
            "VerifyCard with a fresh token",
            lambda: card_pb2_grpc.CardServiceStub(lib).VerifyCard(
                card_pb2.VerifyCardRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
                    basis=_basis(lib_token),
                )
            ),
        )
        if verified is not None:
            out(
                f"      valid card holder: {verified.card_holder_valid}, "
                f"name: {verified.masked_name}"
            )

        await tour.ask(
            "hospital",
            "GetInsuranceStatus replaying the token",
            lambda: hosp_insurance.GetInsuranceStatus(status_request),
        )
        await tour.ask(
            "citizen app",
            "IssueCardToken for a card reported lost",
            lambda: app_cards.IssueCardToken(
                card_pb2.IssueCardTokenRequest(
                    card=common_pb2.CardRef(card_number=lost.id_number),
                    purpose=common_pb2.PURPOSE_PATRQT,
                )
            ),
        )
        lib_token = await tour.token(CITIZEN)
        await tour.ask(
            "library",
            "GetInsuranceStatus (not a library's business)",
            lambda: insurance_pb2_grpc.InsuranceServiceStub(lib).GetInsuranceStatus(
                insurance_pb2.GetInsuranceStatusRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
                    basis=_basis(lib_token),
                )
            ),
        )
        await tour.ask(
            "hospital",
            "VerifyCard with a mistyped card number",
            lambda: card_pb2_grpc.CardServiceStub(hosp).VerifyCard(
                card_pb2.VerifyCardRequest(
                    card=common_pb2.CardRef(card_number=CITIZEN[:-1] + "5"),
                    purpose=common_pb2.PURPOSE_TREAT,
                )
            ),
        )
    async with tour.channel(SUSPENDED_LIBRARY) as suspended:
        await tour.ask(
            "suspended lib.",
            "VerifyCard from a suspended organisation",
            lambda: card_pb2_grpc.CardServiceStub(suspended).VerifyCard(
                card_pb2.VerifyCardRequest(card=card, purpose=common_pb2.PURPOSE_LIBRARY_SERVICE)
            ),
        )
    if status is not None:
        await _regulator_checks_receipt(tour, status.receipt)
    await _library_asks_another_branch(tour)
    await _hospital_reads_lab_report(tour, card)
    await _transit_checks_concession(tour, card)
    await _standing_consent(tour, card)
    await _health_records_without_the_patient(tour, card)
    await _citizen_reads_history(tour)


async def _grant_hospital(
    tour: _Tour,
    consents: consent_pb2_grpc.ConsentServiceStub,
    card: common_pb2.CardRef,
    category: consent_pb2.DataCategory,
    purpose: common_pb2.Purpose,
) -> consent_pb2.GrantConsentResponse | None:
    """The citizen app grants the hospital a 30-day consent for one category and purpose."""
    grant = consent_pb2.GrantConsentRequest(
        card=card,
        purpose=common_pb2.PURPOSE_PATRQT,
        grantee=consent_pb2.Grantee(org_id=HOSPITAL),
        categories=[category],
        purposes=[purpose],
    )
    grant.valid_until.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    name = consent_pb2.DataCategory.Name(category).removeprefix("DATA_CATEGORY_")
    only = " only" if name.startswith("HEALTH_") else ""
    word = name.lower().replace("health_", "health.")
    return await tour.ask(
        "citizen app",
        f"GrantConsent: {HOSPITAL}, {word}{only}, 30 days",
        lambda: consents.GrantConsent(grant),
    )


async def _standing_consent(tour: _Tour, card: common_pb2.CardRef) -> None:
    """The citizen grants the hospital a consent, it is used, revoked, refused; an emergency."""
    out = tour.out
    async with tour.channel(CITIZEN_APP) as app, tour.channel(HOSPITAL) as hosp:
        consents = consent_pb2_grpc.ConsentServiceStub(app)
        granted = await _grant_hospital(
            tour, consents, card, consent_pb2.DATA_CATEGORY_INSURANCE, common_pb2.PURPOSE_COVERAGE
        )
        if granted is None:
            return
        consent_id = granted.consent.consent_id
        key_set = tour.verifier_key.with_name("consent-keys.json").read_text()
        claims = verify_artefact(granted.artefact, key_set)
        out(
            f"      {consent_id}: artefact (JWS, EdDSA) verified with consent-keys.json, "
            f"valid until {dt.datetime.fromtimestamp(claims['exp'], dt.UTC):%Y-%m-%d}"
        )
        hosp_insurance = insurance_pb2_grpc.InsuranceServiceStub(hosp)

        async def on_consent() -> insurance_pb2.GetInsuranceStatusResponse:
            response: insurance_pb2.GetInsuranceStatusResponse
            response = await hosp_insurance.GetInsuranceStatus(
                insurance_pb2.GetInsuranceStatusRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_COVERAGE,
                    basis=common_pb2.LawfulBasis(consent_id=consent_id),
                )
            )
            return response

        await tour.ask("hospital", "GetInsuranceStatus on the consent (no patient)", on_consent)
        await tour.ask(
            "citizen app",
            "RevokeConsent",
            lambda: consents.RevokeConsent(
                consent_pb2.RevokeConsentRequest(
                    card=card, purpose=common_pb2.PURPOSE_PATRQT, consent_id=consent_id
                )
            ),
        )
        await tour.ask("hospital", "GetInsuranceStatus on the revoked consent", on_consent)
        await tour.ask(
            "hospital",
            "GetInsuranceStatus in an emergency",
            lambda: hosp_insurance.GetInsuranceStatus(
                insurance_pb2.GetInsuranceStatusRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_ETREAT,
                    basis=common_pb2.LawfulBasis(
                        emergency=common_pb2.Emergency(
                            reason=common_pb2.EMERGENCY_REASON_PATIENT_INCAPACITATED,
                            justification="unconscious on arrival, surgery needed now",
                        )
                    ),
                )
            ),
        )


async def _library_asks_another_branch(tour: _Tour) -> None:
    """A library desk asks another branch of the network, over SIP2, about a reader."""
    token = await tour.token(READER)
    async with tour.channel(LIBRARY) as lib:
        standing = await tour.ask(
            "library",
            f"GetPatronStatus at {OTHER_BRANCH} (SIP2)",
            lambda: library_pb2_grpc.LibraryServiceStub(lib).GetPatronStatus(
                library_pb2.GetPatronStatusRequest(
                    card=common_pb2.CardRef(card_number=READER),
                    purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
                    basis=_basis(token),
                    library_id=OTHER_BRANCH,
                )
            ),
        )
    if standing is None:
        return
    blocks = [f.name for f, on in standing.blocks.ListFields() if on]
    tour.out(
        f"      {standing.masked_name}: patron {'known' if standing.patron_known else 'unknown'}, "
        f"good standing {standing.good_standing}, blocks: {', '.join(blocks) or 'none'}, "
        f"{standing.counts.charged} on loan, {standing.counts.overdue} overdue, "
        f"fines: {standing.has_fines}, amount "
        f"{standing.fine_amount or 'withheld (only the branch that holds it sees it)'}"
    )


async def _hospital_reads_lab_report(tour: _Tour, card: common_pb2.CardRef) -> None:
    """With the patient at the counter, a hospital reads another hospital's lab report (FHIR)."""
    out = tour.out
    async with tour.channel(HOSPITAL) as hosp:
        health = health_pb2_grpc.HealthRecordServiceStub(hosp)
        list_token = await tour.token(CITIZEN)
        listed = await tour.ask(
            "hospital",
            "ListHealthRecords (lab, card present)",
            lambda: health.ListHealthRecords(
                health_pb2.ListHealthRecordsRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_TREAT,
                    basis=_basis(list_token),
                    category=health_pb2.HEALTH_CATEGORY_LAB,
                    page_size=3,
                )
            ),
        )
        if listed is None or not listed.records:
            return
        for r in listed.records:
            out(f"      {r.date[:10]} {r.title} ({r.performer}; source {r.source})")
        newest = listed.records[0]
        get_token = await tour.token(CITIZEN)
        record = await tour.ask(
            "hospital",
            "GetHealthRecord (the newest, as FHIR JSON)",
            lambda: health.GetHealthRecord(
                health_pb2.GetHealthRecordRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_TREAT,
                    basis=_basis(get_token),
                    category=health_pb2.HEALTH_CATEGORY_LAB,
                    record_id=newest.record_id,
                )
            ),
        )
        if record is None:
            return
        entries = json.loads(record.fhir_json)["entry"]
        out(f"      FHIR R4 Bundle of {record.resource_count} resources:")
        for entry in entries[1:]:
            o = entry["resource"]
            value = o.get("valueQuantity", {})
            out(
                f"      LOINC {o['code']['coding'][0]['code']:<8} {o['code']['text']:<24} "
                f"{value.get('value')} {value.get('unit', '')}"
            )


async def _transit_checks_concession(tour: _Tour, card: common_pb2.CardRef) -> None:
    """A bus operator checks the senior fare of a rider (born 1949) showing the e-card."""
    rider_token = await tour.token(card.card_number)
    async with tour.channel(TRANSIT) as bus:
        answer = await tour.ask(
            "transit",
            "CheckConcession senior, card present",
            lambda: transit_pb2_grpc.TransitServiceStub(bus).CheckConcession(
                transit_pb2.CheckConcessionRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_FARE_CONCESSION,
                    basis=_basis(rider_token),
                    concession_type=transit_pb2.CONCESSION_TYPE_SENIOR,
                )
            ),
        )
    if answer is not None:
        until = answer.valid_until.ToDatetime()
        tour.out(
            f"      senior fare: {'yes' if answer.eligible else 'no'}, may be relied on until "
            f"{until:%H:%M} UTC; no birth date left the eligibility server (Cal-ITP, JWS in JWE)"
        )


async def _regulator_checks_receipt(tour: _Tour, receipt: common_pb2.AuditReceipt) -> None:
    """The regulator proves that the hospital's exchange is in the signed log."""
    out = tour.out
    verifiers = VerifierSet([Verifier.parse(tour.verifier_key.read_text().strip())])
    async with tour.channel(REGULATOR) as reg:
        audit = audit_pb2_grpc.AuditServiceStub(reg)
        head = await tour.ask(
            "regulator",
            "GetCheckpoint (the signed tree head)",
            lambda: audit.GetCheckpoint(audit_pb2.GetCheckpointRequest()),
        )
        if head is None:
            return
        checkpoint = open_checkpoint(head.signed_checkpoint, verifiers, head.origin)
        out(
            f"      {checkpoint.size} entries, root {checkpoint.root_hash.hex()[:16]}..., "
            f"signature verified with {tour.verifier_key.name}"
        )
        proof = await tour.ask(
            "regulator",
            f"GetInclusionProof for the hospital's #{receipt.leaf_index}",
            lambda: audit.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(
                    leaf_index=receipt.leaf_index, tree_size=checkpoint.size
                )
            ),
        )
        if proof is None:
            return
        verify_inclusion(
            receipt.leaf_hash,
            receipt.leaf_index,
            checkpoint.size,
            list(proof.hashes),
            checkpoint.root_hash,
        )
        out(
            f"      receipt #{receipt.leaf_index} is in the signed tree: "
            f"{len(proof.hashes)} hashes lead from its leaf to the root"
        )


async def _health_records_without_the_patient(tour: _Tour, card: common_pb2.CardRef) -> None:
    """Lab reports on a consent of their own (health data: PIPL art. 29); an emergency list."""
    async with tour.channel(CITIZEN_APP) as app, tour.channel(HOSPITAL) as hosp:
        consents = consent_pb2_grpc.ConsentServiceStub(app)
        granted = await _grant_hospital(
            tour, consents, card, consent_pb2.DATA_CATEGORY_HEALTH_LAB, common_pb2.PURPOSE_TREAT
        )
        if granted is None:
            return
        health = health_pb2_grpc.HealthRecordServiceStub(hosp)

        def records(
            basis: common_pb2.LawfulBasis,
            purpose: common_pb2.Purpose,
            category: health_pb2.HealthCategory,
        ) -> Callable[[], Awaitable[health_pb2.ListHealthRecordsResponse]]:
            request = health_pb2.ListHealthRecordsRequest(
                card=card, purpose=purpose, basis=basis, category=category, page_size=2
            )
            return lambda: health.ListHealthRecords(request)

        on_consent = common_pb2.LawfulBasis(consent_id=granted.consent.consent_id)
        listed = await tour.ask(
            "hospital",
            "ListHealthRecords (lab) on the consent",
            records(on_consent, common_pb2.PURPOSE_TREAT, health_pb2.HEALTH_CATEGORY_LAB),
        )
        for r in listed.records if listed is not None else ():
            tour.out(f"      {r.date[:10]} {r.title} ({r.performer})")
        await tour.ask(
            "hospital",
            "ListHealthRecords (imaging) on the lab consent",
            records(on_consent, common_pb2.PURPOSE_TREAT, health_pb2.HEALTH_CATEGORY_IMAGING),
        )
        emergency = common_pb2.LawfulBasis(
            emergency=common_pb2.Emergency(
                reason=common_pb2.EMERGENCY_REASON_PATIENT_INCAPACITATED,
                justification="unconscious on arrival, prior scans needed",
            )
        )
        urgent = await tour.ask(
            "hospital",
            "ListHealthRecords (lab) in an emergency",
            records(emergency, common_pb2.PURPOSE_ETREAT, health_pb2.HEALTH_CATEGORY_LAB),
        )
        for r in urgent.records if urgent is not None else ():
            tour.out(f"      {r.date[:10]} {r.title} ({r.performer}; summary, last 5 years)")


async def _citizen_reads_history(tour: _Tour) -> None:
    """The citizen sees every access to their data, and checks that none is missing."""
    out = tour.out
    async with tour.channel(CITIZEN_APP) as app:
        history = await tour.ask(
            "citizen app",
            "GetAccessHistory (who read my data?)",
            lambda: consent_pb2_grpc.ConsentServiceStub(app).GetAccessHistory(
                consent_pb2.GetAccessHistoryRequest(
                    card=common_pb2.CardRef(card_number=CITIZEN),
                    purpose=common_pb2.PURPOSE_PATRQT,
                )
            ),
        )
    if history is None:
        return
    for event in history.events:
        back = f"-> #{event.previous_index}" if event.HasField("previous_index") else "(first)"
        when = event.time.ToDatetime().strftime("%H:%M:%S")
        basis = "EMERGENCY" if event.emergency else event.basis
        out(
            f"      #{event.index:<3} {when} {event.org:<14} {event.rpc:<19} "
            f"{event.category or '-':<17}{basis:<13}"
            f"{event.outcome:<18} {back}"
        )
    verdict = check_history(
        [history], tour.verifier_key.read_text().strip(), history.receipt.leaf_index
    )
    out(f"      completeness check: {verdict}")


async def run_demo(out: _Print = print, data_dir: Path | None = None) -> None:
    """Start everything on loopback, play the tour, stop everything."""
    with tempfile.TemporaryDirectory(prefix="onecard-demo-") as tmp:
        settings = load_settings(
            data_dir=data_dir or Path(tmp),
            audit_checkpoint_interval_s=0,
            listen_port=0,
            metrics_port=0,
            shutdown_grace_s=1.0,
        )
        gateway = await start_gateway(settings)
        try:
            out(
                f"OneCard demo: gateway on {gateway.target} (mutual TLS), metrics on "
                f"127.0.0.1:{gateway.metrics_port}, reference 1101 back end on "
                f"{gateway.ports.urls['social_insurance']}, reference FHIR server on "
                f"{gateway.ports.urls['fhir']}, reference eligibility server on "
                f"{gateway.ports.urls['eligibility']}"
            )
            out(f"reference SIP2 libraries on {gateway.ports.urls['library']}")
            out(f"development PKI in {gateway.pki.directory}")
            out("")
            tour = _Tour(gateway, out, settings.data_dir / "audit-log.pub")
            await _play(tour)
        finally:
            await gateway.stop()
        size = _log_size(settings.store, settings.data_dir)
        out("")
        out(
            f"audit log: {size} entries, one per exchange, allowed or refused: the {tour.step} "
            f"above and the {size - tour.step} fresh tokens they used"
        )
        if data_dir is not None:
            out(f"kept in {data_dir}: onecard audit export --out DIR, then onecard audit verify")


def main() -> None:
    asyncio.run(run_demo())


def _log_size(store: str, data_dir: Path) -> int:
    """How many entries the stopped gateway's log holds, read through the store."""
    with read_log(store, data_dir, served=False) as log:
        return log.size()
