"""check_request over the real onecard.v1 messages, decoded from wire bytes as a server would."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.api.onecard.v1 import audit_pb2, card_pb2, common_pb2, insurance_pb2
from gateway.errors import InvalidRequest
from gateway.validation import InvalidField, check_request

CARD = common_pb2.CardRef(card_number="110101199003074477")
FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 enums go on the wire as 10-byte varints
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a nested message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _enum(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _decoded(kind: type[Message], wire: bytes) -> Message:
    message = kind()
    message.ParseFromString(wire)
    return message


def _emergency(reason: int) -> insurance_pb2.GetInsuranceStatusRequest:
    """basis.emergency.reason = ``reason`` exactly as a client that ignores the enum sends it."""
    emergency = _enum(1, reason) + _field(2, b"unconscious on arrival")
    wire = _field(1, CARD.SerializeToString()) + _enum(2, common_pb2.PURPOSE_ETREAT)
    wire += _field(3, _field(3, emergency))
    decoded = _decoded(insurance_pb2.GetInsuranceStatusRequest, wire)
    assert isinstance(decoded, insurance_pb2.GetInsuranceStatusRequest)
    return decoded


def _refusal(message: Message) -> InvalidField:
    with pytest.raises(InvalidField) as info:
        check_request(message)
    return info.value


@pytest.mark.parametrize("reason", [4, 99, -5, 2**31 - 1, -(2**31)])
def test_an_emergency_reason_outside_the_enum_is_refused_naming_the_field(reason: int) -> None:
    request = _emergency(reason)
    assert request.basis.emergency.reason == reason  # proto3 enums are open: it decoded

    error = _refusal(request)

    assert isinstance(error, InvalidRequest)
    assert error.field == "basis.emergency.reason"
    assert error.reason == "unknown_enum_value"
    assert error.message.startswith(f"basis.emergency.reason is {reason}, which is not")
    assert "EMERGENCY_REASON_LIFE_THREATENING" in error.message
    assert "UNSPECIFIED" not in error.message  # declared, but refused by every service
    assert "unconscious" not in error.message  # the rest of the request is not echoed


@pytest.mark.parametrize("reason", [0, 1, 2, 3])
def test_every_declared_emergency_reason_passes(reason: int) -> None:
    check_request(_emergency(reason))


@pytest.mark.parametrize("purpose", [9, 99, -1])
def test_a_purpose_outside_the_enum_is_refused(purpose: int) -> None:
    wire = _field(1, CARD.SerializeToString()) + _enum(2, purpose)

    error = _refusal(_decoded(card_pb2.VerifyCardRequest, wire))

    assert error.field == "purpose"
    assert "PURPOSE_COVERAGE" in error.message


def test_only_the_set_member_of_a_oneof_is_checked() -> None:
    token = common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token="oc1.x"))
    request = card_pb2.VerifyCardRequest(card=CARD, purpose=common_pb2.PURPOSE_TREAT, basis=token)

    check_request(request)
    assert request.basis.WhichOneof("basis") == "card_present"


def test_repeated_nested_messages_are_checked_element_by_element() -> None:
    good = insurance_pb2.InsuranceScheme(insutype="310", status=insurance_pb2.SCHEME_STATUS_ACTIVE)
    bad = _decoded(insurance_pb2.InsuranceScheme, _enum(3, 7))
    response = insurance_pb2.GetInsuranceStatusResponse(schemes=[good, good, bad])

    error = _refusal(response)

    assert error.field == "schemes[2].status"
    assert "SchemeStatus" in error.message


def test_map_values_are_checked() -> None:
    # No onecard.v1 message has a map yet; Struct's map<string, Value> carries an enum.
    struct = Struct()
    struct.fields["a"].null_value = 0
    check_request(struct)
    struct.fields["b"].MergeFromString(_enum(1, 3))  # Value.null_value = 3 (NullValue has 0)

    assert _refusal(struct).field == "fields['b'].null_value"


def _search(since: Timestamp | None = None, until: Timestamp | None = None) -> Message:
    request = audit_pb2.SearchEntriesRequest(first_page=True)
    if since is not None:
        request.since.CopyFrom(since)
    if until is not None:
        request.until.CopyFrom(until)
    return _decoded(audit_pb2.SearchEntriesRequest, request.SerializeToString())


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(FIRST_SECOND, 0), (LAST_SECOND, 999_999_999), (0, 0), (1_764_000_000, 500)],
)
def test_timestamps_within_years_1_to_9999_pass(seconds: int, nanos: int) -> None:
    check_request(_search(since=Timestamp(seconds=seconds, nanos=nanos)))


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (FIRST_SECOND - 1, 0, "since"),  # 0000-12-31T23:59:59Z
        (LAST_SECOND + 1, 0, "since"),  # 10000-01-01T00:00:00Z
        (-(2**63), 0, "since"),
        (0, -1, "since.nanos"),
        (0, 1_000_000_000, "since.nanos"),
        (0, -(2**31), "since.nanos"),
    ],
)
def test_timestamps_out_of_range_are_refused(seconds: int, nanos: int, field: str) -> None:
    error = _refusal(_search(since=Timestamp(seconds=seconds, nanos=nanos)))

    assert error.field == "since"
    assert error.reason == "timestamp_out_of_range"
    assert error.message.startswith(f"{field} must be")


def test_the_first_bad_field_is_named_wherever_it_is() -> None:
    ok = Timestamp(seconds=0)
    error = _refusal(_search(since=ok, until=Timestamp(seconds=0, nanos=-3)))

    assert error.field == "until"


def test_a_request_with_only_defaults_passes() -> None:
    for kind in (
        card_pb2.IssueCardTokenRequest,
        card_pb2.VerifyCardRequest,
        insurance_pb2.GetInsuranceStatusRequest,
        audit_pb2.GetEntriesRequest,
        audit_pb2.SearchEntriesRequest,
    ):
        check_request(kind())
