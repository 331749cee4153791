"""C2SP transparency log checkpoints (https://c2sp.org/tlog-checkpoint).

A checkpoint is the signed note of a tree head: origin line, decimal tree size, base64 root
hash, optional extension lines, each ending in a newline. This module owns that body, its
strict parsing, and signing and opening checkpoints as notes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.audit.note import OpenedNote, Verifier, VerifierSet, open_note
from gateway.audit.rfc6962 import HASH_SIZE
from gateway.audit.signer import Signer, sign_note

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "MalformedCheckpointError",
    "OriginMismatchError",
    "open_checkpoint",
    "sign_checkpoint",
]

MAX_TREE_SIZE = (1 << 64) - 1
_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f]")


class CheckpointError(Exception):
    """Root of checkpoint errors (signature errors are ``note.NoteError``)."""


class MalformedCheckpointError(CheckpointError, ValueError):
    """The checkpoint body does not follow the tlog-checkpoint format."""


class OriginMismatchError(CheckpointError):
    """The checkpoint is signed, but by another log than the one expected."""

    def __init__(self, expected: str, found: str) -> None:
        super().__init__(f"checkpoint origin {found!r} is not the expected {expected!r}")
        self.expected = expected
        self.found = found


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: its origin, tree size and root hash (and opaque extension lines)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or _CONTROL.search(self.origin):
            raise MalformedCheckpointError("malformed checkpoint: invalid origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedCheckpointError("malformed checkpoint: invalid log size")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedCheckpointError(
                f"malformed checkpoint: root hash has {len(self.root_hash)} bytes, want {HASH_SIZE}"
            )
        for line in self.extensions:
            if not line or _CONTROL.search(line):
                raise MalformedCheckpointError("malformed checkpoint: invalid extension line")

    def to_text(self) -> str:
        """Return the note text of this checkpoint."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly: no leading zeros, canonical base64, 32 bytes."""
        if not text.endswith("\n"):
            raise MalformedCheckpointError("malformed checkpoint: must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedCheckpointError("malformed checkpoint: want at least three lines")
        origin, size_line, root_line, *extensions = lines
        if not _SIZE.fullmatch(size_line):
            raise MalformedCheckpointError("malformed checkpoint: invalid log size")
        try:
            root_hash = base64.b64decode(root_line, validate=True)
        except binascii.Error:
            raise MalformedCheckpointError("malformed checkpoint: invalid root hash") from None
        if base64.b64encode(root_hash).decode() != root_line:
            raise MalformedCheckpointError("malformed checkpoint: invalid root hash")
        return cls(origin, int(size_line), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """Return the checkpoint as a note signed by ``signer``."""
    return sign_note(checkpoint.to_text(), [signer])


def open_checkpoint(
    note: bytes, verifiers: VerifierSet | Iterable[Verifier], origin: str
) -> Checkpoint:
    """Verify a signed checkpoint of the log ``origin`` and return it.

    Raises ``note.NoteError`` if no known key signed it, ``MalformedCheckpointError`` if
    the body is malformed and ``OriginMismatchError`` if it is another log's checkpoint.
    """
    opened: OpenedNote = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != origin:
        raise OriginMismatchError(origin, checkpoint.origin)
    return checkpoint
