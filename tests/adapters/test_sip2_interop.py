"""Our codec and pysip2's, written by others, read each other's lines: byte for byte where the
standard leaves no choice, field for field where it does (which optional fields to send)."""

from __future__ import annotations

import datetime as dt

import pytest
from pysip2 import (
    ACSStatusResponse,
    LoginRequest,
    LoginResponse,
    PatronInformationRequest,
    PatronInformationResponse,
    PatronStatusRequest,
    PatronStatusResponse,
    RequestACSResend,
    SCStatusRequest,
    decode_message,
    encode_message,
)
from pysip2.codec import calculate_checksum

from adapters.sip2 import codec, messages
from gateway.ports import PatronBlock

NOW = dt.datetime(2025, 1, 1, 9, 30, tzinfo=dt.UTC)
NAME = "张秀英"


def _theirs(message: object, sequence: int, encoding: str = "utf-8") -> bytes:
    """pysip2's line for ``message``, without its CR."""
    line: bytes = encode_message(
        message,  # type: ignore[arg-type]
        sequence_number=sequence,
        checksum=True,
        encoding=encoding,
    )
    return line.removesuffix(b"\r")


def test_our_requests_are_what_pysip2_reads() -> None:
    ours = {
        "login": messages.login("onecard", "secret", "ONECARD"),
        "status": messages.sc_status(),
        "patron_status": messages.patron_status("DCLIB", "11010519491231002X", NOW),
        "patron_information": messages.patron_information("DCLIB", "11010519491231002X", NOW),
    }
    read = {
        name: decode_message(
            codec.encode(msg, sequence=i, encoding="utf-8") + b"\r", encoding="utf-8"
        )
        for i, (name, msg) in enumerate(ours.items())
    }
    assert read["login"].message == LoginRequest(
        uid_algorithm="0",
        pwd_algorithm="0",
        login_user_id="onecard",
        login_password="secret",
        location_code="ONECARD",
    )
    assert read["status"].message == SCStatusRequest(
        status_code="0", max_print_width="000", protocol_version="2.00"
    )
    assert read["patron_status"].message == PatronStatusRequest(
        language="000",
        transaction_date="20250101   Z093000",
        institution_id="DCLIB",
        patron_identifier="11010519491231002X",
        terminal_password="",
        patron_password="",
    )
    assert read["patron_information"].message == PatronInformationRequest(
        language="000",
        transaction_date="20250101   Z093000",
        summary=" " * 10,
        institution_id="DCLIB",
        patron_identifier="11010519491231002X",
    )
    assert [read[name].sequence_number for name in ours] == [0, 1, 2, 3]


@pytest.mark.parametrize("encoding", ["utf-8", "cp850"])
def test_pysip2s_answers_are_what_we_read(encoding: str) -> None:
    name = NAME if encoding == "utf-8" else "Zhang Xiuying"
    answer = PatronInformationResponse(
        patron_status="YY    Y   Y   ",
        language="019",
        transaction_date="20250101    093000",
        hold_items_count="0001",
        overdue_items_count="0004",
        charged_items_count="0006",
        fine_items_count="0003",
        recall_items_count="0000",
        unavailable_holds_count="0000",
        institution_id="DCLIB",
        patron_identifier="11010519491231002X",
        personal_name=name,
        valid_patron="Y",
        currency_type="CNY",
        fee_amount="36.80",
        screen_message=("逾期" if encoding == "utf-8" else "overdue", "second line"),
    )
    decoded = codec.decode(_theirs(answer, 7, encoding), encoding=encoding)
    assert decoded.sequence == 7
    msg = decoded.message
    assert msg.get("AE") == name and msg.every("AF")[1] == "second line"
    standing = messages.standing("bj-dongcheng", msg)
    assert standing.blocks == {
        PatronBlock.CHARGE_PRIVILEGES_DENIED,
        PatronBlock.RENEWAL_PRIVILEGES_DENIED,
        PatronBlock.TOO_MANY_ITEMS_OVERDUE,
        PatronBlock.EXCESSIVE_OUTSTANDING_FINES,
    }
    assert (standing.holds, standing.overdue, standing.charged, standing.fine_items) == (1, 4, 6, 3)
    assert (str(standing.fee_amount), standing.currency, standing.name) == ("36.80", "CNY", name)


def test_the_same_message_is_the_same_bytes_from_both_codecs() -> None:
    cases = [
        (LoginResponse(ok="1"), codec.Message("94", {"ok": "1"})),
        (
            PatronStatusResponse(
                patron_status=" " * 14,
                language="000",
                transaction_date="20250101   Z093000",
                institution_id="DCLIB",
                patron_identifier="110101199003074477",
                personal_name="李明",
                valid_patron="Y",
            ),
            codec.Message(
                "24",
                {
                    "patron_status": " " * 14,
                    "language": "000",
                    "transaction_date": "20250101   Z093000",
                },
                (("AO", "DCLIB"), ("AA", "110101199003074477"), ("AE", "李明"), ("BL", "Y")),
            ),
        ),
    ]
    for theirs, ours in cases:
        for sequence in (0, 5, 9):
            assert _theirs(theirs, sequence) == codec.encode(
                ours, sequence=sequence, encoding="utf-8"
            )
    resend = encode_message(RequestACSResend(), checksum=True).removesuffix(b"\r")
    assert resend == codec.encode(messages.acs_resend(), sequence=0, encoding="ascii")


def test_checksums_agree_over_utf8_bytes() -> None:
    for text in ("9900302.00AY1AZ", f"24{' ' * 14}000{'2' * 18}AE{NAME}|AY3AZ"):
        data = text.encode("utf-8")
        assert codec.checksum(data) == calculate_checksum(data)


def test_an_acs_status_from_pysip2_reads_as_online_with_its_supported_messages() -> None:
    status = ACSStatusResponse(
        online_status="Y",
        checkin_ok="N",
        checkout_ok="N",
        acs_renewal_policy="N",
        status_update_ok="N",
        offline_ok="N",
        timeout_period="030",
        retries_allowed="003",
        date_time_sync="20250101    093000",
        protocol_version="2.00",
        institution_id="DCLIB",
        supported_messages="YNNNYYYNNNNNNNNN",
    )
    msg = codec.decode(_theirs(status, 2), encoding="utf-8").message
    assert msg.fixed["online_status"] == "Y"
    assert messages.supports(msg, messages.BX_PATRON_STATUS)
    assert not messages.supports(msg, messages.BX_PATRON_INFORMATION)
