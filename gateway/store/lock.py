"""Who serves a data directory: an advisory lock on ``DATA_DIR/onecard.lock``.

``onecard serve`` holds a ``flock`` on the lock file for as long as it runs; the kernel
releases it when the process ends, however it ends (SIGKILL included), so a stale lock never
blocks a restart. On SQLite the lock is exclusive: one gateway process per directory, a second
one is refused with a one-line error naming the directory. On PostgreSQL the directory holds
only keys and the PKI, which several gateway processes of one log share, so each holds the lock
shared; a command that changes the keys (`onecard audit rotate-key`) takes it exclusively, and
is refused while any gateway runs. Read-only tools (``onecard audit export``) ask ``is_served``
to learn whether a live gateway holds the directory; asking never creates the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from gateway.errors import SetupError

LOCK_NAME = "onecard.lock"


class DataDirInUse(SetupError):
    """Another gateway process serves this data directory."""


class DataDirLock:
    """The exclusive claim of one process on one data directory."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path, *, shared: bool = False) -> DataDirLock:
        """Take the lock (``shared``: beside other gateways of a shared store) or raise
        ``DataDirInUse`` (never waits)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SetupError(f"{path}: cannot open the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if shared:
                raise DataDirInUse(
                    f"{data_dir}: another onecard process holds this data directory alone (a "
                    f"gateway on SQLite, or a key rotation); stop it first"
                ) from None
            raise DataDirInUse(
                f"{data_dir}: another onecard gateway is already serving this data directory "
                f"(one gateway process per data directory on SQLite; stop it or choose another "
                f"--data-dir)"
            ) from None
        if not shared:
            with contextlib.suppress(OSError):  # the pid is for people; the lock is the flock
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd, path)

    def release(self) -> None:
        """Give the directory up (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_served(data_dir: Path) -> bool:
    """True while a live gateway holds ``data_dir``'s lock, alone or shared (never creates
    the lock file)."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
