import dataclasses
import shutil
from pathlib import Path

import pytest

from gateway.api.onecard.v1 import (
    audit_pb2,
    card_pb2,
    consent_pb2,
    health_pb2,
    insurance_pb2,
    library_pb2,
    transit_pb2,
)
from gateway.config import REPO_POLICIES
from gateway.disclosure import unknown_paths
from gateway.policy import PolicyEngine, PolicyRequest, PolicySetInvalid, policy_set_digest
from gateway.policytest import load_cases, run_case
from gateway.services import response_types

CASES = load_cases(REPO_POLICIES / "tests")
RESPONSES = {
    "GetCheckpoint": audit_pb2.GetCheckpointResponse.DESCRIPTOR,
    "GetEntries": audit_pb2.GetEntriesResponse.DESCRIPTOR,
    "SearchEntries": audit_pb2.SearchEntriesResponse.DESCRIPTOR,
    "IssueCardToken": card_pb2.IssueCardTokenResponse.DESCRIPTOR,
    "VerifyCard": card_pb2.VerifyCardResponse.DESCRIPTOR,
    "GetInsuranceStatus": insurance_pb2.GetInsuranceStatusResponse.DESCRIPTOR,
    "GetReport": audit_pb2.GetReportResponse.DESCRIPTOR,
    "GrantConsent": consent_pb2.GrantConsentResponse.DESCRIPTOR,
    "RevokeConsent": consent_pb2.RevokeConsentResponse.DESCRIPTOR,
    "ListConsents": consent_pb2.ListConsentsResponse.DESCRIPTOR,
    "GetAccessHistory": consent_pb2.GetAccessHistoryResponse.DESCRIPTOR,
    "GetPatronStatus": library_pb2.GetPatronStatusResponse.DESCRIPTOR,
    "ListHealthRecords": health_pb2.ListHealthRecordsResponse.DESCRIPTOR,
    "GetHealthRecord": health_pb2.GetHealthRecordResponse.DESCRIPTOR,
    "CheckConcession": transit_pb2.CheckConcessionResponse.DESCRIPTOR,
}


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.load(REPO_POLICIES)


def test_there_are_policy_cases() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize(("source", "case"), CASES, ids=[src for src, _ in CASES])
def test_policy_case(engine: PolicyEngine, source: str, case: object) -> None:
    result = run_case(engine, source, case)  # type: ignore[arg-type]
    assert result.problems == ()


def test_every_disclose_annotation_names_real_response_fields(engine: PolicyEngine) -> None:
    for case_source, case in CASES:
        decision = engine.decide(case.request())
        bad = unknown_paths(RESPONSES[case.action], decision.disclose)
        assert bad == [], f"{case_source}: {bad}"


def test_the_decision_carries_the_policy_set_digest(engine: PolicyEngine) -> None:
    sources = {p.name: p.read_text() for p in REPO_POLICIES.glob("*.cedar")}
    assert engine.sha256 == policy_set_digest(sources)
    assert len(engine.sha256) == 64


def test_changing_one_policy_changes_the_digest() -> None:
    sources = {p.name: p.read_text() for p in REPO_POLICIES.glob("*.cedar")}
    changed = dict(sources, **{"card.cedar": sources["card.cedar"] + "\n"})
    assert policy_set_digest(sources) != policy_set_digest(changed)


def _copy_policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, target)
    return target


def test_a_policy_that_violates_the_schema_refuses_to_load(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "bad.cedar").write_text(
        '@id("typo")\npermit (principal, action, resource) when { principal.org_tpye == "x" };\n'
    )
    with pytest.raises(PolicySetInvalid, match="org_tpye"):
        PolicyEngine.load(target)


def test_a_policy_that_does_not_parse_refuses_to_load(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "bad.cedar").write_text('@id("broken")\npermit (principal, action resource);\n')
    with pytest.raises(PolicySetInvalid, match="does not parse"):
        PolicyEngine.load(target)


def test_policies_need_unique_ids(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "dup.cedar").write_text(
        '@id("only-normal-cards")\nforbid (principal, action, resource);\n'
    )
    with pytest.raises(PolicySetInvalid, match="share @id"):
        PolicyEngine.load(target)


def test_a_forbid_overrides_a_permit(engine: PolicyEngine) -> None:
    allowed = PolicyRequest(
        "h1", "hospital", "110105", "active", "GetInsuranceStatus",
        "p1", "110105", "normal", "COVERAGE", "card_present", 10,
    )  # fmt: skip
    assert engine.decide(allowed).allowed
    denied = engine.decide(dataclasses.replace(allowed, org_status="suspended"))
    assert not denied.allowed
    assert denied.policy_ids == ("suspended-orgs-are-refused",)
    assert denied.disclose == frozenset()


def test_a_kept_decision_follows_every_field_the_policies_see(engine: PolicyEngine) -> None:
    asked = PolicyRequest(
        "h1", "hospital", "110105", "active", "GetInsuranceStatus",
        "p1", "110105", "normal", "COVERAGE", "card_present", 10,
    )  # fmt: skip
    assert engine.decide(asked).allowed
    assert engine.decide(dataclasses.replace(asked, holder_id="p2")).allowed
    lost = engine.decide(dataclasses.replace(asked, card_status="reported_lost"))
    assert not lost.allowed
    assert not engine.decide(dataclasses.replace(asked, basis="citizen_app")).allowed
    assert engine.decide(asked).allowed


def test_a_policy_naming_a_card_holder_keeps_the_holder_in_the_decision(tmp_path: Path) -> None:
    target = _copy_policies(tmp_path)
    (target / "blocked.cedar").write_text(
        '@id("one-blocked-holder")\n'
        'forbid (principal, action, resource == OneCard::CardHolder::"p-blocked");\n'
    )
    engine = PolicyEngine.load(target)
    asked = PolicyRequest(
        "h1", "hospital", "110105", "active", "GetInsuranceStatus",
        "p1", "110105", "normal", "COVERAGE", "card_present", 10,
    )  # fmt: skip
    assert engine.decide(asked).allowed
    blocked = engine.decide(dataclasses.replace(asked, holder_id="p-blocked"))
    assert not blocked.allowed
    assert blocked.policy_ids == ("one-blocked-holder",)


@pytest.mark.parametrize(
    ("scope", "path", "named"),
    [
        ('action == OneCard::Action::"VerifyCard"', "masked_nam", "VerifyCardResponse"),
        (
            'action in [OneCard::Action::"VerifyCard", OneCard::Action::"GetInsuranceStatus"]',
            "masked_name",
            "GetInsuranceStatusResponse",  # masked_name is a VerifyCard field only
        ),
        ("action", "masked_name", "GetCheckpointResponse"),  # every action, every response
    ],
)
def test_a_disclose_path_that_names_no_response_field_refuses_to_load(
    tmp_path: Path, scope: str, path: str, named: str
) -> None:
    target = _copy_policies(tmp_path)
    (target / "typo.cedar").write_text(
        f'@id("typo")\n@disclose("{path}")\npermit (principal, {scope}, resource);\n'
    )
    PolicyEngine.load(target)  # without the response types, nothing to check against
    with pytest.raises(PolicySetInvalid, match=f"'typo'.*{named}"):
        PolicyEngine.load(target, responses=response_types())


def test_the_shipped_policies_name_only_real_fields() -> None:
    PolicyEngine.load(REPO_POLICIES, responses=response_types())
