"""Card numbers: the 18-character resident ID number carried by the social security card.

Format (GB 11643-1999): 6-digit district code, 8-digit birth date, 3-digit sequence, and a check
character computed by ISO 7064 MOD 11-2 (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2; the weighted
sum mod 11 indexes "10X98765432"). Validation runs before anything else touches the number.
Error messages never repeat the number.
"""

from __future__ import annotations

import datetime as dt

from gateway.errors import MalformedCardNumber

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_LENGTH = 18


def check_character(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character for the first 17 digits."""
    if len(first17) != _LENGTH - 1 or not first17.isascii() or not first17.isdigit():
        raise ValueError("check_character needs exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def normalize(card_number: str) -> str:
    """Return the canonical form (upper-case X) or raise ``MalformedCardNumber``."""
    candidate = card_number.strip().upper()
    if not candidate:
        raise MalformedCardNumber("card.card_number is required")
    if len(candidate) != _LENGTH:
        raise MalformedCardNumber(f"card number must be {_LENGTH} characters, got {len(candidate)}")
    body, check = candidate[:-1], candidate[-1]
    if not (body.isascii() and body.isdigit()) or not (check.isdigit() or check == "X"):
        raise MalformedCardNumber("card number must be 17 digits followed by a digit or X")
    try:
        dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        raise MalformedCardNumber("card number does not hold a valid birth date") from None
    if check_character(body) != check:
        raise MalformedCardNumber("card number check character does not match (ISO 7064 MOD 11-2)")
    return candidate


def birth_date(card_number: str) -> dt.date:
    """The birth date encoded in a normalized card number."""
    return dt.date(int(card_number[6:10]), int(card_number[10:12]), int(card_number[12:14]))
