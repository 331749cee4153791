"""Signing keys: the only module of the gateway that touches private key material.

``Signer`` is the port: anything with a key name, key ID, public key and a ``sign`` method,
so that a key held in an HSM (PKCS#11) can replace the key file later. ``Ed25519FileSigner``
is the adapter for an Ed25519 key in a file readable by its owner only. ``sign_note`` signs
a C2SP note with one or more signers.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.note import (
    MalformedNoteError,
    check_key_name,
    check_text,
    key_id,
    signature_line,
)
from gateway.audit.note import Verifier as _Verifier
from gateway.errors import SetupError

__all__ = [
    "Ed25519FileSigner",
    "Signer",
    "SignerError",
    "SigningKeyError",
    "load_or_generate",
    "sign_note",
]

_RAW_SEED_SIZE = 32


class SignerError(Exception):
    """A signer is misconfigured or refused to sign."""


class SigningKeyError(SetupError, SignerError):
    """A signing key file cannot be created or used as it is; the message says what to fix."""


class Signer(Protocol):
    """A note signing key (Ed25519), wherever the private half lives."""

    @property
    def name(self) -> str:
        """The key name, as it appears in signature lines."""
        ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
        ...

    def public_key_bytes(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Return the Ed25519 signature of ``message``."""
        ...

    def verifier_key(self) -> str:
        """Return the note verifier key string ``name+hex(key ID)+base64(0x01 || key)``."""
        ...


class Ed25519FileSigner:
    """An Ed25519 key in a PKCS#8 PEM file (or a 32-byte raw seed) with mode 0600."""

    __slots__ = ("_key", "_key_id", "_name", "_public")

    def __init__(self, path: str | os.PathLike[str], name: str) -> None:
        _check_name(name)
        self._name = name
        self._key = _load_private_key(Path(path))
        self._public = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._key_id = key_id(name, self._public)

    @classmethod
    def generate(cls, path: str | os.PathLike[str], name: str) -> Ed25519FileSigner:
        """Create a new key file at ``path`` (mode 0600, never overwritten) and load it."""
        _check_name(name)
        path = Path(path)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SigningKeyError(f"{path}: key file already exists; not overwriting") from None
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        return cls(path, name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._key_id

    def public_key_bytes(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier_key(self) -> str:
        return _Verifier(self._name, self._public).key_string()

    def __repr__(self) -> str:
        return f"Ed25519FileSigner(name={self._name!r}, key_id={self._key_id.hex()!r})"


def load_or_generate(path: Path, name: str) -> Ed25519FileSigner:
    """The Ed25519 key at ``path``, created (mode 0600, in a 0700 directory) if there is none:
    for keys that nothing else depends on yet (the consent artefact key on a first start)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Ed25519FileSigner.generate(path, name)
    return Ed25519FileSigner(path, name)


def _check_name(name: str) -> None:
    try:
        check_key_name(name)
    except ValueError as e:
        raise SigningKeyError(str(e)) from None


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a file only its owner can access."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot open key file: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SigningKeyError(f"{path}: key file is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SigningKeyError(
                f"{path}: key file is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
            )
        data = f.read()
    if data.lstrip().startswith(b"-----BEGIN"):
        return _parse_pem(path, data)
    if len(data) == _RAW_SEED_SIZE:
        return Ed25519PrivateKey.from_private_bytes(data)
    raise SigningKeyError(
        f"{path}: not a PEM Ed25519 private key nor a {_RAW_SEED_SIZE}-byte raw seed"
    )


def _parse_pem(path: Path, data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(f"{path}: encrypted key files are not supported") from None
    except ValueError:
        raise SigningKeyError(f"{path}: key file is not a valid PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: key is {type(key).__name__}, want an Ed25519 key")
    return key


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Return the C2SP signed note of ``text`` (which must end in a newline) by ``signers``."""
    check_text(text)
    if not signers:
        raise MalformedNoteError("malformed note: a note needs at least one signature")
    message = text.encode()
    lines = []
    for signer in signers:
        name, kid = signer.name, signer.key_id
        check_key_name(name)
        if kid != key_id(name, signer.public_key_bytes()):
            raise SignerError(f"signer {name}: key ID {kid.hex()} does not match its public key")
        lines.append(signature_line(name, kid, signer.sign(message)))
    return (text + "\n" + "".join(lines)).encode()
