"""Conversions from protobuf request fields to the pipeline's values (a trust boundary)."""

from __future__ import annotations

import unicodedata

from gateway.api.onecard.v1 import common_pb2
from gateway.basis import (
    BasisClaim,
    CardPresentClaim,
    ConsentClaim,
    EmergencyClaim,
    NoClaim,
)
from gateway.errors import InvalidRequest

_MAX_ID_CHARS = 128
_MAX_JUSTIFICATION_CHARS = 500
_UNPRINTABLE = frozenset({"Cc", "Cf", "Co"})  # control, format and private-use characters


def purpose(value: int) -> str:
    """The purpose code without its prefix ("COVERAGE"); PURPOSE_UNSPECIFIED is refused."""
    if value == common_pb2.PURPOSE_UNSPECIFIED:
        raise InvalidRequest("purpose is required, e.g. PURPOSE_COVERAGE")
    try:
        name: str = common_pb2.Purpose.Name(value)
    except ValueError:
        raise InvalidRequest(f"purpose {value} is not a known purpose of use") from None
    return name.removeprefix("PURPOSE_")


def basis_claim(msg: common_pb2.LawfulBasis) -> BasisClaim:
    """The claim a request makes; shape checks only (proof is the basis stage's job)."""
    match msg.WhichOneof("basis"):
        case "card_present":
            return CardPresentClaim(msg.card_present.token)
        case "consent_id":
            if not msg.consent_id or len(msg.consent_id) > _MAX_ID_CHARS:
                raise InvalidRequest(f"basis.consent_id must be 1 to {_MAX_ID_CHARS} characters")
            return ConsentClaim(msg.consent_id)
        case "emergency":
            return _emergency(msg.emergency)
        case _:
            return NoClaim()


def _emergency(msg: common_pb2.Emergency) -> EmergencyClaim:
    if msg.reason == common_pb2.EMERGENCY_REASON_UNSPECIFIED:
        raise InvalidRequest("basis.emergency.reason is required")
    justification = msg.justification.strip()
    if not justification or len(justification) > _MAX_JUSTIFICATION_CHARS:
        raise InvalidRequest(
            f"basis.emergency.justification must be 1 to {_MAX_JUSTIFICATION_CHARS} characters"
        )
    # The regulator reads it in a terminal table and a CSV file: control and format characters
    # (escape sequences, line breaks, bidirectional overrides) could rewrite or reorder them.
    if any(unicodedata.category(c) in _UNPRINTABLE for c in justification):
        raise InvalidRequest(
            "basis.emergency.justification must be one line of printable text: no line "
            "breaks, tabs, escape sequences or other control or format characters"
        )
    reason: str = common_pb2.EmergencyReason.Name(msg.reason)
    return EmergencyClaim(reason.removeprefix("EMERGENCY_REASON_"), justification)
