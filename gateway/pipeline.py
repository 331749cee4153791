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
T = TypeVar("T")
LOG_RESOURCE = "onecard"  # the policy's resource id for actions on the audit log itself


@dataclass(frozen=True, slots=True)
class Ask:
    """One request, as a service hands it to the pipeline ("" card number: the log itself)."""

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

    async def oversee(self, call: Call, ask: Ask, fetch: Callable[[], Awaitable[T]]) -> T:
        """An action on the audit log itself (no citizen's card): basis, policy, then ``fetch``.

        The same basis stage and the same policy decision as every data request, so no
        AuditService method can skip authorization; what it returns is log data, not a
        citizen's, so there is nothing to disclose field by field.
        """
        call.trail.purpose = ask.purpose
        basis = await self._basis.establish(ask.basis, "", call.caller)
        call.trail.basis, call.trail.basis_ref = basis.kind.value, basis.reference
        self._decide(call, ask, None, basis.kind.value)
        return await fetch()

    def _decide(self, call: Call, ask: Ask, card: ResolvedCard | None, basis: str) -> Decision:
        org = call.caller.org
        decision = self._policy.decide(
            PolicyRequest(
                org_id=org.org_id,
                org_type=org.org_type.value,
                org_district=org.district,
                org_status=org.status.value,
                action=ask.action,
                holder_id=card.holder.holder_id if card else LOG_RESOURCE,
                holder_district=card.holder.issuing_district if card else "",
                card_status=card.holder.card_status.value if card else "",
                purpose=ask.purpose,
                basis=basis,
                hour=call.received_at.astimezone(self._tz).hour,
                resource_type="CardHolder" if card else "AuditLog",
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
