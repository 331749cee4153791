"""The offline verifier: check an audit log export with nothing but the regulator's keys.

It says OK only when it proved every entry: ``verify_export`` reads an export directory
(``docs/audit-format.md``), trusts none of it, only the verifier keys passed in (and the
checkpoints the regulator kept, ``trusted``), and fails on anything it cannot prove. Checks:

1. every ``checkpoints/<size>.note`` is signed by a known key named as the log's origin, names
   one origin, and its file name is its tree size (``load_checkpoints``, in ``_trust``); there
   must be one;
2. ``entries.jsonl`` is streamed in blocks: line ``p`` must start with exactly
   ``{"i":p,"prev":"<hex leaf hash of entry p-1>","r":`` (compared as bytes, never parsed) and
   its record must match the leaf format's schema (``record.RECORD_SCHEMAS``);
3. the tree is built as the leaves go by, and at each checkpoint size, the export's and the
   trusted ones, its root must be the signed one;
4. the file must hold exactly as many entries as the largest checkpoint: an entry past the
   newest checkpoint is not proven, and fewer entries than a trusted checkpoint is a rollback;
5. every back-link (record version 3 on) names the previous entry about the same citizen
   (``_backlinks``), over the whole log: signed checkpoints do not vouch for it.

When a check fails, ``_blame`` names the entry at fault, or the range where only a range can be
known. Consistency between checkpoints is not proved again with RFC 9162 proofs: every root is
recomputed from the one sequence of leaves, so each checkpoint is a prefix of the next by
construction. That keeps the verifier at O(log n) memory and one pass.

``workers > 1`` splits the file into byte ranges hashed in parallel processes
(``_verify_fast.scan_range``), which fold their leaves into subtree roots; the parent checks
that each range continues the previous one and joins the roots. On any anomaly, the sequential
pass runs and names the problem. The per-entry loops run in C when the extension
``gateway.audit._native`` is built, and in Python otherwise; both give the same answers.

``verify_leaves`` runs checks 2 to 4 on leaves from anywhere (entries streamed from a live
gateway); ``verify_receipt`` checks the inclusion proof of a receipt against a checkpoint, and
``prove_receipt`` builds that proof from an export's leaves against its newest checkpoint or a
trusted one.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from multiprocessing.pool import AsyncResult
from pathlib import Path

from gateway.audit import _verify_fast as fast
from gateway.audit._backlinks import BackLinks
from gateway.audit._blame import Cut, Lines, Problem, blame_line, blame_root
from gateway.audit._trust import (
    CHECKPOINTS,
    ExportError,
    load_checkpoints,
    open_log_checkpoint,
    open_trusted,
)
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.compact import CompactRange, NodeID
from gateway.audit.note import NoteError, Verifier, VerifierSet
from gateway.audit.proof import OutOfRangeError, inclusion_proof, root_of, verify_inclusion
from gateway.audit.rfc6962 import EMPTY_ROOT
from gateway.errors import SetupError

__all__ = [
    "ExportError",
    "Problem",
    "Progress",
    "VerifyReport",
    "load_checkpoints",
    "open_log_checkpoint",
    "open_trusted",
    "prove_receipt",
    "verify_export",
    "verify_leaves",
    "verify_receipt",
]

Progress = Callable[[int, int], None]
"""Called with (entries read, entries the signed checkpoints hold) about once per second, and
at the end."""

ENTRIES = "entries.jsonl"
RANGE_SIZE = 8 << 20
"""Bytes of the entries file per task in the parallel mode."""

_NO_CHECKPOINT = 1 << 64  # larger than any tree size


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
    against: Checkpoint | None = None,
) -> tuple[Checkpoint, list[bytes], bool]:
    """Prove a receipt against ``against`` (a trusted checkpoint) or the export's newest.

    Only the checkpoint's signature is trusted: the proof is computed from the export's leaves
    and checked against the signed root (RFC 9162 2.1.3.2), so a changed export cannot make a
    receipt pass. Returns the checkpoint, the proof, and whether the export's own entry at that
    index is the receipt's (the proof does not read it: a receipt can be proved even where the
    export's copy of the entry was changed). Raises ``ExportError`` for an unusable export and
    a ``ProofError`` if the receipt is not in the signed tree.
    """
    if against is None:
        checkpoints = load_checkpoints(directory, verifiers, origin)
        if not checkpoints:
            raise ExportError(
                Problem(None, f"{CHECKPOINTS}: no signed checkpoint to prove against")
            )
        against = checkpoints[-1]
    checkpoint = against
    if not 0 <= leaf_index < checkpoint.size:
        raise OutOfRangeError(
            f"receipt index {leaf_index} is not in the checkpoint ({checkpoint.size} entries)"
        )
    hashes: list[bytes] = []
    try:
        with (Path(directory) / ENTRIES).open("rb") as f:
            for block in fast.read_blocks(f):
                hashes.extend(fast.hash_leaves(block))
                if len(hashes) >= checkpoint.size:
                    break
    except OSError as e:
        raise ExportError(Problem(None, f"{ENTRIES}: cannot read it ({e.strerror})")) from None
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


def verify_export(
    directory: str | os.PathLike[str],
    verifiers: VerifierSet,
    *,
    origin: str | None = None,
    trusted: Sequence[Checkpoint] = (),
    progress: Progress | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Verify an export directory against the regulator's keys and the checkpoints it kept
    (``trusted``, opened with ``open_trusted``); see the module docstring."""
    started = time.perf_counter()
    try:
        checkpoints = load_checkpoints(directory, verifiers, origin)
    except ExportError as e:
        return VerifyReport(0, 0, None, e.problem, time.perf_counter() - started)
    path = Path(directory) / ENTRIES
    if not checkpoints:
        problem = Problem(None, f"{CHECKPOINTS}: no signed checkpoint: nothing can be proven")
        return VerifyReport(0, 0, None, problem, time.perf_counter() - started)
    mixed = _origin_problem(checkpoints, trusted)
    if mixed is not None:
        return VerifyReport(0, len(checkpoints), None, mixed, time.perf_counter() - started)
    if not path.is_file():
        return _Run(checkpoints, trusted, progress, started).report(
            Problem(None, f"{ENTRIES}: no such file")
        )
    if workers > 1:
        run = _Run(checkpoints, trusted, progress, started)
        outcome = _run_parallel(run, path, workers)
        if not isinstance(outcome, _Fallback):
            return run.report(outcome if outcome is not None else _links_of(path, run.signed))
    run = _Run(checkpoints, trusted, progress, started, _file_lines(path))
    with path.open("rb") as f:
        return run.report(run.feed_blocks(fast.read_blocks(f)))


def verify_leaves(
    leaves: Iterable[bytes],
    checkpoints: Sequence[Checkpoint],
    *,
    trusted: Sequence[Checkpoint] = (),
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify leaf bytes (entries 0, 1, ...) against already opened checkpoints (checks 2-4)."""
    started = time.perf_counter()
    if not checkpoints:
        return VerifyReport(0, 0, None, Problem(None, "no signed checkpoint"), 0.0)
    held = list(leaves)
    broken = next((i for i, leaf in enumerate(held) if b"\n" in leaf), len(held))
    run = _Run(sorted(checkpoints, key=lambda c: c.size), trusted, progress, started,
               lambda start: iter(held[start:]))  # fmt: skip
    problem = run.feed_blocks(
        b"".join(leaf + b"\n" for leaf in batch) for batch in _batches(held[:broken])
    )
    if problem is None and broken < len(held):
        # A leaf is one line of an export: one holding a line break would pass for two.
        problem = Problem(run.p, f"entry {run.p}: malformed: holds a line break")
    return run.report(problem)


def _links_of(path: Path, signed: int) -> Problem | None:
    """The back-link check over a file the parallel pass proved (its workers do not see it)."""
    links = BackLinks()
    with path.open("rb") as f:
        for block in fast.read_blocks(f):
            problem = _signed_only(links.feed(block), signed)
            if problem is not None:
                return problem
    return None


def _signed_only(problem: Problem | None, signed: int) -> Problem | None:
    """A back-link problem of an entry a checkpoint covers; one past the newest checkpoint is
    left to the end check, which fails it as not proven at all."""
    if problem is not None and problem.index is not None and problem.index >= signed:
        return None
    return problem


def _origin_problem(
    checkpoints: Sequence[Checkpoint], trusted: Sequence[Checkpoint]
) -> Problem | None:
    origin = checkpoints[0].origin
    for t in trusted:
        if t.origin != origin:
            return Problem(
                None, f"the trusted checkpoint is of log {t.origin!r}, the export of {origin!r}"
            )
    return None


def _file_lines(path: Path) -> Lines:
    def lines(start: int) -> Iterator[bytes]:
        with path.open("rb") as f:
            seen = 0
            for block in fast.read_blocks(f):
                data = bytes(block)
                count = data.count(b"\n") + (not data.endswith(b"\n"))
                if seen + count <= start:
                    seen += count
                    continue
                parts = data.split(b"\n")
                if data.endswith(b"\n"):
                    parts.pop()
                yield from parts[max(0, start - seen) :]
                seen += count

    return lines


class _Fallback:
    """The parallel pass saw something wrong: the sequential pass must name it."""


class _Run:
    """One verification pass: the chain and tree so far, and the signed sizes still ahead."""

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        trusted: Sequence[Checkpoint],
        progress: Progress | None,
        started: float,
        lines: Lines | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        cuts = [Cut(c.size, c.root_hash, f"checkpoint {c.size}") for c in checkpoints]
        cuts += [Cut(c.size, c.root_hash, f"trusted checkpoint {c.size}", True) for c in trusted]
        self.cuts = sorted(cuts, key=lambda c: (c.size, c.trusted))
        self.p = 0
        self.prev_hex = fast.ZERO_HEX
        self.proven = 0  # entries [0, proven) are proven by a signed root
        self._tree = fast.Tree()
        self._joined: CompactRange | None = None  # the parallel pass joins subtree roots
        self._next = 0  # index in ``cuts`` of the next one to compare
        self._lines = lines
        self._links = BackLinks()
        self._progress = progress
        self._total = self.cuts[-1].size if self.cuts else 0
        self._started = started
        self._tick = time.monotonic() + 1.0

    @property
    def signed(self) -> int:
        """The largest signed size: entries past it are not proven."""
        return self._total

    def report(self, problem: Problem | None) -> VerifyReport:
        if problem is None:
            problem = self._check_cuts() or self._end_problem()
        if self._progress is not None:
            self._progress(self.p, self._total)
        latest = self.checkpoints[-1] if self.checkpoints else None
        elapsed = time.perf_counter() - self._started
        return VerifyReport(self.p, len(self.checkpoints), latest, problem, elapsed)

    def feed_blocks(self, blocks: Iterable[bytes | memoryview]) -> Problem | None:
        """Check and add blocks of whole lines; return the first problem, if any."""
        programs = fast.record_programs()
        for block in blocks:
            off_schema = fast.check_records(block, programs)
            checked = block if off_schema < 0 else block[:off_schema]
            out: list[bytes] = []
            p, prev_hex, bad = fast.hash_lines(checked, self.p, self.prev_hex, out)
            problem = self.add_hashes(out) or _signed_only(
                self._links.feed(checked if bad < 0 else checked[:bad]), self.signed
            )
            if problem is not None:
                return problem
            self.prev_hex = prev_hex
            if bad >= 0 or off_schema >= 0:
                return self._blame_line(p, prev_hex)
            if block and block[-1] != ord("\n"):
                return Problem(p - 1, f"entry {p - 1}: truncated: the file ends without a newline")
            self.report_progress()
        return None

    def add_hashes(self, hashes: list[bytes]) -> Problem | None:
        """Add leaf hashes that passed the line checks, comparing every signed size on the way."""
        tree, done, n = self._tree, 0, len(hashes)
        while self._next_size() - self.p <= n - done:
            take = self._next_size() - self.p
            tree.extend(hashes[done : done + take])
            done += take
            self.p += take
            problem = self._check_cuts()
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
        problem = self._check_cuts()  # one at the size the range starts at: size 0
        if problem is not None:
            return problem
        for level, root in subtrees:
            joined.push_subtree(level, root)
            self.p += 1 << level
            if self._next_size() == self.p:
                problem = self._check_cuts()
                if problem is not None:
                    return problem
        return None

    def _next_size(self) -> int:
        cuts, i = self.cuts, self._next
        return cuts[i].size if i < len(cuts) else _NO_CHECKPOINT

    def _check_cuts(self) -> Problem | None:
        """Compare the signed sizes equal to the current size with the tree's root."""
        cuts, matched = self.cuts, False
        while self._next < len(cuts) and cuts[self._next].size == self.p:
            size, cut = self.p, cuts[self._next]
            tree = self._joined if self._joined is not None else self._tree
            root = tree.root() if size else EMPTY_ROOT
            if root != cut.root:
                if size == 0:
                    return Problem(None, f"{cut.label} does not hold the root of the empty tree")
                return blame_root(self._lines, self.proven, cut, root, matched)
            matched = True
            self.proven = size
            self._next += 1
        return None

    def _blame_line(self, p: int, prev_hex: bytes) -> Problem:
        ahead = self.cuts[self._next] if self._next < len(self.cuts) else None
        if self._lines is None:  # the parallel pass: the sequential one names it
            return Problem(p, f"entry {p}: bad")
        return blame_line(self._lines, p, prev_hex, self.proven, ahead)

    def _end_problem(self) -> Problem | None:
        """What the whole file must satisfy: no rollback, no missing and no unsigned entry."""
        ahead = [c for c in self.cuts[self._next :] if c.size > self.p]
        rolled = [c for c in ahead if c.trusted]
        if rolled:
            size = rolled[-1].size
            return Problem(
                self.p,
                f"entries {self.p}..{size - 1} are missing, but the trusted checkpoint {size} "
                f"holds them: the log was rolled back or the export cut short",
                size - 1,
            )
        if ahead:
            size = ahead[-1].size
            return Problem(
                self.p, f"entries {self.p}..{size - 1} are missing ({ahead[-1].label})", size - 1
            )
        if self.p == 0:
            return Problem(None, f"{ENTRIES}: holds no entries: there is nothing to verify")
        newest = self.checkpoints[-1].size if self.checkpoints else 0
        if self.p > newest:
            what = (
                f"entry {newest} is"
                if self.p - 1 == newest
                else (f"entries {newest}..{self.p - 1} are")
            )
            return Problem(
                newest,
                f"{what} not covered by a signed checkpoint: appended after the newest one "
                f"({newest}), not proven",
                self.p - 1,
            )
        return None

    def report_progress(self) -> None:
        if self._progress is not None and time.monotonic() >= self._tick:
            self._progress(self.p, self._total)
            self._tick = time.monotonic() + 1.0


def _run_parallel(run: _Run, path: Path, workers: int) -> Problem | _Fallback | None:
    """Check and hash byte ranges in worker processes, feeding ``run`` in order."""
    size = path.stat().st_size
    tasks = (
        (str(path), start, min(start + RANGE_SIZE, size)) for start in range(0, size, RANGE_SIZE)
    )
    # spawn, not fork: the caller may be a threaded process (a gateway, a test runner).
    cuts = sorted({c.size for c in run.cuts})
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
    return None  # what the whole file must satisfy, ``_Run.report`` checks


def _batches(leaves: Iterable[bytes], size: int = 4096) -> Iterator[list[bytes]]:
    it = iter(leaves)
    while batch := list(islice(it, size)):
        yield batch


def load_key_files(paths: Sequence[Path]) -> VerifierSet:
    """Every vkey line of every file (a published key set, ``--key``); a file that cannot be
    read, holds no key or a line that is not one is a ``SetupError`` naming it."""
    verifiers = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise SetupError(f"{path}: cannot read the key file ({e.strerror})") from None
        except UnicodeDecodeError:
            raise SetupError(f"{path}: not a verifier key file (one vkey per line)") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise SetupError(f"{path}: holds no verifier key (one vkey per line)")
        for number, line in enumerate(lines, 1):
            try:
                verifiers.append(Verifier.parse(line))
            except (NoteError, ValueError) as e:
                raise SetupError(f"{path}: line {number} is not a verifier key ({e})") from None
    try:
        return VerifierSet(verifiers)
    except (NoteError, ValueError) as e:
        raise SetupError(f"{', '.join(map(str, paths))}: {e}") from None
