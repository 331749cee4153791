"""``onecard demo``: everything on loopback, then a scripted tour over real gRPC with mutual TLS.

It starts the reference social insurance back end and eligibility server, creates a development
PKI, starts the gateway on a free port, and plays the counters: the citizen app, a hospital, a
library, a regulator, a bus operator. One line per
step with the decision and the reason. Card numbers in the output are synthetic citizens of the
reference back end.
"""

from __future__ import annotations

import asyncio
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
    insurance_pb2,
    insurance_pb2_grpc,
    transit_pb2,
    transit_pb2_grpc,
)
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import verify_inclusion
from gateway.bootstrap import Gateway, start_gateway
from gateway.client import org_channel, refusal_reason
from gateway.config import load_settings
from gateway.ports import CardStatus
from gateway.store import read_log

HOSPITAL = "hosp-bj-001"
LIBRARY = "lib-bj-001"
CITIZEN_APP = "app-ecard-001"
SUSPENDED_LIBRARY = "lib-bj-009"
REGULATOR = "reg-nhsa-001"
TRANSIT = "transit-bj-001"
CITIZEN = "11010519491231002X"

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
    await _transit_checks_concession(tour, card)


async def _transit_checks_concession(tour: _Tour, card: common_pb2.CardRef) -> None:
    """A bus operator checks the senior fare of a rider who shows the e-card at the gate."""
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
                f"{gateway.ports.urls['social_insurance']}, reference eligibility server on "
                f"{gateway.ports.urls['eligibility']}"
            )
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
