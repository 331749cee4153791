"""Symmetric secrets the gateway keeps on disk (token MAC key, audit pseudonym key).

Each secret is 32 random bytes in its own file, created with mode 0600 on first use and refused
if anyone but the owner can read it. Signing keys live behind ``gateway.audit.signer`` instead.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from gateway.errors import SetupError

SECRET_BYTES = 32


class KeyFileError(SetupError):
    """A key file exists but cannot be used as it is."""


def load_or_create_secret(path: Path) -> bytes:
    """Return the secret stored at ``path``, creating it (mode 0600) if it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(SECRET_BYTES))
        f.flush()
        os.fsync(f.fileno())
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: key file is readable by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    data = path.read_bytes()
    if len(data) != SECRET_BYTES:
        raise KeyFileError(f"{path}: expected {SECRET_BYTES} bytes, found {len(data)}")
    return data
