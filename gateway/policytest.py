"""Policy tests: cases with expected decisions, kept beside the policies in ``policies/tests/``.

Each ``*.toml`` file holds ``[[case]]`` tables; run them with ``onecard policy test`` (and the
test suite runs them too). A case names the principal's org type, the action, the context, and
what must come out: ``expect = "allow"`` or ``"deny"``, optionally the exact matched policy ids
(``policies``) and, for allows, the exact disclosed fields (``disclose``)::

    [[case]]
    name = "a hospital reads insurance status with the patient present"
    org_type = "hospital"
    action = "GetInsuranceStatus"
    purpose = "COVERAGE"
    basis = "card_present"
    expect = "allow"
    policies = ["hospital-reads-insurance-status"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import SetupError
from gateway.policy import Decision, PolicyEngine, PolicyRequest
from gateway.services import response_types


class PolicyCase(BaseModel):
    """One policy test case as written in the TOML file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    org_type: str
    action: str
    purpose: str
    basis: str
    expect: Literal["allow", "deny"]
    org_status: str = "active"
    org_district: str = "110105"
    card_status: str = "normal"
    holder_district: str = "110105"
    hour: int = 10
    category: str = ""
    resource: Literal["CardHolder", "AuditLog"] = "CardHolder"
    policies: list[str] | None = None
    disclose: list[str] | None = None

    def request(self) -> PolicyRequest:
        return PolicyRequest(
            org_id="test-org",
            org_type=self.org_type,
            org_district=self.org_district,
            org_status=self.org_status,
            action=self.action,
            holder_id="test-holder",
            holder_district=self.holder_district,
            card_status=self.card_status,
            purpose=self.purpose,
            basis=self.basis,
            hour=self.hour,
            resource_type=self.resource,
            category=self.category,
        )


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one case: ``problems`` is empty when it passed."""

    source: str
    case: PolicyCase
    decision: Decision
    problems: tuple[str, ...]


class PolicyCaseError(SetupError):
    """A case file cannot be read."""


def load_cases(directory: Path) -> list[tuple[str, PolicyCase]]:
    """Every case of every ``*.toml`` file in ``directory``, labelled ``file:index``."""
    cases: list[tuple[str, PolicyCase]] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyCaseError(f"{path}: not valid TOML: {exc}") from None
        for i, item in enumerate(raw.get("case", [])):
            try:
                cases.append((f"{path.name}:{i + 1}", PolicyCase.model_validate(item)))
            except ValidationError as exc:
                raise PolicyCaseError(f"{path}: case {i + 1}: {exc}") from None
    return cases


def run_case(engine: PolicyEngine, source: str, case: PolicyCase) -> CaseResult:
    """Evaluate one case and list every way the decision differs from the expectation."""
    decision = engine.decide(case.request())
    problems: list[str] = []
    got = "allow" if decision.allowed else "deny"
    if got != case.expect:
        problems.append(f"expected {case.expect}, got {got}")
    if case.policies is not None and sorted(case.policies) != list(decision.policy_ids):
        problems.append(
            f"expected policies {sorted(case.policies)}, got {list(decision.policy_ids)}"
        )
    if case.disclose is not None and set(case.disclose) != decision.disclose:
        problems.append(
            f"expected disclosed fields {sorted(case.disclose)}, got {sorted(decision.disclose)}"
        )
    unknown = [p for p in case.policies or () if p not in engine.policy_ids]
    if unknown:
        problems.append(f"the case names policies that do not exist: {unknown}")
    return CaseResult(source, case, decision, tuple(problems))


def run_all(policies_dir: Path) -> list[CaseResult]:
    """Load the policy set and run every case under ``policies_dir/tests``."""
    engine = PolicyEngine.load(policies_dir, responses=response_types())
    return [run_case(engine, src, case) for src, case in load_cases(policies_dir / "tests")]
