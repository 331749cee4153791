"""Emergency justifications and refused reads of unusable cards (found by an outside review).

Each test was written before its fix and failed without it:

- a break-glass claim (or any established basis) on a card that is not in normal status was
  refused with an audit entry about nobody, so the card's holder never saw in their history
  that a hospital claimed emergency access to their lost card (docs/consent.md: an emergency
  claim on their card is in their history);
- two emergency accesses under the same request id (a caller that reuses its ``x-request-id``,
  as retries do) kept only the second justification: the regulator's report showed the first
  access without its justification, so a hospital could erase the text it gave;
- a justification could hold terminal escape sequences, line breaks or bidirectional overrides,
  which the regulator's table printed as they came: a hospital could rewrite or hide its row.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, common_pb2
from gateway.client import refusal_reason as reason
from gateway.ports import CardStatus
from tests.integration.calls import emergency_basis, insurance_on
from tests.integration.conftest import HOSPITAL, REGULATOR

pytestmark = pytest.mark.integration
Channel = Callable[[str], grpc.aio.Channel]
URGENT = common_pb2.EMERGENCY_REASON_LIFE_THREATENING
ETREAT = common_pb2.PURPOSE_ETREAT


async def _entries_about(reg: grpc.aio.Channel, card: str) -> list[dict[str, object]]:
    found = await audit_pb2_grpc.AuditServiceStub(reg).SearchEntries(
        audit_pb2.SearchEntriesRequest(
            card=common_pb2.CardRef(card_number=card), first_page=True, page_size=100
        )
    )
    return [json.loads(e.leaf)["r"] for e in found.entries]


async def test_a_break_glass_claim_on_a_lost_card_is_about_its_holder(
    channel: Channel, population: Population
) -> None:
    lost = population.first(card_status=CardStatus.REPORTED_LOST).id_number
    why = "found unconscious with this card"
    async with channel(HOSPITAL) as hosp, channel(REGULATOR) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_on(hosp, lost, emergency_basis(URGENT, why), ETREAT)
        about = await _entries_about(reg, lost)

    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(info.value) == "card_reported_lost"
    claims = [r for r in about if r["rpc"] != "/onecard.v1.AuditService/SearchEntries"]
    assert [(r["basis"], r["reason"]) for r in claims] == [("emergency", "card_reported_lost")]


async def test_two_emergency_accesses_under_one_request_id_keep_both_justifications(
    channel: Channel, population: Population
) -> None:
    card = population.first(card_status=CardStatus.NORMAL).id_number
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    retried = (("x-request-id", str(uuid.uuid4())),)  # a caller reusing its request id
    texts = ["unconscious on arrival", "unconscious on arrival, allergy list needed"]
    async with channel(HOSPITAL) as hosp, channel(REGULATOR) as reg:
        for text in texts:
            await insurance_on(hosp, card, emergency_basis(URGENT, text), ETREAT, metadata=retried)
        request = audit_pb2.GetReportRequest()
        request.since.FromDatetime(since)
        request.until.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
        report = await audit_pb2_grpc.AuditServiceStub(reg).GetReport(request)

    assert [e.justification for e in report.emergency_details] == texts


@pytest.mark.parametrize(
    "text",
    [
        "stable\x1b[2K\x1b[1A",  # a terminal escape that rewrites the regulator's table
        "unconscious\non arrival",  # a second line in a one-line column
        "\u202eno allergies",  # a bidirectional override that reorders what is shown
    ],
)
async def test_a_justification_that_is_not_printable_text_is_refused(
    channel: Channel, population: Population, text: str
) -> None:
    card = population.first(card_status=CardStatus.NORMAL).id_number
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_on(hosp, card, emergency_basis(URGENT, text), ETREAT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "justification" in (info.value.details() or "")
