"""A back end's answer that fails its code formats never reaches a caller: it is a back-end
error, audited, with a message of our own."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from adapters.social_insurance import Population, ReferenceServer, start_reference_server
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from tests.integration.calls import insurance_status, issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
EMPLOYEE = "110101199003074477"
POISON = "<script>alert(1)</script>\u202e\x00"


def _poisoned_population() -> Population:
    """The default citizens, but the employee's first scheme has a hostile ``insutype``."""

    def poison(person: Any) -> Any:
        if person.id_number != EMPLOYEE:
            return person
        first, *rest = person.schemes
        return dataclasses.replace(
            person, schemes=(dataclasses.replace(first, insutype=POISON), *rest)
        )

    return Population(tuple(poison(p) for p in Population.default()))


@pytest.fixture
async def poisoned_backend() -> AsyncIterator[ReferenceServer]:
    server = await start_reference_server(population=_poisoned_population())
    yield server
    await server.close()


async def test_a_hostile_insutype_is_refused_as_a_malformed_back_end_answer(
    gateway_factory: Callable[..., Any], pki: PkiLayout, poisoned_backend: ReferenceServer
) -> None:
    gateway: Gateway = await gateway_factory(
        backends={"social_insurance": {"url": poisoned_backend.url}}
    )
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        token = await issue_token(app, EMPLOYEE)
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_status(hosp, EMPLOYEE, token)

    error = info.value
    assert (error.code(), reason(error)) == (grpc.StatusCode.UNAVAILABLE, "backend_malformed")
    assert error.details() == "social insurance back end sent a malformed answer"
    trailers = dict(error.trailing_metadata() or ())
    for text in (json.dumps(trailers, ensure_ascii=False), error.details() or ""):
        assert "script" not in text and "\u202e" not in text and "\x00" not in text
    index = int(trailers["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record = json.loads(entry.leaf)["r"]
    assert (record["rpc"], record["outcome"], record["reason"], record["released_sha256"]) == (
        "onecard.v1.InsuranceService/GetInsuranceStatus",
        "UNAVAILABLE",
        "backend_malformed",
        "",
    )
    assert b"script" not in entry.leaf
