"""The eligibility exchange's keys: one place that reads, checks and makes them.

Each side of the Cal-ITP exchange has one key pair. The gateway's private key signs requests
(JWS) and decrypts answers (JWE); the eligibility server's public key encrypts requests and
verifies answers. Files are PEM (PKCS#8 or PKCS#1 private keys, SubjectPublicKeyInfo public
keys) or a JWK in JSON. A private key file must be readable by its owner only (as the gateway's
other key files, ``gateway.keys``). For the reference server, ``reference_pair`` makes both key
pairs at first start, beside the gateway's other keys, and reuses them after.

Nothing outside this module parses key files; the rest of the adapter holds ``jwcrypto`` JWKs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwk

from gateway.keys import KeyFileError

__all__ = [
    "GATEWAY_KEY_FILE",
    "SERVER_KEY_FILE",
    "KeyFileError",
    "PartyKeys",
    "load_private_key",
    "load_public_key",
    "make_private_key_file",
    "public_pem",
    "reference_pair",
]

GATEWAY_KEY_FILE = "eligibility-gateway.pem"  # the gateway's private key (made for the reference)
SERVER_KEY_FILE = "eligibility-reference-server.pem"  # the reference server's private key
_RSA_BITS = 2048
_MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class PartyKeys:
    """One side's view: its own private key and the other side's public key."""

    own: jwk.JWK
    peer: jwk.JWK


def load_private_key(path: Path) -> jwk.JWK:
    """The private key in ``path`` (PEM or JWK); ``KeyFileError`` says what is wrong."""
    key = _parse(path, _read(path))
    if not key.has_private:
        raise KeyFileError(f"{path}: holds a public key; the gateway needs its private key here")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: private key file is readable by group or others "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    return key


def load_public_key(path: Path) -> jwk.JWK:
    """The public key in ``path`` (PEM or JWK); a private key file is refused (keep it apart)."""
    key = _parse(path, _read(path))
    if key.has_private:
        raise KeyFileError(
            f"{path}: holds a private key; give the peer's public key only "
            f"(openssl pkey -in {path.name} -pubout)"
        )
    return key


def public_pem(key: jwk.JWK) -> bytes:
    """The public half of ``key`` as PEM (SubjectPublicKeyInfo)."""
    pem: bytes = key.export_to_pem(private_key=False, password=None)
    return pem


def make_private_key_file(path: Path) -> bool:
    """Make an RSA key in ``path`` (mode 0600) unless it exists; True if it made one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return True


def reference_pair(keys_dir: Path) -> tuple[PartyKeys, PartyKeys]:
    """The gateway's and the reference server's keys, made in ``keys_dir`` at first use.

    Returns (gateway side, server side). The public halves are written beside them as
    ``*.pub.pem``, for a person who wants to point another client or server at them.
    """
    gateway_path, server_path = keys_dir / GATEWAY_KEY_FILE, keys_dir / SERVER_KEY_FILE
    for path in (gateway_path, server_path):
        make_private_key_file(path)
    gateway, server = load_private_key(gateway_path), load_private_key(server_path)
    for path, key in ((gateway_path, gateway), (server_path, server)):
        _write_public(path.with_suffix(".pub.pem"), public_pem(key))
    gateway_public = jwk.JWK.from_pem(public_pem(gateway))
    server_public = jwk.JWK.from_pem(public_pem(server))
    return PartyKeys(gateway, server_public), PartyKeys(server, gateway_public)


def _write_public(path: Path, pem: bytes) -> None:
    if path.exists() and path.read_bytes() == pem:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pem)
    tmp.replace(path)


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    if size > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large for a key file")
    return path.read_bytes()


def _parse(path: Path, data: bytes) -> jwk.JWK:
    try:
        if data.lstrip().startswith(b"{"):
            return jwk.JWK.from_json(data.decode("utf-8"))
        return jwk.JWK.from_pem(data)
    except Exception:
        # Never echo the file's content: it may be a private key.
        raise KeyFileError(
            f"{path}: not a PEM key (PKCS#8, PKCS#1 or SubjectPublicKeyInfo) nor a JWK"
        ) from None
