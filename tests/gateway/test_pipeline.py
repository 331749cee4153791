"""The pipeline's stages in order, with fakes of the card registry and the token ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from gateway.api.onecard.v1 import card_pb2, transit_pb2
from gateway.audit.log import TokenSpend
from gateway.audit.record import Pseudonymizer
from gateway.basis import (
    BasisClaim,
    BasisStage,
    CardPresentClaim,
    CitizenAppClaim,
    ConsentClaim,
    EmergencyClaim,
    NoBasis,
    NoClaim,
    StatutoryClaim,
    claimed,
    default_verifiers,
)
from gateway.cards import CardStage, ResolvedCard
from gateway.config import REPO_POLICIES
from gateway.context import Call, Caller
from gateway.errors import (
    BackendUnavailable,
    BasisRefused,
    CardNotFound,
    CardNotUsable,
    GatewayError,
    MalformedCardNumber,
    NotSupported,
    PolicyDenied,
)
from gateway.findings import Findings
from gateway.metrics import Metrics
from gateway.orgs import Org, OrgType
from gateway.pipeline import Ask, Pipeline
from gateway.policy import PolicyEngine
from gateway.ports import CardStatus
from gateway.tokens import CardTokens
from tests.gateway.fakes import FakeConsents, FakeLedger, FakeRegistry, holder

NORMAL, LOST, UNKNOWN = "11010519491231002X", "110101199003074477", "110101198001010010"
LIBRARY = Org("lib-1", OrgType.LIBRARY, "library", "110105")
TRANSIT = Org("transit-1", OrgType.TRANSIT, "transit", "110105")
APP = Org("app-1", OrgType.CITIZEN_APP, "app", "110000")


@pytest.fixture(scope="module")
def policy() -> PolicyEngine:
    return PolicyEngine.load(REPO_POLICIES)


class Path_:
    """A pipeline wired to fakes, and what it saw."""

    def __init__(self, policy: PolicyEngine) -> None:
        self.registry = FakeRegistry({NORMAL: holder(1), LOST: holder(2, CardStatus.REPORTED_LOST)})
        self.ledger = FakeLedger()
        self.tokens = CardTokens(bytes(32), self.ledger)
        self.consents = FakeConsents()
        self.pipeline = Pipeline(
            CardStage(self.registry, timeout=1.0),
            BasisStage(default_verifiers(self.tokens, self.consents, lambda n: "card:" + n)),
            policy,
            Metrics.create(),
            Pseudonymizer(b"k" * 32),
            tz=dt.UTC,
        )
        self.fetched = 0
        self.findings: list[Findings] = []

    async def verify(
        self, org: Org, card: str, claim: BasisClaim, fetch: Callable[..., object] | None = None
    ) -> tuple[card_pb2.VerifyCardResponse, Findings]:
        call = Call(
            "rid", "onecard.v1.CardService/VerifyCard", Caller(org, "ab"), _now(), self.found
        )

        async def describe(card: ResolvedCard) -> card_pb2.VerifyCardResponse:
            self.fetched += 1
            if fetch is not None:
                fetch()
            return card_pb2.VerifyCardResponse(
                card_holder_valid=True, masked_name="张*", issuing_district="110105"
            )

        ask = Ask("VerifyCard", card, "LIBRARY_SERVICE", claim)
        return await self.pipeline.run(call, ask, describe), self.findings[-1]

    def found(self, findings: Findings) -> None:
        self.findings.append(findings)


def _now() -> dt.datetime:
    return dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def path(policy: PolicyEngine) -> Path_:
    return Path_(policy)


@pytest.mark.parametrize(
    "claim",
    [NoClaim(), CardPresentClaim("oc1." + "A" * 86), CitizenAppClaim()],
)
@pytest.mark.parametrize("card", [NORMAL, LOST, UNKNOWN])
async def test_without_a_basis_the_registry_is_never_asked(
    path: Path_, claim: BasisClaim, card: str
) -> None:
    with pytest.raises(BasisRefused):
        await path.verify(TRANSIT, card, claim)
    assert path.registry.lookups == 0
    # no subject: the refusal names only the kind of basis claimed
    assert path.findings == [Findings(purpose="LIBRARY_SERVICE", basis=claimed(claim))]


async def test_a_replayed_token_refusal_names_its_citizen_for_their_history(path: Path_) -> None:
    token = path.tokens.issue(NORMAL).token
    _, answered = await path.verify(LIBRARY, NORMAL, CardPresentClaim(token))
    assert isinstance(answered.spend, TokenSpend)
    path.ledger.redeemed.add(answered.spend.token_id)
    with pytest.raises(BasisRefused) as info:
        await path.verify(LIBRARY, NORMAL, CardPresentClaim(token))
    assert info.value.reason == "token_replayed"
    refused = path.findings[-1]
    assert (refused.subject, refused.basis) == (answered.subject, "card_present")
    assert refused.decision == ""  # nothing was decided: the basis did not hold


async def test_a_token_of_another_card_names_nobody(path: Path_) -> None:
    token = path.tokens.issue(LOST).token
    with pytest.raises(BasisRefused):
        await path.verify(LIBRARY, NORMAL, CardPresentClaim(token))
    assert path.registry.lookups == 0 and path.findings[-1].subject == ""


@pytest.mark.parametrize(
    ("claim", "reason", "about"),
    [
        (ConsentClaim("cns_unknown"), "consent_unknown", ""),
        # A break-glass claim on a card is an attempt on its holder's data: once refused, the
        # registry names the holder for the audit entry (their history); the answer is the same.
        (EmergencyClaim("LIFE_THREATENING", "why"), "emergency_not_hospital", "psn-0001"),
    ],
)
async def test_consent_and_emergency_refusals_come_before_the_registry(
    path: Path_, claim: BasisClaim, reason: str, about: str
) -> None:
    with pytest.raises(BasisRefused) as info:
        await path.verify(LIBRARY, NORMAL, claim)
    assert info.value.reason == reason
    assert path.findings[-1].decision == ""  # refused at the basis: no policy was asked
    assert path.registry.lookups == (1 if about else 0)
    assert path.findings[-1].subject == (Pseudonymizer(b"k" * 32)(about) if about else "")


async def test_a_malformed_card_number_is_refused_before_anything(path: Path_) -> None:
    with pytest.raises(MalformedCardNumber):
        await path.verify(LIBRARY, "440305198512120029", NoClaim())
    assert path.registry.lookups == 0


@pytest.mark.parametrize(("card", "error"), [(LOST, CardNotUsable), (UNKNOWN, CardNotFound)])
async def test_with_a_basis_the_card_status_is_told(
    path: Path_, card: str, error: type[GatewayError]
) -> None:
    token = path.tokens.issue(card).token
    with pytest.raises(error):
        await path.verify(LIBRARY, card, CardPresentClaim(token))
    assert path.registry.lookups == 1


async def test_an_answer_names_its_token_for_redemption_and_discloses_by_policy(
    path: Path_,
) -> None:
    token = path.tokens.issue(NORMAL).token
    response, found = await path.verify(LIBRARY, NORMAL, CardPresentClaim(token))
    assert isinstance(found.spend, TokenSpend) and found.basis == "card_present"
    assert found.basis_ref == f"token:{found.spend.token_id.hex()}"
    assert found.decision == "allow" and found.subject == Pseudonymizer(b"k" * 32)("psn-0001")
    assert found.backend == "" and found.purpose == "LIBRARY_SERVICE"
    assert path.findings == [found]  # reported once
    assert response.card_holder_valid
    assert set(response.decision.disclosed_fields) >= {"card_holder_valid"}
    assert not path.ledger.redeemed  # the pipeline only names it: the audit log redeems


async def test_a_failed_fetch_leaves_the_token_unnamed(path: Path_) -> None:
    token = path.tokens.issue(NORMAL).token

    def fail() -> None:
        raise BackendUnavailable("down")

    with pytest.raises(BackendUnavailable):
        await path.verify(LIBRARY, NORMAL, CardPresentClaim(token), fail)
    (found,) = path.findings  # reported once, with what was found before the failure
    assert found.spend is None  # so the audit stage redeems nothing
    assert (found.basis, found.decision) == ("card_present", "allow") and found.subject


async def test_a_policy_denial_happens_after_the_card_and_before_the_fetch(path: Path_) -> None:
    token = path.tokens.issue(NORMAL).token
    with pytest.raises(PolicyDenied):
        await path.verify(TRANSIT, NORMAL, CardPresentClaim(token))
    assert path.registry.lookups == 1 and path.fetched == 0
    (found,) = path.findings
    assert found.decision == "deny" and found.subject and found.backend == ""


async def test_only_the_citizen_app_claims_the_citizen_app_basis(path: Path_) -> None:
    with pytest.raises(BasisRefused) as info:
        await path.verify(LIBRARY, NORMAL, CitizenAppClaim())
    assert info.value.reason == "citizen_app_only"
    with pytest.raises(PolicyDenied):  # the app has the basis; policy decides the action
        await path.verify(APP, NORMAL, CitizenAppClaim())


REGULATOR = Org("reg-1", OrgType.REGULATOR, "regulator", "110000")


async def _oversee(path: Path_, org: Org, card: str = "") -> tuple[str, Findings]:
    call = Call(
        "rid", "onecard.v1.AuditService/SearchEntries", Caller(org, "ab"), _now(), path.found
    )

    async def read(subject: str) -> str:
        return f"entries about {subject or 'anyone'}"

    ask = Ask("SearchEntries", card, "HCOMPL", StatutoryClaim())
    return await path.pipeline.oversee(call, ask, read), path.findings[-1]


async def test_oversight_of_the_log_goes_through_basis_and_policy(path: Path_) -> None:
    result, found = await _oversee(path, REGULATOR)
    assert result == "entries about anyone"
    assert (found.basis, found.decision) == ("statutory", "allow")
    assert found.policies == ("regulator-reads-audit-log",)
    with pytest.raises(PolicyDenied):
        await _oversee(path, LIBRARY, LOST)
    assert path.registry.lookups == 0  # the card is looked up only after the decision


async def test_a_search_by_citizen_is_logged_under_the_pseudonym_whatever_the_status(
    path: Path_,
) -> None:
    result, found = await _oversee(path, REGULATOR, LOST)
    assert found.subject == Pseudonymizer(b"k" * 32)("psn-0002")
    assert result == f"entries about {found.subject}"


async def test_a_claim_without_a_registered_verifier_is_not_supported() -> None:
    stage = BasisStage({NoClaim: NoBasis()})
    with pytest.raises(NotSupported, match="CardPresentClaim"):
        await stage.establish(CardPresentClaim("x"), NORMAL, Caller(LIBRARY, "ab"))


@pytest.mark.parametrize(("eligible", "word"), [(True, "eligible"), (False, "not_eligible")])
async def test_an_answer_word_is_recorded_after_the_backend_and_only_for_an_answer(
    path: Path_, eligible: bool, word: str
) -> None:
    call = Call(
        "rid", "onecard.v1.TransitService/CheckConcession", Caller(TRANSIT, "ab"), _now(),
        path.found,
    )  # fmt: skip
    ask = Ask(
        "CheckConcession", NORMAL, "FARE_CONCESSION",
        CardPresentClaim(path.tokens.issue(NORMAL).token),
        backend="eligibility:senior", category="transit",
        answer=lambda r: "eligible" if r.eligible else "not_eligible",  # type: ignore[attr-defined]
    )  # fmt: skip

    async def check(card: ResolvedCard) -> transit_pb2.CheckConcessionResponse:
        return transit_pb2.CheckConcessionResponse(eligible=eligible)

    async def fail(card: ResolvedCard) -> transit_pb2.CheckConcessionResponse:
        raise BackendUnavailable("down")

    await path.pipeline.run(call, ask, check)
    with pytest.raises(BackendUnavailable):
        await path.pipeline.run(call, ask, fail)

    answered, failed = path.findings
    assert (answered.backend, answered.category) == (f"eligibility:senior:{word}", "transit")
    assert failed.backend == "eligibility:senior"  # asked, no answer to state
