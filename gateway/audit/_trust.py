"""Which checkpoints the offline verifier believes: the export's and the ones a regulator kept.

Private to ``verify``. A checkpoint counts only when it carries a valid signature by a key the
regulator gave whose name is the log's origin (a log signs with its own key, named after it);
an export's ``checkpoints/<size>.note`` must also be named after its tree size and agree on one
origin. Every refusal is an ``ExportError`` whose ``Problem`` names the file and why.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gateway.audit._blame import Problem
from gateway.audit.checkpoint import Checkpoint, CheckpointError
from gateway.audit.note import BadSignatureError, NoteError, UnknownKeyError, VerifierSet, open_note

CHECKPOINTS = "checkpoints"
_NOTE_NAME = re.compile(r"([0-9]{12,})\.note")


class ExportError(Exception):
    """A checkpoint cannot be used: ``problem`` says which file and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def open_log_checkpoint(note: bytes, verifiers: VerifierSet, origin: str | None) -> Checkpoint:
    """Open a checkpoint note of the log ``origin`` (if None, the one the note names).

    It must carry a valid signature by a key of ``verifiers`` whose name is the origin (a
    log's checkpoints are signed by its own key, named after it). Raises ``NoteError``,
    ``CheckpointError`` or ``ValueError`` (another origin, or not signed by the log's key).
    """
    opened = open_note(note, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise ValueError(f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}")
    if checkpoint.origin not in opened.signers:
        raise ValueError(
            f"not signed by a key named as its origin {checkpoint.origin!r} (signed by "
            f"{', '.join(opened.signers)})"
        )
    return checkpoint


def open_trusted(
    path: str | os.PathLike[str], verifiers: VerifierSet, origin: str | None = None
) -> Checkpoint:
    """A checkpoint the regulator kept (``--trusted-checkpoint``); ``ExportError`` if unusable."""
    try:
        note = Path(path).read_bytes()
    except OSError as e:
        raise ExportError(Problem(None, f"{path}: cannot read it ({e.strerror})")) from None
    try:
        return open_log_checkpoint(note, verifiers, origin)
    except (NoteError, CheckpointError, ValueError) as e:
        raise ExportError(Problem(None, f"{path}: not a checkpoint of the log: {e}")) from None


def load_checkpoints(
    directory: str | os.PathLike[str], verifiers: VerifierSet, origin: str | None = None
) -> list[Checkpoint]:
    """Open every ``checkpoints/*.note`` of an export; return them sorted by tree size.

    Each must be signed by a key of ``verifiers`` named as the log's origin and be a checkpoint
    of ``origin`` (if ``origin`` is None, of the same origin as the others), in a file named
    after its size. Raises ``ExportError`` naming the first file, in size order, that is not.
    """
    folder = Path(directory) / CHECKPOINTS
    if not folder.is_dir():
        return []
    notes = sorted(
        (p for p in folder.iterdir() if p.suffix == ".note"), key=lambda p: (len(p.name), p.name)
    )
    checkpoints: list[Checkpoint] = []
    first_file = ""
    given = origin is not None
    for path in notes:
        name = f"{CHECKPOINTS}/{path.name}"
        match = _NOTE_NAME.fullmatch(path.name)
        if match is None:
            raise ExportError(Problem(None, f"{name}: file name is not the 12-digit tree size"))
        try:
            checkpoint = open_log_checkpoint(path.read_bytes(), verifiers, origin)
        except OSError as e:
            raise ExportError(Problem(None, f"{name}: cannot read it ({e.strerror})")) from None
        except UnknownKeyError:
            raise ExportError(
                Problem(None, f"{name}: signed by an unknown key ({_signers(path.read_bytes())})")
            ) from None
        except BadSignatureError as e:
            raise ExportError(
                Problem(None, f"{name}: {e}: the checkpoint was changed after signing, or forged")
            ) from None
        except (NoteError, CheckpointError, ValueError) as e:
            whose = f" of {first_file}" if first_file and not given and "origin" in str(e) else ""
            raise ExportError(Problem(None, f"{name}: {e}{whose}")) from None
        if f"{checkpoint.size:012d}" != match[1]:
            raise ExportError(
                Problem(None, f"{name}: holds the checkpoint of tree size {checkpoint.size}")
            )
        if not first_file:
            origin, first_file = checkpoint.origin, name
        checkpoints.append(checkpoint)
    return checkpoints


def _signers(note: bytes) -> str:
    """Describe the keys named in a note's signature lines, for an unknown-key message."""
    text = note.decode("utf-8", "replace")
    names = [
        line[2:].split(" ", 1)[0]
        for line in text[text.rfind("\n\n") + 2 :].splitlines()
        if line.startswith("\u2014 ")
    ]
    return "signatures by " + ", ".join(names) if names else "no signature lines"
