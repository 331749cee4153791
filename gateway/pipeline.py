"""The request pipeline: one straight line through every stage, for every data request.

    card number (validate) -> basis (prove it) -> card (resolve, status) -> policy (Cedar)
    -> adapter (fetch) -> disclosure (only allowed fields) -> the response, stamped with its
    decision (a card-present token is redeemed with the audit entry, only if data is released)

Services describe the request as an ``Ask`` and give the adapter call as ``fetch``; they cannot
skip or reorder a stage. Each stage lives in its own module and knows nothing of the next.

``run_recorded`` is the same line with the audit entry written before the fetch (``Call.record``)
for a response that must hold its own entry: the fetch gets the entry's receipt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from google.protobuf.message import Message

from gateway import cardno
from gateway.audit.log import Receipt, Spend
from gateway.basis import Basis, BasisClaim, BasisKind, BasisStage, Scope, claimed
from gateway.cards import CardStage, ResolvedCard, usable
from gateway.context import Call
from gateway.disclosure import disclose
from gateway.errors import BasisRefused, GatewayError, PolicyDenied
from gateway.findings import Findings
from gateway.metrics import Metrics
from gateway.policy import ConsentContext, Decision, PolicyEngine, PolicyRequest

R = TypeVar("R", bound=Message)


@dataclass(frozen=True, slots=True)
class WithSpend(Generic[R]):
    """A fetch's answer and what it changes in the store (a consent granted or revoked),
    written with the exchange's audit entry, never without it."""

    response: R
    spend: Spend


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
    category: str = ""  # the data category read ("insurance", "health.lab", ...), "" for none
    holds_record: bool = False  # the caller keeps the record asked (a library its own patron's)
    # What the released answer says, in a word ("eligible"): recorded after ``backend`` as
    # ``backend:word``, for an answer that is a predicate the log should state, not only hash.
    answer: Callable[[Message], str] | None = None


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
        fetch: Callable[[ResolvedCard], Awaitable[R | WithSpend[R]]],
    ) -> R:
        """Take ``ask`` through every stage; return the disclosed response or raise.

        The basis is proven from the request and the caller before the card registry is asked,
        so a caller without a basis learns nothing about the card (no status oracle). Whatever
        happens, the call's ``Findings`` are reported once, as far as it got.
        """
        return await self._run(call, ask, fetch, None)

    async def run_recorded(
        self,
        call: Call,
        ask: Ask,
        fetch: Callable[[ResolvedCard, str, Receipt], Awaitable[R]],
    ) -> R:
        """``run``, with the call's entry written once it is allowed, before ``fetch`` runs;
        ``fetch`` gets the card, its holder's pseudonym and the entry's receipt."""
        return await self._run(call, ask, None, fetch)

    async def _run(
        self,
        call: Call,
        ask: Ask,
        fetch: Callable[[ResolvedCard], Awaitable[R | WithSpend[R]]] | None,
        recorded: Callable[[ResolvedCard, str, Receipt], Awaitable[R]] | None,
    ) -> R:
        found = Findings(purpose=ask.purpose, category=ask.category)
        try:
            card_number = cardno.normalize(ask.card_number)
            try:
                basis = await self._basis.establish(
                    ask.basis, card_number, call.caller, _scope(call, ask)
                )
            except BasisRefused as refused:
                found = await self._refused_about(found, ask.basis, refused, card_number)
                raise
            found = _with_basis(found, basis)
            # The basis holds: from here every outcome, a refusal for the card's status too
            # (a claim on a lost card), is about the card's holder and in their history.
            holder = await self._cards.holder(card_number)
            found = replace(found, subject=self._pseudonymize(holder.holder_id))
            card = usable(card_number, holder)
            decision = self._decide(call, ask, card, basis)
            found = _with_decision(found, decision)
            _enforce(call, ask, decision)
            found = replace(found, backend=ask.backend)
            if recorded is not None:
                if basis.spend is not None:  # it is taken with the entry of a released answer
                    raise RuntimeError(
                        "a call that spends a token or a consent use cannot record early"
                    )
                fetched: R | WithSpend[R] = await recorded(
                    card, found.subject, await call.record(found)
                )
            elif fetch is not None:
                fetched = await fetch(card)
            else:
                raise TypeError("the pipeline needs a fetch")
            response, spend = (
                (fetched.response, fetched.spend)
                if isinstance(fetched, WithSpend)
                else (fetched, basis.spend)
            )
            disclose(response, decision.disclose)
            if ask.answer is not None:
                found = replace(found, backend=f"{ask.backend}:{ask.answer(response)}")
            _stamp(response, decision)
            if spend is not None:
                found = replace(found, spend=spend)
            return response
        finally:
            call.report(found)

    async def oversee(self, call: Call, ask: Ask, fetch: Callable[[str], Awaitable[T]]) -> T:
        """An action on the audit log itself: basis, policy, then ``fetch(subject)``.

        The same basis stage and the same policy decision as every data request, so no
        AuditService method can skip authorization. If ``ask`` names a card (a regulator's
        search by citizen), its holder is looked up after the decision, whatever the card's
        status, and ``fetch`` gets the pseudonym, under which the call itself is logged too.
        What ``fetch`` returns is log data, not a citizen's: nothing to disclose field by field.
        """
        found = Findings(purpose=ask.purpose)
        try:
            basis = await self._basis.establish(ask.basis, "", call.caller, _scope(call, ask))
            found = _with_basis(found, basis)
            decision = self._decide(call, ask, None, basis)
            found = _with_decision(found, decision)
            _enforce(call, ask, decision)
            subject = ""
            if ask.card_number:
                holder = await self._cards.holder(cardno.normalize(ask.card_number))
                subject = self._pseudonymize(holder.holder_id)
                found = replace(found, subject=subject)
            return await fetch(subject)
        finally:
            call.report(found)

    async def _refused_about(
        self, found: Findings, claim: BasisClaim, refused: BasisRefused, card_number: str
    ) -> Findings:
        """The findings of a refused basis: the kind claimed and, when the basis was bound to a
        citizen (``BasisRefused``), whom it concerns, so that the attempt shows in their access
        history; the caller's answer is the same refusal either way."""
        found = replace(found, basis=claimed(claim), basis_ref=refused.reference)
        subject = refused.subject
        if not subject and refused.card_bound:
            try:
                holder = await self._cards.holder(card_number)
            except GatewayError:  # the registry cannot say: the entry names nobody
                return found
            subject = self._pseudonymize(holder.holder_id)
        return replace(found, subject=subject)

    def _decide(self, call: Call, ask: Ask, card: ResolvedCard | None, basis: Basis) -> Decision:
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
                basis=basis.kind.value,
                hour=call.received_at.astimezone(self._tz).hour,
                resource_type="CardHolder" if card else "AuditLog",
                category=ask.category,
                consent=_consent_context(basis),
                holds_record=ask.holds_record,
            )
        )
        self._metrics.decisions.labels(ask.action, _word(decision)).inc()
        return decision


def _scope(call: Call, ask: Ask) -> Scope:
    return Scope(ask.purpose, ask.category, call.received_at, call.request_id)


def _consent_context(basis: Basis) -> ConsentContext | None:
    consent = basis.consent
    if consent is None:
        return None
    return ConsentContext(consent.consent_id, consent.categories, consent.purposes)


def _word(decision: Decision) -> str:
    return "allow" if decision.allowed else "deny"


def _with_basis(found: Findings, basis: Basis) -> Findings:
    return replace(
        found,
        basis=basis.kind.value,
        basis_ref=basis.reference,
        emergency=basis.kind is BasisKind.EMERGENCY,
    )


def _with_decision(found: Findings, decision: Decision) -> Findings:
    return replace(
        found,
        decision=_word(decision),
        policies=decision.policy_ids,
        policy_set=decision.policy_set_sha256,
    )


def _enforce(call: Call, ask: Ask, decision: Decision) -> None:
    if not decision.allowed:
        org_type = call.caller.org.org_type.value
        raise PolicyDenied(_denial_message(ask.action, ask.purpose, org_type, decision))


def _denial_message(action: str, purpose: str, org_type: str, decision: Decision) -> str:
    if decision.policy_ids:
        return f"{action} denied by policy {', '.join(decision.policy_ids)}"
    return f"{action} denied: no policy permits a {org_type} with purpose {purpose} on this basis"


def _stamp(response: Message, decision: Decision) -> None:
    field = response.decision  # type: ignore[attr-defined]
    field.policy_ids.extend(decision.policy_ids)
    field.policy_set_sha256 = decision.policy_set_sha256
    field.disclosed_fields.extend(sorted(decision.disclose))
