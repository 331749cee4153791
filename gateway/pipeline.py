"""The request pipeline: one straight line through every stage, for every data request.

    card number (validate) -> basis (prove it) -> card (resolve, status) -> policy (Cedar)
    -> adapter (fetch) -> disclosure (only allowed fields) -> the response, stamped with its
    decision (a card-present token is redeemed with the audit entry, only if data is released)

Services describe the request as an ``Ask`` and give the adapter call as ``fetch``; they cannot
skip or reorder a stage. Each stage lives in its own module and knows nothing of the next.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from gateway import cardno
from gateway.basis import BasisClaim, BasisStage
from gateway.cards import CardStage, ResolvedCard
from gateway.context import Call
from gateway.disclosure import disclose
from gateway.errors import PolicyDenied
from gateway.metrics import Metrics
from gateway.policy import Decision, PolicyEngine, PolicyRequest

R = TypeVar("R", bound=Message)


@dataclass(frozen=True, slots=True)
class Ask:
    """One data request, as a service hands it to the pipeline."""

    action: str
    card_number: str
    purpose: str
    basis: BasisClaim
    backend: str = ""


class Pipeline:
    """Runs the stages in order for every data request."""

    def __init__(
        self,
        cards: CardStage,
        basis: BasisStage,
        policy: PolicyEngine,
        metrics: Metrics,
        pseudonymize: Callable[[str], str],
        *,
        tz: dt.tzinfo,
    ) -> None:
        self._pseudonymize = pseudonymize
        self._cards = cards
        self._basis = basis
        self._policy = policy
        self._metrics = metrics
        self._tz = tz

    async def run(
        self,
        call: Call,
        ask: Ask,
        fetch: Callable[[ResolvedCard], Awaitable[R]],
    ) -> R:
        """Take ``ask`` through every stage; return the disclosed response or raise.

        The basis is proven from the request and the caller before the card registry is asked,
        so a caller without a basis learns nothing about the card (no status oracle).
        """
        trail = call.trail
        trail.purpose = ask.purpose
        card_number = cardno.normalize(ask.card_number)
        basis = await self._basis.establish(ask.basis, card_number, call.caller)
        trail.basis, trail.basis_ref = basis.kind.value, basis.reference
        card = await self._cards.resolve(card_number)
        trail.subject = self._pseudonymize(card.holder.holder_id)
        decision = self._decide(call, ask, card, basis.kind.value)
        trail.backend = ask.backend
        response = await fetch(card)
        disclose(response, decision.disclose)
        _stamp(response, decision)
        if basis.token is not None:
            trail.token = (basis.token.token_id, basis.token.expires_at)
        return response

    def authorize_statutory(self, call: Call, action: str) -> Decision:
        """The policy stage alone, for a regulator's oversight of the log (no citizen data)."""
        call.trail.purpose, call.trail.basis = "HCOMPL", "statutory"
        org = call.caller.org
        return self._record(
            call,
            action,
            self._policy.decide(
                PolicyRequest(
                    org_id=org.org_id,
                    org_type=org.org_type.value,
                    org_district=org.district,
                    org_status=org.status.value,
                    action=action,
                    holder_id="onecard",
                    holder_district="",
                    card_status="",
                    purpose="HCOMPL",
                    basis="statutory",
                    hour=call.received_at.astimezone(self._tz).hour,
                    resource_type="AuditLog",
                )
            ),
            "HCOMPL",
        )

    def _decide(self, call: Call, ask: Ask, card: ResolvedCard, basis: str) -> Decision:
        org = call.caller.org
        decision = self._policy.decide(
            PolicyRequest(
                org_id=org.org_id,
                org_type=org.org_type.value,
                org_district=org.district,
                org_status=org.status.value,
                action=ask.action,
                holder_id=card.holder.holder_id,
                holder_district=card.holder.issuing_district,
                card_status=card.holder.card_status.value,
                purpose=ask.purpose,
                basis=basis,
                hour=call.received_at.astimezone(self._tz).hour,
            )
        )
        return self._record(call, ask.action, decision, ask.purpose)

    def _record(self, call: Call, action: str, decision: Decision, purpose: str) -> Decision:
        outcome = "allow" if decision.allowed else "deny"
        self._metrics.decisions.labels(action, outcome).inc()
        call.trail.decision = outcome
        call.trail.policies = decision.policy_ids
        call.trail.policy_set = decision.policy_set_sha256
        if not decision.allowed:
            org_type = call.caller.org.org_type.value
            raise PolicyDenied(_denial_message(action, purpose, org_type, decision))
        return decision


def _denial_message(action: str, purpose: str, org_type: str, decision: Decision) -> str:
    if decision.policy_ids:
        return f"{action} denied by policy {', '.join(decision.policy_ids)}"
    return f"{action} denied: no policy permits a {org_type} with purpose {purpose} on this basis"


def _stamp(response: Message, decision: Decision) -> None:
    field = response.decision  # type: ignore[attr-defined]
    field.policy_ids.extend(decision.policy_ids)
    field.policy_set_sha256 = decision.policy_set_sha256
    field.disclosed_fields.extend(sorted(decision.disclose))
