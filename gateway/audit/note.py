"""C2SP signed notes (https://c2sp.org/signed-note): key names, verifier keys, opening notes.

A note is a text ending in a newline, a blank line, then one or more signature lines
``— <key name> base64(key ID || signature)``. This module owns that format and Ed25519
(signature type 0x01) verification. Signing needs a private key, so it lives in ``signer``;
this module only formats the signature lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "EM_DASH",
    "MAX_SIGNATURES",
    "SIG_TYPE_ED25519",
    "AmbiguousKeyError",
    "BadSignatureError",
    "InvalidVerifierKeyError",
    "MalformedNoteError",
    "NoteError",
    "OpenedNote",
    "UnknownKeyError",
    "Verifier",
    "VerifierSet",
    "check_key_name",
    "check_text",
    "key_id",
    "open_note",
    "signature_line",
]

SIG_TYPE_ED25519 = 0x01
"""Signature type identifier byte of Ed25519 signatures."""

EM_DASH = "\u2014"
"""First character of every signature line, followed by a space."""

MAX_SIGNATURES = 100
"""Notes with more signature lines are refused (the spec requires accepting at least 16)."""

KEY_ID_SIZE = 4
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
_SIG_PREFIX = EM_DASH + " "


class NoteError(Exception):
    """Root of every signed-note error."""


class MalformedNoteError(NoteError):
    """The bytes are not a well-formed signed note."""


class InvalidVerifierKeyError(NoteError, ValueError):
    """A verifier key string is malformed, or its key ID does not match its key."""


class AmbiguousKeyError(NoteError, ValueError):
    """Two different keys share a key name and key ID."""


class UnknownKeyError(NoteError):
    """No signature on the note comes from a known key."""


class BadSignatureError(NoteError):
    """A signature from a known key does not verify: the note was altered or forged."""


def key_id(name: str, public_key: bytes, sig_type: int = SIG_TYPE_ED25519) -> bytes:
    """Return the 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def check_key_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a valid key name (non-empty, no space, no +)."""
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise ValueError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")


def check_text(text: str) -> None:
    """Raise ``MalformedNoteError`` unless ``text`` can be the text of a note."""
    if not text.endswith("\n"):
        raise MalformedNoteError("malformed note: text must end in a newline")
    if _CONTROL.search(text):
        raise MalformedNoteError("malformed note: text contains a control character")


def signature_line(name: str, key_id: bytes, signature: bytes) -> str:
    """Return the signature line ``— name base64(key ID || signature)``, newline included."""
    return f"{_SIG_PREFIX}{name} {base64.b64encode(key_id + signature).decode()}\n"


def _b64decode_strict(data: str) -> bytes:
    """Decode standard, padded, canonical base64; raise ``ValueError`` on anything else."""
    raw = base64.b64decode(data, validate=True)
    if base64.b64encode(raw).decode() != data:
        raise ValueError("non-canonical base64")
    return raw


class Verifier:
    """An Ed25519 note verifier: a key name and a public key (and the key ID they imply)."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        try:
            check_key_name(name)
        except ValueError as e:
            raise InvalidVerifierKeyError(str(e)) from None
        if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
            raise InvalidVerifierKeyError(
                f"Ed25519 public key has {len(public_key)} bytes, want {ED25519_PUBLIC_KEY_SIZE}"
            )
        self.name = name
        self.public_key = bytes(public_key)
        self.key_id = key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse a verifier key string ``name+hex(key ID)+base64(0x01 || public key)``."""
        parts = vkey.split("+", 2)  # the base64 key may itself contain '+'
        if len(parts) != 3:
            raise InvalidVerifierKeyError("malformed verifier key: want name+keyid+key")
        name, id_hex, key_b64 = parts
        if not _KEY_ID_HEX.fullmatch(id_hex):
            raise InvalidVerifierKeyError("malformed verifier key: key ID is not 8 hex digits")
        try:
            raw = _b64decode_strict(key_b64)
        except (binascii.Error, ValueError):
            raise InvalidVerifierKeyError("malformed verifier key: bad base64 key") from None
        if not raw or raw[0] != SIG_TYPE_ED25519:
            raise InvalidVerifierKeyError("unsupported verifier key: signature type is not Ed25519")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != id_hex:
            raise InvalidVerifierKeyError(
                f"verifier key ID {id_hex} does not match the key (want {verifier.key_id.hex()})"
            )
        return verifier

    def key_string(self) -> str:
        """Return the verifier key string that ``parse`` reads."""
        typed_key = bytes([SIG_TYPE_ED25519]) + self.public_key
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(typed_key).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return (self.name, self.public_key) == (other.name, other.public_key)

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))

    def __repr__(self) -> str:
        return f"Verifier({self.key_string()!r})"


class VerifierSet:
    """The keys a reader trusts; several keys let notes signed before a rotation verify.

    An empty set verifies nothing: every note is refused.
    """

    __slots__ = ("_by_id",)

    def __init__(self, verifiers: Iterable[Verifier] = ()) -> None:
        self._by_id: dict[tuple[str, bytes], Verifier] = {}
        for v in verifiers:
            known = self._by_id.setdefault((v.name, v.key_id), v)
            if known != v:
                raise AmbiguousKeyError(f"ambiguous key {v.name}+{v.key_id.hex()}")

    @classmethod
    def parse(cls, vkeys: Iterable[str]) -> VerifierSet:
        """Build a set from verifier key strings."""
        return cls(Verifier.parse(k) for k in vkeys)

    def get(self, name: str, key_id: bytes) -> Verifier | None:
        """Return the known key with this name and key ID, if any."""
        return self._by_id.get((name, key_id))

    def __iter__(self) -> Iterator[Verifier]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"VerifierSet({[v.key_string() for v in self]!r})"


class OpenedNote(NamedTuple):
    """A verified note: its text and the names of the known keys that signed it."""

    text: str
    signers: list[str]


def _split(note: bytes) -> tuple[str, list[str]]:
    """Split a note into its text and its signature lines (without newlines)."""
    try:
        s = note.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("malformed note: not valid UTF-8") from None
    if _CONTROL.search(s):
        raise MalformedNoteError("malformed note: contains a control character")
    sep = s.rfind("\n\n")
    if sep < 0:
        raise MalformedNoteError("malformed note: no blank line before the signatures")
    text, sigs = s[: sep + 1], s[sep + 2 :]
    if not sigs.endswith("\n"):
        raise MalformedNoteError("malformed note: signatures must end in a newline")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    return text, lines


def _parse_signature(line: str) -> tuple[str, bytes, bytes]:
    """Parse one signature line into (key name, key ID, signature)."""
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError("malformed note: signature line does not start with '— '")
    name, _, sig_b64 = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        check_key_name(name)
        raw = _b64decode_strict(sig_b64)
    except (binascii.Error, ValueError):
        raise MalformedNoteError(f"malformed note: bad signature line for {name!r}") from None
    if len(raw) <= KEY_ID_SIZE:
        raise MalformedNoteError(f"malformed note: signature of {name!r} is too short")
    return name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:]


def open_note(note: bytes, verifiers: VerifierSet | Iterable[Verifier]) -> OpenedNote:
    """Verify a signed note; return its text and the names of the known keys that signed it.

    Signatures from unknown keys are ignored, but at least one known key must have signed
    (else ``UnknownKeyError``); any signature from a known key that fails to verify rejects
    the whole note (``BadSignatureError``).
    """
    known = verifiers if isinstance(verifiers, VerifierSet) else VerifierSet(verifiers)
    text, lines = _split(note)
    message = text.encode()
    signers: list[str] = []
    for line in lines:
        name, kid, signature = _parse_signature(line)
        verifier = known.get(name, kid)
        if verifier is None:
            continue
        if not verifier.verify(message, signature):
            raise BadSignatureError(f"invalid signature for key {name}+{kid.hex()}")
        if name not in signers:
            signers.append(name)
    if not signers:
        raise UnknownKeyError("note has no signature from a known key")
    return OpenedNote(text, signers)
