"""The SIP2 messages the adapter sends, and what it reads out of the answers.

Builders for login (93), SC status (99), patron status (23), patron information (63) and ACS
resend (97); readers that turn a 24 or 64 into ``gateway.ports.PatronStanding``. A reader
raises ``codec.MalformedMessage`` when an answer breaks the standard (a status position other
than ``Y`` or space, a count that is not four digits, a fee amount that is not a number).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from adapters.sip2.codec import MalformedMessage, Message, message
from gateway.ports import PatronBlock, PatronStanding

PROTOCOL_VERSION = "2.00"
LANGUAGE_UNKNOWN = "000"
NO_ITEM_LISTS = " " * 10  # the 63 summary: counts only, no item identifiers
# Positions of ACS status's BX (supported messages) that the adapter cares about.
BX_PATRON_STATUS, BX_PATRON_INFORMATION = 0, 7


def transaction_date(moment: dt.datetime) -> str:
    """SIP2's 18-character date, in UTC: ``YYYYMMDD   ZHHMMSS``."""
    utc = moment.astimezone(dt.UTC)
    return f"{utc:%Y%m%d}   Z{utc:%H%M%S}"


def login(user: str, password: str, location: str) -> Message:
    fields = [("CN", user), ("CO", password)]
    if location:
        fields.append(("CP", location))
    plain = "0"  # the user id and password algorithms: not encrypted (SIP2's only defined one)
    return message("93", fields, uid_algorithm=plain, pwd_algorithm=plain)


def sc_status() -> Message:
    return message("99", status_code="0", max_print_width="000", protocol_version="2.00")


def acs_resend() -> Message:
    return message("97")


def patron_status(institution: str, patron: str, now: dt.datetime) -> Message:
    return message(
        "23",
        [("AO", institution), ("AA", patron), ("AC", ""), ("AD", "")],
        language=LANGUAGE_UNKNOWN,
        transaction_date=transaction_date(now),
    )


def patron_information(institution: str, patron: str, now: dt.datetime) -> Message:
    return message(
        "63",
        [("AO", institution), ("AA", patron)],
        language=LANGUAGE_UNKNOWN,
        transaction_date=transaction_date(now),
        summary=NO_ITEM_LISTS,
    )


def login_accepted(answer: Message) -> bool:
    return answer.fixed["ok"] == "1"


def supports(answer: Message, position: int) -> bool:
    """Whether ACS status (98) says the ACS supports the message at ``position`` of ``BX``."""
    flags = answer.get("BX")
    return flags is None or (len(flags) > position and flags[position] == "Y")


def standing(library_id: str, answer: Message) -> PatronStanding:
    """The standing a 24 (patron status) or 64 (patron information) tells."""
    blocks = _blocks(answer.fixed["patron_status"])
    valid = _yes(answer.get("BL"))
    name = answer.get("AE") or ""
    known = valid or bool(name) or bool(blocks)
    counts = (
        tuple(_count(answer, n) for n in ("hold", "overdue", "charged", "fine"))
        if answer.command == "64"
        else (None, None, None, None)
    )
    return PatronStanding(
        library_id=library_id,
        known=known,
        valid=valid,
        blocks=blocks if known else frozenset(),
        holds=counts[0] if known else None,
        overdue=counts[1] if known else None,
        charged=counts[2] if known else None,
        fine_items=counts[3] if known else None,
        fee_amount=_amount(answer.get("BV")) if known else None,
        currency=(answer.get("BH") or "") if known else "",
        name=name if known else "",
    )


def _blocks(status: str) -> frozenset[PatronBlock]:
    if len(status) != 14 or set(status) - {"Y", " "}:
        raise MalformedMessage("patron status is 14 positions of Y or space")
    return frozenset(block for block in PatronBlock if status[block.value] == "Y")


def _yes(flag: str | None) -> bool:
    if flag not in (None, "Y", "N"):
        raise MalformedMessage("valid patron (BL) is Y or N")
    return flag == "Y"


def _count(answer: Message, name: str) -> int | None:
    value = answer.fixed[f"{name}_items_count"]
    if value == "    ":
        return None  # "unknown", which SIP2 allows
    if not (value.isascii() and value.isdigit()):
        raise MalformedMessage(f"{name} items count is four digits")
    return int(value)


def _amount(text: str | None) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise MalformedMessage("fee amount (BV) is not a number") from None
    if not amount.is_finite() or abs(amount) >= 10**9:
        raise MalformedMessage("fee amount (BV) is out of range")
    return amount
