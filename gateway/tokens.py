"""Card-present tokens: the dynamic e-card QR code.

The citizen app asks the gateway for a token bound to the citizen's card and shows it as a QR
code; the counter scans it and sends it with its request, which proves the citizen is present.
The gateway is both issuer and verifier, so the token is authenticated with HMAC-SHA256 under a
gateway-held key (about 1 µs to check, where an Ed25519 signature check costs ~65 µs).

Wire form: ``oc1.`` + base64url(no padding) of

    version (1 byte) | token id (16) | expires at, unix seconds (8, big endian)
    | card binding (16) | tag (32)

where card binding = HMAC(key, "card" || card number)[:16] (the token does not reveal the card
number) and tag = HMAC(key, "tag" || all bytes before it). Each token releases data once: its id
is recorded durably in the same transaction as the audit entry of the exchange that releases data
(``gateway.audit.log.Redemption``), so a replay fails even after a restart, and a refused or failed
exchange does not use the token up.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import BasisRefused

PREFIX = "oc1."
_VERSION = 1
_HEADER = struct.Struct(">B16sQ16s")
_TAG_BYTES = 32
_RAW_BYTES = _HEADER.size + _TAG_BYTES
_MAX_TOKEN_CHARS = 256


class TokenLedger(Protocol):
    """Durable record of redeemed token ids (the audit log writes it, with the exchange)."""

    async def token_redeemed(self, token_id: bytes) -> bool:
        """Whether an exchange has already redeemed this token id."""
        ...


@dataclass(frozen=True, slots=True)
class TokenUse:
    """A token that holds for this card and has not been used: the exchange may redeem it.

    The redemption itself is written with the exchange's audit entry, and only by an exchange
    that releases data; a refused or failed exchange leaves the token usable until it expires.
    """

    token_id: bytes
    expires_at: int

    @property
    def reference(self) -> str:
        """How the audit log names the token (its random id, never the card)."""
        return f"token:{self.token_id.hex()}"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued token and when it stops being accepted."""

    token: str
    expires_at: dt.datetime


class CardTokens:
    """Issues and redeems card-present tokens."""

    def __init__(
        self,
        key: bytes,
        ledger: TokenLedger,
        *,
        ttl: dt.timedelta = dt.timedelta(seconds=60),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._binding_key = hmac.new(key, b"onecard token binding", hashlib.sha256).digest()
        self._tag_key = hmac.new(key, b"onecard token tag", hashlib.sha256).digest()
        self._ledger = ledger
        self._ttl = ttl
        self._clock = clock

    def issue(self, card_number: str) -> IssuedToken:
        """Mint a token for a normalized card number."""
        expires_at = (self._clock() + self._ttl).replace(microsecond=0)
        header = _HEADER.pack(
            _VERSION, secrets.token_bytes(16), int(expires_at.timestamp()), self._bind(card_number)
        )
        raw = header + self._tag(header)
        encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        return IssuedToken(PREFIX + encoded, expires_at)

    async def check(self, token: str, card_number: str) -> TokenUse:
        """The token's use for this card, or ``BasisRefused`` if it does not hold (or was used)."""
        header, tag = _decode(token)
        if not hmac.compare_digest(tag, self._tag(header)):
            raise BasisRefused("card-present token is not authentic", reason="token_forged")
        version, token_id, expires_at, binding = _HEADER.unpack(header)
        if version != _VERSION:
            raise BasisRefused("card-present token version is not supported", reason="token_forged")
        if not hmac.compare_digest(binding, self._bind(card_number)):
            raise BasisRefused(
                "card-present token was issued for a different card", reason="token_wrong_card"
            )
        # From here the token is authentic and the request's card is its card: a refusal is an
        # attempt on that citizen's data (``card_bound``), shown in their access history.
        if self._clock().timestamp() >= expires_at:
            raise BasisRefused(
                "card-present token has expired; ask the citizen to refresh the QR code",
                reason="token_expired",
                card_bound=True,
            )
        if await self._ledger.token_redeemed(token_id):
            raise BasisRefused(
                "card-present token was already used", reason="token_replayed", card_bound=True
            )
        return TokenUse(token_id, expires_at)

    def _bind(self, card_number: str) -> bytes:
        return hmac.new(self._binding_key, card_number.encode("ascii"), hashlib.sha256).digest()[
            :16
        ]

    def _tag(self, header: bytes) -> bytes:
        return hmac.new(self._tag_key, header, hashlib.sha256).digest()


def _decode(token: str) -> tuple[bytes, bytes]:
    if not token.startswith(PREFIX) or len(token) > _MAX_TOKEN_CHARS:
        raise BasisRefused("card-present token is malformed", reason="token_malformed")
    body = token[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise BasisRefused("card-present token is malformed", reason="token_malformed") from None
    if len(raw) != _RAW_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != body:
        # The second test refuses non-canonical encodings (unused low bits set).
        raise BasisRefused("card-present token is malformed", reason="token_malformed")
    return raw[: _HEADER.size], raw[_HEADER.size :]
