"""Requests outside their declared ranges: INVALID_ARGUMENT, for a person to read, and audited."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest

from gateway.api.onecard.v1 import (
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    insurance_pb2,
    insurance_pb2_grpc,
)
from gateway.bootstrap import Gateway
from gateway.client import refusal_reason as reason
from tests.integration.conftest import HOSPITAL, LIBRARY

# A protocol or transport test: what it checks does not depend on the store, so it runs on
# SQLite only (every store-dependent path runs on both stores in the other modules).
pytestmark = [pytest.mark.integration, pytest.mark.store_independent]
CARD = common_pb2.CardRef(card_number="110101199003074477")


def _emergency(reason_code: int) -> insurance_pb2.GetInsuranceStatusRequest:
    # The generated class accepts any int32 for an open proto3 enum, as a careless client would.
    return insurance_pb2.GetInsuranceStatusRequest(
        card=CARD,
        purpose=common_pb2.PURPOSE_ETREAT,
        basis=common_pb2.LawfulBasis(
            emergency=common_pb2.Emergency(
                reason=reason_code,  # type: ignore[arg-type]
                justification="patient unconscious on arrival",
            )
        ),
    )


async def _entry(gateway: Gateway, err: grpc.aio.AioRpcError) -> dict[str, str]:
    index = int(dict(err.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record: dict[str, str] = json.loads(entry.leaf)["r"]
    return record


@pytest.mark.parametrize("reason_code", [4, 99, -5])
async def test_an_emergency_reason_outside_the_enum_is_invalid_argument_and_audited(
    gateway: Gateway, channel: Callable[[str], grpc.aio.Channel], reason_code: int
) -> None:
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await insurance_pb2_grpc.InsuranceServiceStub(hosp).GetInsuranceStatus(
                _emergency(reason_code)
            )

    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(info.value) == "unknown_enum_value"
    details = info.value.details() or ""
    assert details.startswith(f"basis.emergency.reason is {reason_code}, which is not")
    assert CARD.card_number not in details
    record = await _entry(gateway, info.value)
    assert (record["rpc"], record["org"], record["outcome"], record["reason"]) == (
        "onecard.v1.InsuranceService/GetInsuranceStatus",
        HOSPITAL,
        "INVALID_ARGUMENT",
        "unknown_enum_value",
    )


async def test_a_declared_emergency_reason_passes_the_check(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(HOSPITAL) as hosp:
        response = await insurance_pb2_grpc.InsuranceServiceStub(hosp).GetInsuranceStatus(
            _emergency(common_pb2.EMERGENCY_REASON_LIFE_THREATENING)
        )

    # Past the check, the emergency basis holds for a hospital treating an emergency.
    assert list(response.decision.policy_ids) == ["hospital-reads-insurance-status-in-emergency"]


async def test_a_purpose_outside_the_enum_is_invalid_argument(
    gateway: Gateway, channel: Callable[[str], grpc.aio.Channel]
) -> None:
    async with channel(LIBRARY) as lib:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await card_pb2_grpc.CardServiceStub(lib).VerifyCard(
                card_pb2.VerifyCardRequest(card=CARD, purpose=42)  # type: ignore[arg-type]
            )

    assert (info.value.code(), reason(info.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown_enum_value",
    )
    assert (await _entry(gateway, info.value))["outcome"] == "INVALID_ARGUMENT"
