"""The code formats of the 1101 interface, as pydantic types for the fields OneCard passes on.

This module owns what a well-formed value of each field looks like. Every field of a back-end
answer that reaches a port value (and so, possibly, a caller) is checked here before it is
used; a value that fails makes the whole answer malformed. The rules are strict, written from
the published 1101 field table and its samples (``tests/adapters/fixtures/``):

=====================  =============================================================
insutype               险种类型: a 3-digit code of the national table (310, 390, 510, ...)
admdvs (districts)     行政区划: 6 digits; the first two a province of GB/T 2260
psn_no                 人员编号: 1 to 30 ASCII letters or digits
certno                 证件号码: 1 to 32 ASCII letters or digits
card_sn                卡识别码: 1 to 64 ASCII letters or digits
dates                  ``yyyy-MM-dd``, years 1900 to 2099
psn_name               a person's name: 1 to 50 letters (any script), combining marks,
                       and single spaces, ``·``, ``-``, ``.`` or ``'`` between them
                       (``. `` is the one pair allowed: "J. Smith")
emp_name (free text)   1 to 200 characters: no control or format characters (so no bidi
                       overrides, zero-width characters or NUL), no line breaks or spaces
                       other than U+0020, no ``< > & " ` \\``, no surrounding spaces
=====================  =============================================================

Validators raise ``ValueError`` with a fixed text naming the rule, never the value: the value
is the back end's and may hold anything.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_PROVINCES = frozenset(  # GB/T 2260 province-level codes
    ("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
     "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
     "65", "71", "81", "82")
)  # fmt: skip
_INSUTYPE = re.compile(r"[0-9]{3}")
_ADMDVS = re.compile(r"[0-9]{6}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_FIRST_YEAR, _LAST_YEAR = 1900, 2099
_NAME_JOINERS = frozenset(" ·-.'")
_MAX_NAME_CHARS = 50
_MAX_TEXT_CHARS = 200
_MARKUP = frozenset('<>&"`\\')


def _ascii_code(max_chars: int, what: str) -> Callable[[str], str]:
    pattern = re.compile(rf"[0-9A-Za-z]{{1,{max_chars}}}")

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"not a {what} (1 to {max_chars} ASCII letters or digits)")
        return value

    return check


def _insutype(value: str) -> str:
    if not _INSUTYPE.fullmatch(value):
        raise ValueError("not an insutype code (3 digits)")
    return value


def _admdvs(value: str) -> str:
    if not _ADMDVS.fullmatch(value) or value[:2] not in _PROVINCES:
        raise ValueError("not an administrative division code (6 digits, a known province)")
    return value


def _optional_date(value: object) -> object:
    """``yyyy-MM-dd`` or ``""``/null for none. (A before-validator sees the JSON string, which
    strict date validation would refuse, so the format is checked here.)"""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("not a date of the form yyyy-MM-dd")
    try:
        date = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a calendar date") from None
    if not _FIRST_YEAR <= date.year <= _LAST_YEAR:
        raise ValueError(f"a date outside the years {_FIRST_YEAR} to {_LAST_YEAR}")
    return date


def _person_name(value: str) -> str:
    if not 1 <= len(value) <= _MAX_NAME_CHARS:
        raise ValueError(f"a name must be 1 to {_MAX_NAME_CHARS} characters")
    if value[0] in _NAME_JOINERS or value[-1] in _NAME_JOINERS:
        raise ValueError("a name must begin and end with a letter")
    for before, char in zip(" " + value[:-1], value, strict=True):
        if char in _NAME_JOINERS:
            if before in _NAME_JOINERS and before + char != ". ":
                raise ValueError("a name has two separators in a row")
        elif unicodedata.category(char)[0] not in "LM":
            raise ValueError("a name holds a character that is not a letter or a separator")
    return value


def _free_text(value: str) -> str:
    if not 1 <= len(value) <= _MAX_TEXT_CHARS:
        raise ValueError(f"text must be 1 to {_MAX_TEXT_CHARS} characters")
    if value != value.strip():
        raise ValueError("text begins or ends with a space")
    for char in value:
        category = unicodedata.category(char)
        if category[0] == "C" or (category[0] == "Z" and char != " "):
            raise ValueError("text holds a control, format or separator character")
        if char in _MARKUP:
            raise ValueError("text holds a markup character")
    return value


def _optional_free_text(value: str | None) -> str | None:
    return None if value is None else _free_text(value)


def _blank_to_none(value: object) -> object:
    """The platform sends ``""`` (or null) for an absent text."""
    return None if value == "" else value


Insutype = Annotated[str, AfterValidator(_insutype)]
Admdvs = Annotated[str, AfterValidator(_admdvs)]
PsnNo = Annotated[str, AfterValidator(_ascii_code(30, "person number"))]
CertNo = Annotated[str, AfterValidator(_ascii_code(32, "certificate number"))]
CardSn = Annotated[str, AfterValidator(_ascii_code(64, "card identification code"))]
PersonName = Annotated[str, AfterValidator(_person_name)]
OptDate = Annotated[dt.date | None, BeforeValidator(_optional_date)]
OptText = Annotated[
    str | None, AfterValidator(_optional_free_text), BeforeValidator(_blank_to_none)
]
