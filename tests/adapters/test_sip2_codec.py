"""Our SIP2 codec: checksum vectors from other implementations' documentation, round trips,
every fixed field's position, Chinese text in UTF-8, and mutated lines that must be refused."""

from __future__ import annotations

import datetime as dt

import pytest

from adapters.sip2 import codec, messages
from adapters.sip2.codec import FIXED_FIELDS, Message, decode, encode

# Lines published by other SIP2 implementations, with the checksums they carry.
PUBLISHED = {
    # SC status, as FOLIO's edge-sip2 and dp2's tests send it.
    "sc_status": "9900401.00AY1AZFCA5",
    # Patron enable, the 3M specification's example.
    "patron_enable": "2519980723    094240AOCertification Institute ID|AAPatronID|AY4AZEBF1",
    # Patron status request, from a PHP SIP2 server's documentation.
    "patron_status": "2300120230906    134017AO11|AA66666|AD33333|AY4AZF4E1",
    # Login answer, from a Ruby SIP2 client's tests.
    "login_ok": "941AY1AZFDFC",
    # Patron information request and answers of a SirsiDynix Symphony ACS (Calgary's tests).
    "patron_info_request": "63" + " " * 31 + "AO|AA29065023801673|AD1234|AY1AZF3A8",
    "patron_info_lost": (
        "64YYYY          00020140328    150819000000000000000000000000AO|AA29065023801673|"
        "AETest Metro, Adult Lostcard|AQCROW|BZ0050|CA0000|CB0099|BLY|CQY|BV0.00|"
        "BD123 Reside Rd NW CALGARY, AB T3G 3G3|BF403-123-4567|BHUSD|PA20150108    235900|"
        "PD19580103|PCADULT|PEAR|PGFEMALE|PHALL|DB$32.99|DM$500.00|AFUser BARRED|AY1AZAF1D"
    ),
    "patron_info_good": (
        "64              00020140328    130720000000000000000000000000AO|AA55544466677788|"
        "AEkelso, test adult|AQCENT|BZ0050|CA0000|CB0099|BLY|CQY|BV0.00|"
        "BD123 sad street nw CALGARY, AB t3g 1m1|BE21@test.ca|BF403-123-4567|BHUSD|"
        "PA20141008    235900|PD|PCADULT|PEAR|DB$0.00|DM$500.00|AFOK|AY0AZB6B0"
    ),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_checksums_are_ours(name: str) -> None:
    line = PUBLISHED[name].encode("ascii")
    assert codec.checksum(line[:-4]) == line[-4:].decode()


@pytest.mark.parametrize("name", sorted(set(PUBLISHED) - {"patron_enable"}))
def test_published_lines_decode_and_encode_back_byte_for_byte(name: str) -> None:
    line = PUBLISHED[name].encode("ascii")
    decoded = decode(line, encoding="cp850")
    assert decoded.checksummed
    assert encode(decoded.message, sequence=decoded.sequence, encoding="cp850") == line


def test_a_symphony_patron_information_answer_reads_as_its_fields() -> None:
    decoded = decode(PUBLISHED["patron_info_lost"].encode(), encoding="cp850")
    msg = decoded.message
    assert decoded.sequence == 1
    assert msg.fixed["patron_status"] == "YYYY          "
    assert msg.fixed["transaction_date"] == "20140328    150819"
    assert (msg.get("AA"), msg.get("AE"), msg.get("BV"), msg.get("AF")) == (
        "29065023801673",
        "Test Metro, Adult Lostcard",
        "0.00",
        "User BARRED",
    )
    standing = messages.standing("calgary", msg)
    assert standing.known and standing.valid
    assert {b.name for b in standing.blocks} == {
        "CHARGE_PRIVILEGES_DENIED",
        "RENEWAL_PRIVILEGES_DENIED",
        "RECALL_PRIVILEGES_DENIED",
        "HOLD_PRIVILEGES_DENIED",
    }
    assert (standing.holds, standing.overdue, standing.charged, standing.fine_items) == (0, 0, 0, 0)


def _positions(command: str) -> list[tuple[str, int, int]]:
    out, at = [], 2
    for name, width in FIXED_FIELDS[command]:
        out.append((name, at, width))
        at += width
    return out


@pytest.mark.parametrize("command", sorted(c for c in FIXED_FIELDS if FIXED_FIELDS[c]))
def test_every_fixed_field_sits_at_its_position(command: str) -> None:
    # Fill each field with a distinct character and find it at the offset the standard gives.
    alphabet = "ABCDEFGHIJKLMNOP"
    fixed = {name: alphabet[i] * width for i, (name, width) in enumerate(FIXED_FIELDS[command])}
    line = encode(Message(command, fixed), sequence=None, encoding="ascii")
    for i, (name, at, width) in enumerate(_positions(command)):
        assert line[at : at + width] == (alphabet[i] * width).encode(), name
    assert decode(line, encoding="ascii", require_checksum=False).message.fixed == fixed


def test_the_standards_offsets_for_the_patron_information_answer() -> None:
    # 64: status at 2, language at 16, date at 19, then six counts of four from 37.
    assert _positions("64") == [
        ("patron_status", 2, 14),
        ("language", 16, 3),
        ("transaction_date", 19, 18),
        ("hold_items_count", 37, 4),
        ("overdue_items_count", 41, 4),
        ("charged_items_count", 45, 4),
        ("fine_items_count", 49, 4),
        ("recall_items_count", 53, 4),
        ("unavailable_holds_count", 57, 4),
    ]
    assert _positions("98")[-1] == ("protocol_version", 32, 4)  # "98YYYYYN010003<date>2.00"
    assert _positions("63")[-1] == ("summary", 23, 10)


def test_chinese_names_in_utf8_are_summed_as_bytes() -> None:
    name = "张秀英"
    msg = Message(
        "24",
        {"patron_status": " " * 14, "language": "019", "transaction_date": "20250101   Z093000"},
        (("AO", "DCLIB"), ("AA", "11010519491231002X"), ("AE", name), ("BL", "Y")),
    )
    line = encode(msg, sequence=3, encoding="utf-8")
    assert name.encode("utf-8") in line
    body = line[:-4]
    assert line[-4:].decode() == f"{-sum(body) & 0xFFFF:04X}"
    # Summing code points instead (what some clients do) gives another checksum.
    assert line[-4:].decode() != f"{-sum(map(ord, body.decode())) & 0xFFFF:04X}"
    decoded = decode(line, encoding="utf-8")
    assert decoded.message.get("AE") == name and decoded.sequence == 3


def test_a_utf8_line_read_as_cp850_is_another_text_not_a_crash() -> None:
    msg = Message(
        "24",
        {"patron_status": " " * 14, "language": "019", "transaction_date": "20250101   Z093000"},
        (("AO", "X"), ("AA", "1"), ("AE", "李明")),
    )
    line = encode(msg, sequence=0, encoding="utf-8")
    assert decode(line, encoding="cp850").message.get("AE") != "李明"


def test_a_name_cp850_cannot_carry_is_refused_when_encoding() -> None:
    msg = Message("93", {"uid_algorithm": "0", "pwd_algorithm": "0"}, (("CN", "李"),))
    with pytest.raises(codec.MalformedMessage, match="cp850"):
        encode(msg, sequence=0, encoding="cp850")


def test_control_messages_carry_a_checksum_and_no_sequence() -> None:
    assert encode(messages.acs_resend(), sequence=5, encoding="ascii") == b"97AZFEF5"
    decoded = decode(b"96AZFEF6", encoding="ascii")
    assert (decoded.message.command, decoded.sequence, decoded.checksummed) == ("96", None, True)


def test_round_trip_of_each_request_the_adapter_sends() -> None:
    now = dt.datetime(2025, 1, 1, 9, 30, tzinfo=dt.UTC)
    for msg in (
        messages.login("onecard", "secret", "ONECARD"),
        messages.sc_status(),
        messages.patron_status("DCLIB", "110101199003074477", now),
        messages.patron_information("DCLIB", "110101199003074477", now),
    ):
        for sequence in (None, 0, 9):
            line = encode(msg, sequence=sequence, encoding="utf-8")
            decoded = decode(line, encoding="utf-8", require_checksum=sequence is not None)
            assert decoded.message == msg and decoded.sequence == sequence


def test_the_transaction_date_is_utc_with_a_z_zone() -> None:
    moment = dt.datetime(2025, 1, 1, 17, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert messages.transaction_date(moment) == "20250101   Z093005"


# -- mutated lines ------------------------------------------------------------------------------

GOOD = PUBLISHED["patron_info_good"].encode()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:40] + b"1" + b[41:],  # a count digit changed
        lambda b: b[:-1] + (b"1" if b[-1:] != b"1" else b"2"),  # the checksum changed
        lambda b: b.replace(b"kelso", b"kelsp"),  # a name letter changed
        lambda b: b[:-6] + b"AZ" + b[-4:].lower()[::-1],  # checksum digits reversed
    ],
)
def test_a_damaged_line_fails_its_checksum(mutate: object) -> None:
    damaged = mutate(GOOD)  # type: ignore[operator]
    assert damaged != GOOD
    with pytest.raises(codec.ChecksumMismatch):
        decode(damaged, encoding="cp850")


def test_a_line_without_checksum_is_refused_when_one_is_required() -> None:
    with pytest.raises(codec.MissingChecksum):
        decode(b"941", encoding="ascii")
    assert decode(b"941", encoding="ascii", require_checksum=False).message.fixed["ok"] == "1"


@pytest.mark.parametrize(
    "line",
    [
        b"",  # nothing
        b"9",  # half a command
        b"XX123",  # an unknown command
        b"64YYYY",  # cut inside the fixed fields
        b"94\xff",  # a fixed field that is not ASCII
        b"941A|",  # a variable field without an identifier
    ],
)
def test_malformed_lines_are_refused_without_quoting_them(line: bytes) -> None:
    with pytest.raises(codec.MalformedMessage):
        decode(line, encoding="utf-8", require_checksum=False)


def test_an_error_never_quotes_the_patron_it_was_about() -> None:
    patron = "11010519491231002X"
    line = f"64{'Q' * 14}".encode() + b"000" + patron.encode()
    with pytest.raises(codec.MalformedMessage) as info:
        decode(line, encoding="utf-8", require_checksum=False)
    assert patron not in str(info.value) and "Q" * 3 not in str(info.value)


def test_a_value_that_holds_the_delimiter_or_a_terminator_cannot_be_encoded() -> None:
    for bad in ("a|b", "a\rb", "a\nb"):
        msg = Message("93", {"uid_algorithm": "0", "pwd_algorithm": "0"}, (("CN", bad),))
        with pytest.raises(codec.MalformedMessage):
            encode(msg, sequence=1, encoding="utf-8")


def test_wrong_fixed_widths_and_sequence_numbers_cannot_be_encoded() -> None:
    with pytest.raises(codec.MalformedMessage, match="fixed field ok"):
        encode(Message("94", {"ok": "10"}), sequence=None, encoding="ascii")
    with pytest.raises(codec.MalformedMessage, match="one digit"):
        encode(Message("94", {"ok": "1"}), sequence=10, encoding="ascii")
    with pytest.raises(codec.MalformedMessage, match="over 255"):
        encode(Message("94", {"ok": "1"}, (("AF", "x" * 256),)), sequence=1, encoding="ascii")


def test_a_server_that_leaves_out_the_last_delimiter_is_read_the_same() -> None:
    with_delimiter = b"941AFwelcome|"
    without = b"941AFwelcome"
    read = [
        decode(x, encoding="ascii", require_checksum=False).message
        for x in (with_delimiter, without)
    ]
    assert read[0] == read[1] and read[0].every("AF") == ("welcome",)
