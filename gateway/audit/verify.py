"""The offline verifier: check an audit log export with nothing but the regulator's keys.

``verify_export`` reads an export directory (``docs/audit-format.md``) and trusts none of
it, only the verifier keys passed in. Checks, in order; the first failure is the one reported,
with the index of the first entry whose tampering can be named:

1. every ``checkpoints/<size>.note`` is signed by a known key, names one origin, and its file
   name is its tree size (``load_checkpoints``);
2. ``entries.jsonl`` is streamed in blocks: line ``p`` must start with exactly
   ``{"i":p,"prev":"<hex leaf hash of entry p-1>","r":`` and end with ``}``. The prefix is
   compared as bytes, never parsed as JSON. A wrong index means entries were deleted,
   inserted or reordered; a wrong ``prev`` means entry ``p-1`` was changed;
3. the tree is built as the leaves go by, and at each checkpoint size ``s`` its root must be
   the checkpoint's. As every ``prev`` link before ``s`` held, entry ``s-1`` is the one named;
4. the file must hold at least as many entries as the largest checkpoint; entries beyond it
   are fine (``VerifyReport.beyond_latest``): they are simply not signed yet.

Consistency between checkpoints is not proved again with RFC 9162 proofs: every checkpoint
root is recomputed from the one sequence of leaves, so each checkpoint is a prefix of the
next by construction, and a consistency proof built from these nodes could not fail. That
keeps the verifier at O(log n) memory and one pass.

``workers > 1`` splits the file into byte ranges hashed in parallel processes
(``_verify_fast.scan_range``), which fold their leaves into subtree roots; the parent checks
that each range continues the previous one and joins the roots. Workers check every line as the
sequential pass does. On any anomaly, a root that does not match included, the sequential pass
runs and names the first bad entry.

The per-entry loops run in C when the extension ``gateway.audit._native`` is built, and in
Python otherwise (``_verify_fast``); both give the same answers.

``verify_leaves`` runs checks 2 to 4 on leaves from anywhere (entries streamed from a live
gateway); ``verify_receipt`` checks the inclusion proof of a receipt against a checkpoint, and
``prove_receipt`` builds that proof from an export's leaves, for a regulator who holds a
receipt and an export but not the gateway.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from multiprocessing.pool import AsyncResult
from pathlib import Path

from gateway.audit import _verify_fast as fast
from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    OriginMismatchError,
    open_checkpoint,
)
from gateway.audit.compact import CompactRange, NodeID
from gateway.audit.note import BadSignatureError, NoteError, UnknownKeyError, VerifierSet
from gateway.audit.proof import OutOfRangeError, inclusion_proof, root_of, verify_inclusion
from gateway.audit.rfc6962 import EMPTY_ROOT

__all__ = [
    "ExportError",
    "Problem",
    "Progress",
    "VerifyReport",
    "load_checkpoints",
    "prove_receipt",
    "verify_export",
    "verify_leaves",
    "verify_receipt",
]

Progress = Callable[[int, int], None]
"""Called with (entries done, total expected or 0) about once per second, and at the end."""

ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints"
RANGE_SIZE = 8 << 20
"""Bytes of the entries file per task in the parallel mode."""

_NOTE_NAME = re.compile(r"([0-9]{12,})\.note")
_NO_CHECKPOINT = 1 << 64  # larger than any tree size


@dataclass(frozen=True)
class Problem:
    """What is wrong with a log; ``index`` is the first bad entry, when one can be named."""

    index: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a verification: how much was checked, and the problem found if any."""

    entries: int
    checkpoints: int
    latest: Checkpoint | None
    problem: Problem | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def beyond_latest(self) -> int:
        """Entries after the latest checkpoint: verified as a chain, not yet signed."""
        return self.entries - (self.latest.size if self.latest else 0)


class ExportError(Exception):
    """The export cannot be verified: ``problem`` says which file and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def verify_receipt(
    leaf_index: int, leaf_hash: bytes, checkpoint: Checkpoint, proof: Sequence[bytes]
) -> None:
    """Check a receipt's inclusion proof against a checkpoint; raise a ``ProofError`` if bad."""
    verify_inclusion(leaf_hash, leaf_index, checkpoint.size, proof, checkpoint.root_hash)


def prove_receipt(
    directory: str | os.PathLike[str],
    verifiers: VerifierSet,
    leaf_index: int,
    leaf_hash: bytes,
    *,
    origin: str | None = None,
) -> tuple[Checkpoint, list[bytes], bool]:
    """Prove a receipt against the newest signed checkpoint of an export.

    Only the checkpoint's signature is trusted: the proof is computed from the export's leaves
    and checked against the signed root (RFC 9162 2.1.3.2), so a changed export cannot make a
    receipt pass. Returns the checkpoint, the proof, and whether the export's own entry at that
    index is the receipt's (the proof does not read it: a receipt can be proved even where the
    export's copy of the entry was changed). Raises ``ExportError`` for an unusable export and
    a ``ProofError`` if the receipt is not in the signed tree.
    """
    checkpoints = load_checkpoints(directory, verifiers, origin)
    if not checkpoints:
        raise ExportError(Problem(None, f"{CHECKPOINTS}: no signed checkpoint to prove against"))
    checkpoint = checkpoints[-1]
    if not 0 <= leaf_index < checkpoint.size:
        raise OutOfRangeError(
            f"receipt index {leaf_index} is not in the newest checkpoint "
            f"({checkpoint.size} entries)"
        )
    hashes: list[bytes] = []
    with (Path(directory) / ENTRIES).open("rb") as f:
        for block in fast.read_blocks(f):
            hashes.extend(fast.hash_leaves(block))
            if len(hashes) >= checkpoint.size:
                break
    del hashes[checkpoint.size :]
    proof = inclusion_proof(_LeafNodes(hashes), leaf_index, checkpoint.size)
    verify_receipt(leaf_index, leaf_hash, checkpoint, proof)
    return checkpoint, proof, hashes[leaf_index] == leaf_hash


class _LeafNodes:
    """``proof.NodeReader`` computing nodes from leaf hashes in memory."""

    def __init__(self, leaf_hashes: list[bytes]) -> None:
        self._leaves = leaf_hashes

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        nodes = []
        for node in ids:
            low, high = node.coverage()
            if high > len(self._leaves):
                raise OutOfRangeError(f"the export holds fewer than {high} entries")
            nodes.append(root_of(self._leaves[low:high]))
        return nodes


def load_checkpoints(
    directory: str | os.PathLike[str], verifiers: VerifierSet, origin: str | None = None
) -> list[Checkpoint]:
    """Open every ``checkpoints/*.note`` of an export; return them sorted by tree size.

    Each must be signed by a key of ``verifiers`` and be a checkpoint of ``origin`` (if
    ``origin`` is None, of the same origin as the others), in a file named after its size.
    Raises ``ExportError`` naming the first file, in size order, that is not.
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
        note = path.read_bytes()
        want = origin if origin is not None else _claimed_origin(note)
        try:
            checkpoint = open_checkpoint(note, verifiers, want)
        except OriginMismatchError as e:
            if given or not first_file:  # the caller's origin, not another file's
                raise ExportError(Problem(None, f"{name}: {e}")) from None
            raise ExportError(
                Problem(None, f"{name}: origin {e.found!r} differs from {want!r} of {first_file}")
            ) from None
        except UnknownKeyError:
            raise ExportError(
                Problem(None, f"{name}: signed by an unknown key ({_signers(note)})")
            ) from None
        except BadSignatureError as e:
            raise ExportError(
                Problem(None, f"{name}: {e}: the checkpoint was changed after signing, or forged")
            ) from None
        except (NoteError, CheckpointError) as e:
            raise ExportError(Problem(None, f"{name}: {e}")) from None
        if f"{checkpoint.size:012d}" != match[1]:
            raise ExportError(
                Problem(None, f"{name}: holds the checkpoint of tree size {checkpoint.size}")
            )
        if not first_file:
            origin, first_file = checkpoint.origin, name
        checkpoints.append(checkpoint)
    return checkpoints


def verify_export(
    directory: str | os.PathLike[str],
    verifiers: VerifierSet,
    *,
    origin: str | None = None,
    progress: Progress | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Verify an export directory against the regulator's keys; see the module docstring."""
    started = time.perf_counter()
    try:
        checkpoints = load_checkpoints(directory, verifiers, origin)
    except ExportError as e:
        return VerifyReport(0, 0, None, e.problem, time.perf_counter() - started)
    path = Path(directory) / ENTRIES
    if not path.is_file():
        run = _Run(checkpoints, progress, 0, started)
        return run.report(Problem(None, f"{ENTRIES}: no such file"))
    total = _expected_total(Path(directory), checkpoints)
    if workers > 1:
        run = _Run(checkpoints, progress, total, started)
        problem = _run_parallel(run, path, workers)
        if not isinstance(problem, _Fallback):
            return run.report(problem)
    run = _Run(checkpoints, progress, total, started)
    with path.open("rb") as f:
        return run.report(run.feed_blocks(fast.read_blocks(f)))


def verify_leaves(
    leaves: Iterable[bytes],
    checkpoints: Sequence[Checkpoint],
    *,
    progress: Progress | None = None,
    total: int = 0,
) -> VerifyReport:
    """Verify leaf bytes (entries 0, 1, ...) against already opened checkpoints (checks 2-4)."""
    run = _Run(sorted(checkpoints, key=lambda c: c.size), progress, total, time.perf_counter())
    for batch in _batches(leaves):
        # A leaf is one line of an export: one holding a line break would pass for two.
        broken = next((i for i, leaf in enumerate(batch) if b"\n" in leaf), len(batch))
        problem = run.feed_blocks([b"".join(leaf + b"\n" for leaf in batch[:broken])])
        if problem is None and broken < len(batch):
            problem = Problem(run.p, f"entry {run.p}: malformed: holds a line break")
        if problem is not None:
            return run.report(problem)
    return run.report(None)


class _Fallback:
    """The parallel pass saw something wrong: the sequential pass must name it."""


class _Run:
    """One verification pass: the chain and tree so far, and the checkpoints still ahead."""

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        progress: Progress | None,
        total: int,
        started: float,
    ) -> None:
        self.checkpoints = checkpoints
        self.p = 0
        self.prev_hex = fast.ZERO_HEX
        self._tree = fast.Tree()
        self._joined: CompactRange | None = None  # the parallel pass joins subtree roots
        self._next = 0  # index in ``checkpoints`` of the next one to compare
        self._progress = progress
        self._total = total
        self._started = started
        self._tick = time.monotonic() + 1.0

    def report(self, problem: Problem | None) -> VerifyReport:
        if problem is None:
            problem = self._check_checkpoints() or self._missing()
        if self._progress is not None:
            self._progress(self.p, self._total)
        latest = self.checkpoints[-1] if self.checkpoints else None
        elapsed = time.perf_counter() - self._started
        return VerifyReport(self.p, len(self.checkpoints), latest, problem, elapsed)

    def feed_blocks(self, blocks: Iterable[bytes | memoryview]) -> Problem | None:
        """Check and add blocks of whole lines; return the first problem, if any."""
        for block in blocks:
            out: list[bytes] = []
            p, prev_hex, bad = fast.hash_lines(block, self.p, self.prev_hex, out)
            problem = self.add_hashes(out)
            if problem is not None:
                return problem
            self.prev_hex = prev_hex
            if bad >= 0:
                return _diagnose(bytes(block[bad:]).split(b"\n", 1)[0], p, prev_hex)
            if block and block[-1] != ord("\n"):
                return Problem(p - 1, f"entry {p - 1}: truncated: the file ends without a newline")
            self.report_progress()
        return None

    def add_hashes(self, hashes: list[bytes]) -> Problem | None:
        """Add leaf hashes that passed the line checks, comparing every checkpoint on the way."""
        tree, done, n = self._tree, 0, len(hashes)
        while self._next_size() - self.p <= n - done:
            take = self._next_size() - self.p
            tree.extend(hashes[done : done + take])
            done += take
            self.p += take
            problem = self._check_checkpoints()
            if problem is not None:
                return problem
        if done < n:
            tree.extend(hashes[done:] if done else hashes)
            self.p += n - done
        return None

    def add_subtrees(self, subtrees: list[tuple[int, bytes]]) -> Problem | None:
        """Add the roots of consecutive aligned subtrees (the parallel pass)."""
        if self._joined is None:
            self._joined = CompactRange()
        joined = self._joined
        problem = self._check_checkpoints()  # one at the size the range starts at: size 0
        if problem is not None:
            return problem
        for level, root in subtrees:
            joined.push_subtree(level, root)
            self.p += 1 << level
            if self._next_size() == self.p:
                problem = self._check_checkpoints()
                if problem is not None:
                    return problem
        return None

    def _next_size(self) -> int:
        cps, i = self.checkpoints, self._next
        return cps[i].size if i < len(cps) else _NO_CHECKPOINT

    def _check_checkpoints(self) -> Problem | None:
        """Compare the checkpoints of the current size with the tree's root."""
        cps = self.checkpoints
        while self._next < len(cps) and cps[self._next].size == self.p:
            size = self.p
            tree = self._joined if self._joined is not None else self._tree
            root = tree.root() if size else EMPTY_ROOT
            if root != cps[self._next].root_hash:
                if size == 0:
                    return Problem(None, "checkpoint 0 does not hold the root of the empty tree")
                return Problem(
                    size - 1,
                    f"entry {size - 1} does not match checkpoint {size}: the entries before "
                    f"it are chained to it, but the tree root is {root.hex()}, not the signed "
                    f"{cps[self._next].root_hash.hex()}",
                )
            self._next += 1
        return None

    def _missing(self) -> Problem | None:
        if self.checkpoints and self.checkpoints[-1].size > self.p:
            size = self.checkpoints[-1].size
            return Problem(self.p, f"entries {self.p}..{size - 1} are missing (checkpoint {size})")
        return None

    def report_progress(self) -> None:
        if self._progress is not None and time.monotonic() >= self._tick:
            self._progress(self.p, self._total)
            self._tick = time.monotonic() + 1.0


def _diagnose(line: bytes, p: int, prev_hex: bytes) -> Problem:
    """Name what is wrong with line ``p``, which failed the fast check."""
    match = fast.ENTRY_PREFIX.match(line)
    if match is None:
        return Problem(p, f'entry {p}: malformed: does not start with {{"i":{p},"prev":"..."')
    index = int(match[1])
    if index != p:
        return Problem(
            p, f"entry {p}: holds index {index}: entries were deleted, inserted or reordered"
        )
    if match[2] != prev_hex:
        if p == 0:
            return Problem(0, "entry 0: malformed: its prev is not 64 zeros")
        return Problem(
            p - 1, f"entry {p - 1} was changed: entry {p} recorded a different hash for it"
        )
    return Problem(p, f"entry {p}: malformed: does not end with }}")


def _run_parallel(run: _Run, path: Path, workers: int) -> Problem | _Fallback | None:
    """Check and hash byte ranges in worker processes, feeding ``run`` in order."""
    size = path.stat().st_size
    tasks = (
        (str(path), start, min(start + RANGE_SIZE, size)) for start in range(0, size, RANGE_SIZE)
    )
    # spawn, not fork: the caller may be a threaded process (a gateway, a test runner).
    cuts = [c.size for c in run.checkpoints]
    with multiprocessing.get_context("spawn").Pool(workers, fast.set_cuts, (cuts,)) as pool:
        try:
            # A bounded window of ranges in flight keeps memory flat if the parent falls behind.
            window: deque[AsyncResult[fast.RangeResult]] = deque(
                pool.apply_async(fast.scan_range, task) for task in islice(tasks, 2 * workers)
            )
            while window:
                result = window.popleft().get()
                task = next(tasks, None)
                if task is not None:
                    window.append(pool.apply_async(fast.scan_range, task))
                if result.ok and result.entries == 0:
                    continue  # the range held no line start
                if not result.ok or (result.first_index, result.first_prev_hex) != (
                    run.p,
                    run.prev_hex,
                ):
                    return _Fallback()
                if run.add_subtrees(result.subtrees) is not None:
                    return _Fallback()  # the chain was not checked: the sequential pass names it
                run.prev_hex = result.last_hex
                run.report_progress()
        finally:
            # Let the ranges in flight finish: a worker terminated while it sends a result
            # leaves the result queue's lock taken, and Pool.terminate then hangs.
            pool.close()
            pool.join()
    if run.checkpoints and run.p < run.checkpoints[-1].size:
        return _Fallback()  # entries are missing: the sequential pass says which
    return None


def _batches(leaves: Iterable[bytes], size: int = 4096) -> Iterator[list[bytes]]:
    it = iter(leaves)
    while batch := list(islice(it, size)):
        yield batch


def _expected_total(directory: Path, checkpoints: Sequence[Checkpoint]) -> int:
    """Entries expected, for progress only: log.json's size (untrusted) or the latest size."""
    try:
        size = json.loads((directory / "log.json").read_text())["size"]
        if isinstance(size, int) and size >= 0:
            return size
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return checkpoints[-1].size if checkpoints else 0


def _claimed_origin(note: bytes) -> str:
    """The origin line a note claims, before it is verified."""
    return note.split(b"\n", 1)[0].decode("utf-8", "replace")


def _signers(note: bytes) -> str:
    """Describe the keys named in a note's signature lines, for an unknown-key message."""
    text = note.decode("utf-8", "replace")
    names = [
        line[2:].split(" ", 1)[0]
        for line in text[text.rfind("\n\n") + 2 :].splitlines()
        if line.startswith("\u2014 ")
    ]
    return "signatures by " + ", ".join(names) if names else "no signature lines"
