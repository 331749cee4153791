"""The policy stage: Cedar decides allow or deny; annotations say what may be disclosed.

The policy set is every ``*.cedar`` file in the policies directory, validated against
``schema.cedarschema`` when it is loaded; an invalid set refuses to load with Cedar's message.
The parsed policy set and schema are kept in memory (re-parsing per request costs 3.5-16x).
A decision is a pure function of the policy set and the ``PolicyRequest``, so the engine keeps
the last ``DECISIONS_KEPT`` of them (an evaluation costs 140-220 µs, most of a call's Cedar
share; a kept one about 2 µs). The key is the whole request, except the card holder's id when
no policy names an entity other than an action by its id (then the id cannot change the
decision): card status, org status, basis, consent, purpose and hour are all part of the key,
so nothing the policies can see is cached past its change.

Every policy carries ``@id("...")`` (unique); permits carry ``@disclose("a,b.c")``, the dotted
response fields they allow out, and may carry ``@obligation("...")``. A decision records the ids
of the policies that determined it and the SHA-256 of the policy set, so it can be replayed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

import cedarpy
from google.protobuf.descriptor import Descriptor

from gateway.disclosure import unknown_paths
from gateway.errors import SetupError

SCHEMA_FILE = "schema.cedarschema"
DECISIONS_KEPT = 4096
_NAMESPACE = "OneCard"


class PolicySetInvalid(SetupError):
    """The policy files do not parse or do not validate against the schema."""


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What the policy decides on: principal (org), action, resource (card holder), context."""

    org_id: str
    org_type: str
    org_district: str
    org_status: str
    action: str
    holder_id: str
    holder_district: str
    card_status: str
    purpose: str
    basis: str
    hour: int
    resource_type: str = "CardHolder"
    category: str = ""  # the data category the call reads ("insurance", ...), "" for none
    consent: ConsentContext | None = None  # the consent relied on (basis "consent")
    holds_record: bool = False  # the caller keeps the record asked (a library its own patron's)


@dataclass(frozen=True, slots=True)
class ConsentContext:
    """The consent a request relies on, as policies see it (``context.consent``)."""

    consent_id: str
    categories: tuple[str, ...]
    purposes: tuple[str, ...]


_KEY_WITH_HOLDER = attrgetter(*(f.name for f in fields(PolicyRequest)))
_KEY = attrgetter(*(f.name for f in fields(PolicyRequest) if f.name != "holder_id"))
"""The decision cache's key: every field of the request (but the holder's id, when no policy
names a card holder by id); a new field of ``PolicyRequest`` joins it by itself."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one policy evaluation."""

    allowed: bool
    policy_ids: tuple[str, ...]
    policy_set_sha256: str
    disclose: frozenset[str] = field(default_factory=frozenset)
    obligations: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Annotations:
    disclose: frozenset[str]
    obligations: tuple[str, ...]
    actions: frozenset[str] | None  # the actions the policy's scope names (None: every action)


class PolicyEngine:
    """A loaded, validated policy set and the means to evaluate requests against it."""

    def __init__(self, sources: Mapping[str, str], schema_text: str) -> None:
        self.sha256 = policy_set_digest(sources)
        text = "\n".join(sources[name] for name in sorted(sources))
        try:
            self._schema = cedarpy.Schema.from_str(schema_text)
            self._policies = cedarpy.PolicySet.from_str(text)
        except ValueError as exc:
            raise PolicySetInvalid(f"policy set does not parse: {exc}") from None
        result = cedarpy.validate_policies(text, schema_text)
        if not result.validation_passed:
            problems = "; ".join(str(e) for e in result.errors)
            raise PolicySetInvalid(f"policy set does not validate against the schema: {problems}")
        self._annotations = _read_annotations(text)
        self._names_entities = _names_entities(json.loads(cedarpy.policies_to_json_str(text)))
        self._decisions: dict[tuple[Any, ...], Decision] = {}

    @classmethod
    def load(
        cls, directory: Path, *, responses: Mapping[str, Descriptor] | None = None
    ) -> PolicyEngine:
        """Load every ``*.cedar`` file and the schema from ``directory``.

        With ``responses`` (each action's response message), every ``@disclose`` path is checked
        against the messages of the actions its policy names, so a typo refuses to load instead
        of silently disclosing nothing.
        """
        schema_path = directory / SCHEMA_FILE
        if not schema_path.is_file():
            raise PolicySetInvalid(f"{directory}: no {SCHEMA_FILE}")
        sources = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.cedar"))}
        if not sources:
            raise PolicySetInvalid(f"{directory}: no *.cedar policy files")
        engine = cls(sources, schema_path.read_text(encoding="utf-8"))
        if responses is not None:
            engine.check_disclosures(responses)
        return engine

    def check_disclosures(self, responses: Mapping[str, Descriptor]) -> None:
        """Raise ``PolicySetInvalid`` if an ``@disclose`` path names no field of a response."""
        problems = []
        for policy_id, ann in sorted(self._annotations.items()):
            if not ann.disclose:
                continue
            for action in sorted(ann.actions if ann.actions is not None else responses):
                descriptor = responses.get(action)
                if descriptor is None:
                    problems.append(f"{policy_id!r} discloses fields of {action!r}, no RPC")
                    continue
                for path in unknown_paths(descriptor, sorted(ann.disclose)):
                    problems.append(
                        f"{policy_id!r}: @disclose {path!r} is not a field of "
                        f"{descriptor.full_name} ({action})"
                    )
        if problems:
            raise PolicySetInvalid("policy annotations name unknown fields: " + "; ".join(problems))

    @property
    def policy_ids(self) -> frozenset[str]:
        """The @id of every policy in the set."""
        return frozenset(self._annotations)

    def decide(self, req: PolicyRequest) -> Decision:
        """Evaluate one request. Deny unless some permit matches and no forbid does."""
        key = _KEY_WITH_HOLDER(req) if self._names_entities else _KEY(req)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._evaluate(req)
            if len(self._decisions) >= DECISIONS_KEPT:
                del self._decisions[next(iter(self._decisions))]  # the oldest kept
            self._decisions[key] = decision
        return decision

    def _evaluate(self, req: PolicyRequest) -> Decision:
        result = cedarpy.is_authorized(_cedar_request(req), self._policies, _entities(req))
        ids_by_reason: dict[str, str] = result.diagnostics.id_annotations_by_reason
        matched = tuple(sorted(ids_by_reason.get(r, r) for r in result.diagnostics.reasons))
        errors = tuple(result.diagnostics.errors)
        if not result.allowed:
            return Decision(False, matched, self.sha256, errors=errors)
        disclose: set[str] = set()
        obligations: list[str] = []
        for policy_id in matched:
            ann = self._annotations[policy_id]
            disclose |= ann.disclose
            obligations.extend(ann.obligations)
        return Decision(
            True, matched, self.sha256, frozenset(disclose), tuple(sorted(set(obligations))), errors
        )


def policy_set_digest(sources: Mapping[str, str]) -> str:
    """SHA-256 over the policy files in name order: name, NUL, length, NUL, text for each."""
    h = hashlib.sha256()
    for name in sorted(sources):
        data = sources[name].encode("utf-8")
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _read_annotations(text: str) -> dict[str, _Annotations]:
    policies = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    out: dict[str, _Annotations] = {}
    for internal_id, policy in policies.items():
        ann: dict[str, str] = policy.get("annotations", {})
        policy_id = ann.get("id")
        if not policy_id:
            raise PolicySetInvalid(f"policy {internal_id} has no @id annotation")
        if policy_id in out:
            raise PolicySetInvalid(f"two policies share @id({policy_id!r})")
        disclose = frozenset(p.strip() for p in ann.get("disclose", "").split(",") if p.strip())
        if disclose and policy["effect"] != "permit":
            raise PolicySetInvalid(f"policy {policy_id!r}: @disclose only makes sense on a permit")
        obligations = tuple(o.strip() for o in ann.get("obligation", "").split(",") if o.strip())
        out[policy_id] = _Annotations(disclose, obligations, _scope_actions(policy["action"]))
    return out


def _names_entities(policies: Any) -> bool:
    """Whether a policy (its JSON form) names an entity other than an action by its id."""
    if isinstance(policies, list):
        return any(_names_entities(item) for item in policies)
    if not isinstance(policies, dict):
        return False
    if "__entity" in policies:
        return True
    kind = policies.get("type")
    if isinstance(kind, str) and "id" in policies and kind != f"{_NAMESPACE}::Action":
        return True
    return any(_names_entities(value) for value in policies.values())


def _scope_actions(scope: Mapping[str, Any]) -> frozenset[str] | None:
    """The action ids a policy's action scope names; None if it names every action."""
    if scope.get("op") == "All":
        return None
    entities = scope.get("entities") or [scope["entity"]]
    return frozenset(str(e["id"]) for e in entities)


def _uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": f"{_NAMESPACE}::{kind}", "id": ident}


def _cedar_request(req: PolicyRequest) -> dict[str, Any]:
    return {
        "principal": _uid("Org", req.org_id),
        "action": _uid("Action", req.action),
        "resource": _uid(req.resource_type, req.holder_id),
        "context": _context(req),
    }


def _context(req: PolicyRequest) -> dict[str, Any]:
    context: dict[str, Any] = {
        "purpose": req.purpose,
        "basis": req.basis,
        "hour": req.hour,
        "category": req.category,
        "holds_record": req.holds_record,
    }
    if req.consent is not None:
        context["consent"] = {
            "id": req.consent.consent_id,
            "categories": list(req.consent.categories),
            "purposes": list(req.consent.purposes),
        }
    return context


def _entities(req: PolicyRequest) -> list[dict[str, Any]]:
    return [
        {
            "uid": _uid("Org", req.org_id),
            "attrs": {
                "org_type": req.org_type,
                "district": req.org_district,
                "status": req.org_status,
            },
            "parents": [],
        },
        {
            "uid": _uid(req.resource_type, req.holder_id),
            "attrs": (
                {"issuing_district": req.holder_district, "card_status": req.card_status}
                if req.resource_type == "CardHolder"
                else {}
            ),
            "parents": [],
        },
    ]
