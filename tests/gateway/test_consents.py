"""The rules of a grant and a consent's derived status."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from gateway.consents import (
    MAX_VALIDITY,
    Consent,
    ConsentStatus,
    Grant,
    Grantee,
    check_grant,
    new_consent_id,
)
from gateway.errors import InvalidRequest

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
GRANT = Grant(
    Grantee(org_id="hosp-bj-002"), ("insurance",), ("COVERAGE",), NOW, NOW + dt.timedelta(30), 0
)


def test_a_well_formed_grant_passes() -> None:
    check_grant(GRANT)
    check_grant(dataclasses.replace(GRANT, categories=("health.lab",)))
    check_grant(dataclasses.replace(GRANT, categories=("insurance", "library")))
    check_grant(dataclasses.replace(GRANT, valid_until=NOW + MAX_VALIDITY))
    check_grant(dataclasses.replace(GRANT, grantee=Grantee(org_type="library", district="110101")))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"categories": ("health.lab", "insurance")}, "PIPL art. 29"),
        ({"categories": ("health.lab", "health.imaging")}, "PIPL art. 29"),
        ({"categories": ("insurance", "library", "transit")}, "every kind of data"),
        ({"categories": ()}, "at least one data category"),
        ({"categories": ("insurance", "insurance")}, "at most once"),
        ({"purposes": ()}, "at least one purpose"),
        ({"valid_until": NOW}, "after valid_from"),
        ({"valid_until": NOW + MAX_VALIDITY + dt.timedelta(seconds=1)}, "at most 366 days"),
        ({"max_uses": 10**7}, "max_uses"),
        ({"grantee": Grantee(org_id="Hosp BJ")}, "grantee.org_id"),
        ({"grantee": Grantee(org_type="regulator", district="110105")}, "org_type must be"),
        ({"grantee": Grantee(org_type="insurer", district="110105")}, "org_type must be"),
        ({"grantee": Grantee(org_type="hospital", district="11010")}, "6-digit"),
    ],
)
def test_a_grant_that_breaks_a_rule_is_refused_saying_which(
    changes: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_grant(dataclasses.replace(GRANT, **changes))  # type: ignore[arg-type]
    assert words in info.value.message


def test_the_status_is_derived_revoked_first_then_expired_then_exhausted() -> None:
    consent = Consent(
        "cns_x", "s", "b", GRANT.grantee, ("insurance",), ("COVERAGE",),
        NOW, NOW + dt.timedelta(days=1), 2, 0, NOW,
    )  # fmt: skip
    later = NOW + dt.timedelta(days=2)
    used_up = dataclasses.replace(consent, uses=2)
    assert consent.status(NOW) is ConsentStatus.ACTIVE
    assert used_up.status(NOW) is ConsentStatus.EXHAUSTED
    assert used_up.status(later) is ConsentStatus.EXPIRED
    assert dataclasses.replace(used_up, revoked_at=NOW).status(later) is ConsentStatus.REVOKED
    assert dataclasses.replace(consent, max_uses=0, uses=99).status(NOW) is ConsentStatus.ACTIVE


def test_consent_ids_are_random_and_prefixed() -> None:
    ids = {new_consent_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("cns_") and len(i) == 28 and i[4:].isalnum() for i in ids)
