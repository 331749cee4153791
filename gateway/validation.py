"""Checks every decoded request against what its protobuf declarations promise.

This module owns the rule, not instances of it: protobuf decodes some values that the schema
does not allow, and they must be refused as the caller's mistake before any service reads them:

* an enum value outside the declared set (proto3 enums are open: 4, 99 or -5 decode as plain
  numbers, and code that names them later fails);
* a ``google.protobuf.Timestamp`` outside what the type defines: 0001-01-01T00:00:00Z to
  9999-12-31T23:59:59.999999999Z, nanos 0 to 999,999,999.

``check_request`` walks a message recursively (nested messages, repeated fields, maps, the set
member of each oneof) and raises ``InvalidField`` naming the first field that fails, by its
dotted path (``basis.emergency.reason``, ``items[2].since``). The message names the field and
the rule, never the rest of the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.errors import InvalidRequest

__all__ = ["MAX_SECONDS", "InvalidField", "check_request", "check_timestamp"]

_TIMESTAMP = "google.protobuf.Timestamp"
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_MAX_NANOS = 999_999_999
_NAMES_SHOWN = 8


class InvalidField(InvalidRequest):
    """A field holds a value its declaration does not allow; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str, *, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.field = field


def check_request(message: Message) -> None:
    """Raise ``InvalidField`` for the first field of ``message`` outside its declared range."""
    _check_message(message, "")


def _check_message(message: Message, path: str) -> None:
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        check_timestamp(message, path)
        return
    for field, value in message.ListFields():
        _check_field(field, value, f"{path}.{field.name}" if path else field.name)


def _check_field(field: FieldDescriptor, value: Any, path: str) -> None:
    value_field = _map_value(field)
    if value_field is not None:
        for key, item in value.items():
            _check_value(value_field, item, f"{path}[{key!r}]")
    elif field.is_repeated:
        for at, item in enumerate(value):
            _check_value(field, item, f"{path}[{at}]")
    else:
        _check_value(field, value, path)


def _check_value(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.enum_type is not None:
        _check_enum(field.enum_type, value, path)
    elif field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        _check_message(value, path)


def _map_value(field: FieldDescriptor) -> FieldDescriptor | None:
    """The value field of a map's entries; None if ``field`` is not a map."""
    entry = field.message_type
    if entry is None or not field.is_repeated or not entry.GetOptions().map_entry:
        return None
    return entry.fields_by_name["value"]


def _check_enum(enum: EnumDescriptor, value: int, path: str) -> None:
    if value in enum.values_by_number:
        return
    raise InvalidField(
        path,
        f"{path} is {value}, which is not one of the {enum.name} values; "
        f"use one of {_names(v.name for v in enum.values if not _unspecified(v.name))}",
        reason="unknown_enum_value",
    )


def check_timestamp(stamp: Any, path: str) -> None:
    """Raise ``InvalidField`` if ``stamp`` is outside what a Timestamp may hold."""
    where = path or "timestamp"
    if not _MIN_SECONDS <= stamp.seconds <= MAX_SECONDS:
        raise InvalidField(
            where,
            f"{where} must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z; "
            f"{stamp.seconds} seconds from 1970-01-01 is outside that",
            reason="timestamp_out_of_range",
        )
    if not 0 <= stamp.nanos <= _MAX_NANOS:
        raise InvalidField(
            where,
            f"{where}.nanos must be 0 to {_MAX_NANOS}, not {stamp.nanos}",
            reason="timestamp_out_of_range",
        )


def _unspecified(name: str) -> bool:
    """The zero value of a buf-linted enum, which every service refuses anyway."""
    return name.endswith("_UNSPECIFIED")


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    shown = ", ".join(listed[:_NAMES_SHOWN])
    return shown if len(listed) <= _NAMES_SHOWN else f"{shown}, ..."
