"""The SIP2 2.00 codec: our own, pure functions over bytes for the messages the adapter uses.

A SIP2 message is one line: a two-character command, its fixed-length fields in the order the
standard gives, then variable fields, each a two-letter identifier, a value and ``|``. With
error detection on, ``AY`` and a one-digit sequence number follow, then ``AZ`` and the
checksum: the sum of every byte from the command through ``AZ``, its low 16 bits negated (two's
complement), as four uppercase hex digits. The control messages 96 (SC resend) and 97 (ACS
resend) carry only ``AZ`` and the checksum. The line terminator is the connection's business
(``encode`` and ``decode`` take and give the line without it).

The checksum is over the *encoded bytes* (a Chinese name in UTF-8 adds three bytes a character),
never over code points; ``decode`` verifies it on every message that carries one and raises
``ChecksumMismatch`` when it does not add up, ``MissingChecksum`` when asked for one that is
absent, and ``MalformedMessage`` for anything else that does not parse. Exceptions never carry
the message text (it holds patron identifiers and names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "FIXED_FIELDS",
    "ChecksumMismatch",
    "CodecError",
    "Decoded",
    "MalformedMessage",
    "Message",
    "MissingChecksum",
    "checksum",
    "decode",
    "encode",
]

DELIMITER = "|"
MAX_VALUE_BYTES = 255  # a variable field's value, by the standard
_CONTROL = frozenset({"96", "97"})  # checksum only, no sequence number
_HEX = frozenset("0123456789ABCDEFabcdef")

# Each command's fixed-length fields in wire order: (name, width in characters).
_STATUS = ("patron_status", 14)
_LANGUAGE = ("language", 3)
_DATE = ("transaction_date", 18)
FIXED_FIELDS: Mapping[str, tuple[tuple[str, int], ...]] = {
    "93": (("uid_algorithm", 1), ("pwd_algorithm", 1)),
    "94": (("ok", 1),),
    "99": (("status_code", 1), ("max_print_width", 3), ("protocol_version", 4)),
    "98": (
        ("online_status", 1), ("checkin_ok", 1), ("checkout_ok", 1),
        ("acs_renewal_policy", 1), ("status_update_ok", 1), ("offline_ok", 1),
        ("timeout_period", 3), ("retries_allowed", 3), ("date_time_sync", 18),
        ("protocol_version", 4),
    ),
    "23": (_LANGUAGE, _DATE),
    "24": (_STATUS, _LANGUAGE, _DATE),
    "25": (_DATE,),
    "63": (_LANGUAGE, _DATE, ("summary", 10)),
    "64": (
        _STATUS, _LANGUAGE, _DATE,
        ("hold_items_count", 4), ("overdue_items_count", 4), ("charged_items_count", 4),
        ("fine_items_count", 4), ("recall_items_count", 4), ("unavailable_holds_count", 4),
    ),
    "96": (),
    "97": (),
}  # fmt: skip


class CodecError(Exception):
    """A SIP2 line that cannot be encoded or decoded; the message never quotes the line."""


class MalformedMessage(CodecError):
    """Not a well-formed SIP2 message of a command we know."""


class ChecksumMismatch(CodecError):
    """The ``AZ`` checksum does not add up: the line was damaged on its way."""


class MissingChecksum(CodecError):
    """Error detection is on and the line carries no ``AZ`` checksum."""


@dataclass(frozen=True, slots=True)
class Message:
    """One SIP2 message: its command, fixed fields by name, variable fields in wire order."""

    command: str
    fixed: Mapping[str, str] = field(default_factory=dict)
    fields: tuple[tuple[str, str], ...] = ()

    def get(self, field_id: str) -> str | None:
        """The first value of variable field ``field_id``, None when absent."""
        return next((value for fid, value in self.fields if fid == field_id), None)

    def every(self, field_id: str) -> tuple[str, ...]:
        """Every value of a repeatable variable field (``AS``, ``AF``...), in wire order."""
        return tuple(value for fid, value in self.fields if fid == field_id)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded line: the message, its ``AY`` sequence number and whether it was checksummed."""

    message: Message
    sequence: int | None
    checksummed: bool


def checksum(prefix: bytes) -> str:
    """The checksum of ``prefix`` (every byte through ``AZ``): four uppercase hex digits."""
    return f"{-sum(prefix) & 0xFFFF:04X}"


def message(command: str, fields: Iterable[tuple[str, str]] = (), **fixed: str) -> Message:
    """A ``Message`` of ``command`` with ``fixed`` fields by name and variable ``fields``."""
    return Message(command, dict(fixed), tuple(fields))


def encode(msg: Message, *, sequence: int | None, encoding: str) -> bytes:
    """The line for ``msg`` (without terminator); ``sequence`` None: no error detection.

    96 and 97 get ``AZ`` and a checksum whenever ``sequence`` is given (its value unused).
    """
    body = bytearray(msg.command.encode("ascii"))
    for name, width in _spec(msg.command):
        value = msg.fixed.get(name)
        if value is None or len(value) != width or not value.isascii():
            raise MalformedMessage(
                f"{msg.command}: fixed field {name} needs {width} ASCII characters"
            )
        body += value.encode("ascii")
    if unknown := set(msg.fixed) - {name for name, _ in _spec(msg.command)}:
        raise MalformedMessage(f"{msg.command}: no fixed field {sorted(unknown)[0]}")
    for field_id, value in msg.fields:
        body += _variable(msg.command, field_id, value, encoding)
    if sequence is None:
        return bytes(body)
    if msg.command not in _CONTROL:
        if not 0 <= sequence <= 9:
            raise MalformedMessage("the AY sequence number is one digit, 0-9")
        body += b"AY" + str(sequence).encode("ascii")
    body += b"AZ"
    return bytes(body) + checksum(bytes(body)).encode("ascii")


def decode(line: bytes, *, encoding: str, require_checksum: bool = True) -> Decoded:
    """Parse one line (without terminator), verifying its checksum when it carries one."""
    payload, sequence, checksummed = _trailer(line)
    if require_checksum and not checksummed:
        raise MissingChecksum("the message carries no AZ checksum")
    command = _ascii(payload[:2], "command")
    spec = _spec(command)
    cursor, fixed = 2, {}
    for name, width in spec:
        piece = payload[cursor : cursor + width]
        if len(piece) != width:
            raise MalformedMessage(f"{command}: line ends inside fixed field {name}")
        fixed[name] = _ascii(piece, f"{command} fixed field {name}")
        cursor += width
    return Decoded(
        Message(command, fixed, _variables(command, payload[cursor:], encoding)),
        sequence,
        checksummed,
    )


def _spec(command: str) -> tuple[tuple[str, int], ...]:
    try:
        return FIXED_FIELDS[command]
    except KeyError:
        raise MalformedMessage(f"unknown or unsupported SIP2 command {command!r}") from None


def _variable(command: str, field_id: str, value: str, encoding: str) -> bytes:
    if len(field_id) != 2 or not field_id.isascii() or not field_id.isalpha():
        raise MalformedMessage(f"{command}: a field identifier is two ASCII letters")
    if DELIMITER in value or "\r" in value or "\n" in value or "\x00" in value:
        raise MalformedMessage(f"{command}: field {field_id} holds a delimiter or control byte")
    try:
        data = value.encode(encoding)
    except UnicodeEncodeError:
        raise MalformedMessage(
            f"{command}: field {field_id} cannot be written in {encoding}"
        ) from None
    if len(data) > MAX_VALUE_BYTES:
        raise MalformedMessage(f"{command}: field {field_id} is over {MAX_VALUE_BYTES} bytes")
    return field_id.encode("ascii") + data + DELIMITER.encode("ascii")


def _trailer(line: bytes) -> tuple[bytes, int | None, bool]:
    """Split ``line`` into payload, ``AY`` sequence and whether an ``AZ`` checksum was there."""
    if len(line) >= 6 and line[-6:-4] == b"AZ" and set(line[-4:].decode("latin-1")) <= _HEX:
        if checksum(line[:-4]) != line[-4:].decode("ascii").upper():
            raise ChecksumMismatch("the AZ checksum does not match the message")
        rest = line[:-6]
        if len(rest) >= 3 and rest[-3:-1] == b"AY" and rest[-1:].isdigit():
            return rest[:-3], int(rest[-1:]), True
        return rest, None, True
    return line, None, False


def _variables(command: str, data: bytes, encoding: str) -> tuple[tuple[str, str], ...]:
    pieces = data.split(DELIMITER.encode("ascii"))
    if pieces and pieces[-1] == b"":
        pieces.pop()  # the delimiter after the last field (some servers leave it out)
    fields = []
    for piece in pieces:
        if len(piece) < 2:
            raise MalformedMessage(f"{command}: a variable field without an identifier")
        field_id = _ascii(piece[:2], f"{command} field identifier")
        try:
            value = piece[2:].decode(encoding)
        except UnicodeDecodeError:
            raise MalformedMessage(f"{command}: field {field_id} is not {encoding}") from None
        fields.append((field_id, value))
    return tuple(fields)


def _ascii(data: bytes, what: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMessage(f"{what} is not ASCII") from None
