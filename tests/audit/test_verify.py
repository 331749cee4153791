"""The offline verifier on export directories built by hand (``gateway.audit.verify``).

Each export is written in ``tmp_path`` as ``docs/audit-format.md`` lays it out: leaves chained
with ``leaf_bytes`` in ``entries.jsonl`` and checkpoints signed at chosen sizes. Every verdict
on an export is checked in the sequential mode and in the parallel mode, with many small byte
ranges and with one range (the cases that once fooled the parallel mode are among them: a
checkpoint at size 0, a short file with damage after its last checkpoint).
Every test runs twice: with the C extension's loops and with the Python ones (``loops`` in
``conftest.py``). Tampering with a gateway's database, end to end through the CLI, is in
``tests/integration/test_audit_tamper.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.audit import _verify_fast as fast
from gateway.audit import verify
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.compact import CompactRange
from gateway.audit.note import VerifierSet
from gateway.audit.proof import ProofError, root_of
from gateway.audit.record import RECORD_VERSION, ZERO_HASH, leaf_bytes
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.audit.verify import (
    VerifyReport,
    load_checkpoints,
    open_trusted,
    verify_export,
    verify_leaves,
    verify_receipt,
)
from tests.audit.test_record import BASE

pytestmark = pytest.mark.usefixtures("loops")  # every test with the C loops and the Python ones

ORIGIN = "onecard.example/audit"
SMALL_RANGE = 300
"""Bytes per parallel task in these tests: two or three entries."""
SMALL_BLOCK = 256
"""Bytes per read of the sequential pass in these tests: one or two entries."""


# --- building exports -----------------------------------------------------------------------


RECORD = dataclasses.replace(BASE, request_id="req-0")


def chain(n: int) -> list[bytes]:
    """``n`` leaves chained as the log writes them, with records of varied lengths."""
    leaves: list[bytes] = []
    prev = ZERO_HASH
    for i in range(n):
        record = dataclasses.replace(RECORD, request_id=f"req-{i}", reason="x" * (i % 5 * 20))
        leaves.append(leaf_bytes(i, prev, record.body(), None))
        prev = hash_leaf(leaves[-1])
    return leaves


def lines_bytes(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


@dataclass
class Export:
    """An export directory and the leaves it was written from, with helpers to damage it."""

    path: Path
    leaves: list[bytes]
    signer: Ed25519FileSigner

    @property
    def entries(self) -> Path:
        return self.path / "entries.jsonl"

    def root(self, size: int) -> bytes:
        return root_of([hash_leaf(leaf) for leaf in self.leaves[:size]])

    def note(self, size: int) -> Path:
        return self.path / "checkpoints" / f"{size:012d}.note"

    def sign(
        self,
        size: int,
        *,
        root: bytes | None = None,
        origin: str = ORIGIN,
        signer: Ed25519FileSigner | None = None,
    ) -> None:
        """Write the checkpoint of ``size`` (by default, of the true root)."""
        checkpoint = Checkpoint(origin, size, self.root(size) if root is None else root)
        self.note(size).write_bytes(sign_checkpoint(checkpoint, signer or self.signer))

    def lines(self) -> list[bytes]:
        return self.entries.read_bytes().split(b"\n")[:-1]

    def write_lines(self, lines: list[bytes]) -> None:
        self.entries.write_bytes(lines_bytes(lines))


def make_export(path: Path, signer: Ed25519FileSigner, n: int, sizes: tuple[int, ...]) -> Export:
    """An untouched export of ``n`` entries with checkpoints at ``sizes``."""
    export = Export(path, chain(n), signer)
    (path / "checkpoints").mkdir(parents=True)
    export.write_lines(export.leaves)
    for size in sizes:
        export.sign(size)
    return export


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Ed25519FileSigner:
    return Ed25519FileSigner.generate(tmp_path_factory.mktemp("keys") / "log.key", ORIGIN)


@pytest.fixture(scope="module")
def verifiers(signer: Ed25519FileSigner) -> VerifierSet:
    return VerifierSet.parse([signer.verifier_key()])


@pytest.fixture
def export(tmp_path: Path, signer: Ed25519FileSigner) -> Export:
    """12 entries, checkpoints at 3, 7, 10 and 12."""
    return make_export(tmp_path / "export", signer, 12, (3, 7, 10, 12))


class Mode(NamedTuple):
    name: str
    workers: int


@pytest.fixture(
    params=[Mode("sequential", 1), Mode("parallel", 2), Mode("parallel-one-range", 2)],
    ids=lambda mode: mode.name,
)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Mode:
    """Each mode of ``verify_export``. Read blocks and parallel ranges are so small that an
    export of a dozen entries spans many of them, except in "parallel-one-range" (the default
    range size), where one task sees the whole file and no range boundary checks its chain."""
    monkeypatch.setattr(
        fast, "read_blocks", functools.partial(fast.read_blocks, block_size=SMALL_BLOCK)
    )
    mode: Mode = request.param
    if mode.name != "parallel-one-range":
        monkeypatch.setattr(verify, "RANGE_SIZE", SMALL_RANGE)
    return mode


def without_time(report: VerifyReport) -> VerifyReport:
    return dataclasses.replace(report, elapsed_s=0.0)


# --- a good export --------------------------------------------------------------------------

GOOD = [
    pytest.param(1, (1,), id="1"),
    pytest.param(3, (1, 2, 3), id="3"),
    pytest.param(5, (0, 5), id="5"),
    pytest.param(13, (4, 8, 13), id="13"),
    pytest.param(37, (1, 16, 20, 31, 37), id="37"),
    pytest.param(100, (64, 99, 100), id="100"),
]


@pytest.mark.parametrize(("n", "sizes"), GOOD)
def test_a_good_export_verifies(
    tmp_path: Path,
    signer: Ed25519FileSigner,
    verifiers: VerifierSet,
    mode: Mode,
    n: int,
    sizes: tuple[int, ...],
) -> None:
    make_export(tmp_path, signer, n, sizes)
    report = verify_export(tmp_path, verifiers, workers=mode.workers)
    assert report.problem is None
    assert report.ok
    assert report.entries == n
    assert report.checkpoints == len(sizes)
    assert report.latest is not None
    assert report.latest.size == sizes[-1]


@pytest.mark.parametrize(("n", "sizes"), GOOD)
def test_parallel_and_sequential_reports_agree(
    tmp_path: Path,
    signer: Ed25519FileSigner,
    verifiers: VerifierSet,
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    sizes: tuple[int, ...],
) -> None:
    make_export(tmp_path, signer, n, sizes)
    sequential = verify_export(tmp_path, verifiers, workers=1)
    monkeypatch.setattr(verify, "RANGE_SIZE", SMALL_RANGE)
    parallel = verify_export(tmp_path, verifiers, workers=2)
    assert without_time(parallel) == without_time(sequential)


def test_the_parallel_mode_does_not_fall_back_on_a_good_export(
    tmp_path: Path,
    signer: Ed25519FileSigner,
    verifiers: VerifierSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export = make_export(tmp_path, signer, 37, (1, 16, 20, 31, 37))
    assert export.entries.stat().st_size > 10 * SMALL_RANGE
    monkeypatch.setattr(verify, "RANGE_SIZE", SMALL_RANGE)

    def no_sequential_pass(*args: object) -> None:
        raise AssertionError("the parallel mode fell back to the sequential pass")

    monkeypatch.setattr(verify._Run, "feed_blocks", no_sequential_pass)
    assert verify_export(tmp_path, verifiers, workers=2).ok


def test_an_expected_origin_is_accepted(
    tmp_path: Path, signer: Ed25519FileSigner, verifiers: VerifierSet
) -> None:
    make_export(tmp_path, signer, 5, (2, 5))
    assert verify_export(tmp_path, verifiers, origin=ORIGIN).ok


def test_checkpoints_of_another_origin_than_the_expected_one_are_refused(
    tmp_path: Path, signer: Ed25519FileSigner, verifiers: VerifierSet
) -> None:
    make_export(tmp_path, signer, 5, (2, 5))
    report = verify_export(tmp_path, verifiers, origin="other.example/audit")
    assert report.problem is not None
    assert report.problem.index is None
    assert "000000000002.note" in report.problem.message
    assert "'other.example/audit'" in report.problem.message


# --- damage ---------------------------------------------------------------------------------

Damage = Callable[[Export], None]


def rewrite(change: Callable[[list[bytes]], list[bytes]]) -> Damage:
    """Damage that rewrites ``entries.jsonl`` line by line (each still ending in a newline)."""

    def damage(export: Export) -> None:
        export.write_lines(change(export.lines()))

    return damage


def edited(i: int) -> Damage:
    """Change the record of entry ``i``, leaving its prefix alone."""

    def change(lines: list[bytes]) -> list[bytes]:
        return [*lines[:i], lines[i].replace(b'"req-', b'"REQ-'), *lines[i + 1 :]]

    return rewrite(change)


def replaced(i: int, line: bytes) -> Damage:
    return rewrite(lambda lines: [*lines[:i], line, *lines[i + 1 :]])


def cut_in_prefix_of_8(export: Export) -> None:
    """The file ends in the middle of the prefix of entry 8."""
    export.entries.write_bytes(lines_bytes(export.leaves[:8]) + export.leaves[8][:40])


def cut_in_record_of_8(export: Export) -> None:
    """The file ends one byte before the end of entry 8: the line still ends in a brace
    (the record's own), so only the missing newline shows that it was cut."""
    export.entries.write_bytes(lines_bytes(export.leaves[:8]) + export.leaves[8][:-1])


def no_final_newline(export: Export) -> None:
    export.entries.write_bytes(lines_bytes(export.leaves)[:-1])


def no_entries_file(export: Export) -> None:
    export.entries.unlink()


def wrong_root_at_7(export: Export) -> None:
    export.sign(7, root=export.root(6))


def wrong_empty_root(export: Export) -> None:
    export.sign(0, root=hash_leaf(b""))


def signed_by_an_unknown_key(export: Export) -> None:
    intruder = Ed25519FileSigner.generate(export.path.parent / "intruder.key", ORIGIN)
    export.sign(7, signer=intruder)


def another_origin(export: Export) -> None:
    export.sign(7, origin="other.example/audit")


def named_after_another_size(export: Export) -> None:
    export.note(7).rename(export.note(8))


def named_without_12_digits(export: Export) -> None:
    export.note(7).rename(export.note(7).with_name("7.note"))


def checkpoint_0_and_edited_4(export: Export) -> None:
    """Entry 4 changed, in an export that also holds the (true) checkpoint of size 0."""
    export.sign(0)
    edited(4)(export)


def swapped_in_a_short_file(export: Export) -> None:
    """Entries 7 and 8 swapped in a file cut after entry 8, short of checkpoint 10."""
    lines = export.lines()
    export.write_lines([*lines[:7], lines[8], lines[7]])


def changed_after_signing(export: Export) -> None:
    note = export.note(7)
    true_root = base64.b64encode(export.root(7))
    note.write_bytes(note.read_bytes().replace(true_root, base64.b64encode(export.root(6))))


def prev_digit_of(i: int) -> Damage:
    """One hex digit of entry ``i``'s ``prev`` changed: entry ``i - 1`` is intact."""

    def change(lines: list[bytes]) -> list[bytes]:
        at = lines[i].index(b'"prev":"') + 8
        digit = b"1" if lines[i][at : at + 1] == b"0" else b"0"
        return [*lines[:i], lines[i][:at] + digit + lines[i][at + 1 :], *lines[i + 1 :]]

    return rewrite(change)


def rechained(i: int) -> Damage:
    """Entry ``i`` changed and every later ``prev`` rewritten to match: the chain holds."""

    def damage(export: Export) -> None:
        lines = export.lines()
        lines[i] = lines[i].replace(b'"req-', b'"REQ-')
        for k in range(i + 1, len(lines)):
            prev = hash_leaf(lines[k - 1]).hex().encode()
            head, _, rest = lines[k].partition(b'"prev":"')
            lines[k] = head + b'"prev":"' + prev + rest[64:]
        export.write_lines(lines)

    return damage


def forged_after(i: int) -> Damage:
    """A forged entry inserted after entry ``i``, chained to it, with the index ``i + 1``."""

    def change(lines: list[bytes]) -> list[bytes]:
        forged = leaf_bytes(i + 1, hash_leaf(lines[i]), RECORD.body(), None)
        return [*lines[: i + 1], forged, *lines[i + 1 :]]

    return rewrite(change)


def appended(chained: bool) -> Damage:
    """One more entry after the last, chained to it or not."""

    def change(lines: list[bytes]) -> list[bytes]:
        prev = hash_leaf(lines[-1]) if chained else bytes(32)
        return [*lines, leaf_bytes(len(lines), prev, RECORD.body(), None)]

    return rewrite(change)


def latency_as_text(i: int) -> Damage:
    def change(lines: list[bytes]) -> list[bytes]:
        line = lines[i].replace(b'"latency_us":523', b'"latency_us":"523"')
        return [*lines[:i], line, *lines[i + 1 :]]

    return rewrite(change)


def removed_checkpoints(*sizes: int) -> Damage:
    def damage(export: Export) -> None:
        for size in sizes:
            export.note(size).unlink()

    return damage


def emptied(export: Export) -> None:
    export.entries.write_bytes(b"")
    for note in export.path.glob("checkpoints/*.note"):
        note.unlink()
    export.sign(0)


def signed_by_a_key_of_another_name(export: Export) -> None:
    other = Ed25519FileSigner.generate(export.path.parent / "other.key", "other.example/audit")
    export.sign(7, signer=other)


# (damage, first bad entry, last of the range or None, part of the message); the export has 12
# entries, signed at 3, 7, 10 and 12.
LINE_DAMAGE = [
    pytest.param(edited(0), 0, None, "entry 0 was changed", id="edited-0"),
    pytest.param(edited(4), 4, None, "entry 4 was changed", id="edited-4"),
    pytest.param(edited(6), 6, None, "entry 6 was changed", id="edited-last-of-7"),
    pytest.param(edited(10), 10, None, "entry 10 was changed", id="edited-10"),
    pytest.param(prev_digit_of(5), 5, None, "its prev field was altered", id="prev-of-5"),
    pytest.param(prev_digit_of(7), 7, None, "signed checkpoint of size 7", id="prev-of-7"),
    pytest.param(rewrite(lambda ls: [*ls[:5], *ls[6:]]), 5, 5, "entry 5 is missing", id="deleted"),
    pytest.param(
        rewrite(lambda ls: ls[1:]), 0, 0, "entry 0 is missing: the first line holds entry 1", id="0"
    ),
    pytest.param(
        rewrite(lambda ls: [*ls[:4], *ls[7:]]), 4, 6, "entries 4..6 are missing", id="deleted-3"
    ),
    pytest.param(
        rewrite(lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]]),
        2,
        3,
        "entries 2 and 3 were swapped",
        id="swapped",
    ),
    pytest.param(
        rewrite(lambda ls: [*ls[:2], ls[5], *ls[3:5], ls[2], *ls[6:]]),
        2,
        None,
        "entry 2 was moved: line 5 holds it",
        id="moved",
    ),
    pytest.param(
        rewrite(lambda ls: [*ls[:8], ls[7], *ls[8:]]),
        8,
        None,
        "a copy of entry 7 was inserted",
        id="copy-inserted",
    ),
    pytest.param(forged_after(8), 9, 9, "entry 9 was inserted", id="forged-inserted"),
    pytest.param(
        rewrite(lambda ls: ls[:8]), 8, 11, "entries 8..11 are missing (checkpoint 12)", id="cut"
    ),
    pytest.param(replaced(5, b"not json"), 5, None, "entry 5: malformed", id="not-json"),
    pytest.param(replaced(5, b""), 5, None, "entry 5: malformed", id="blank-line"),
    pytest.param(
        rewrite(lambda ls: [*ls[:5], ls[5].replace(b'"i":5,', b'"i": 5,'), *ls[6:]]),
        5,
        None,
        "entry 5: malformed",
        id="broken-prefix",
    ),
    pytest.param(
        rewrite(lambda ls: [ls[0].replace(b'"prev":"0', b'"prev":"1'), *ls[1:]]),
        0,
        None,
        "entry 0: malformed: its prev is not 64 zeros",
        id="entry-0-prev",
    ),
    pytest.param(
        rewrite(lambda ls: [line + b"\r" for line in ls]),
        0,
        None,
        "entry 0: malformed: its record is not one of the leaf format",
        id="crlf",
    ),
    pytest.param(latency_as_text(4), 4, None, "entry 4: malformed: its record", id="schema"),
    pytest.param(
        cut_in_prefix_of_8, 8, None, "entry 8: malformed: does not start", id="cut-in-prefix"
    ),
    pytest.param(cut_in_record_of_8, 8, None, "entry 8: malformed", id="cut-in-record"),
    pytest.param(
        checkpoint_0_and_edited_4, 4, None, "entry 4 was changed", id="edited-4-with-checkpoint-0"
    ),
    pytest.param(
        swapped_in_a_short_file, 7, 8, "entries 7 and 8 were swapped", id="swapped-in-short-file"
    ),
    pytest.param(
        appended(chained=True),
        12,
        12,
        "entry 12 is not covered by a signed checkpoint",
        id="appended-chained",
    ),
    pytest.param(
        appended(chained=False),
        12,
        None,
        "entry 12 was changed: its prev is not the leaf hash of entry 11",
        id="appended-unchained",
    ),
    pytest.param(rechained(4), 3, 6, "entries 3..6 are chained but do not give", id="rechained"),
    pytest.param(
        removed_checkpoints(12),
        10,
        11,
        "entries 10..11 are not covered by a signed checkpoint",
        id="newest-checkpoint-removed",
    ),
]
ROOT_DAMAGE = [
    pytest.param(wrong_root_at_7, 3, 6, "do not give the root of checkpoint 7", id="wrong-root"),
    pytest.param(
        wrong_empty_root, None, None, "checkpoint 0 does not hold the root", id="wrong-empty-root"
    ),
]
OTHER_DAMAGE = [
    pytest.param(
        no_final_newline,
        11,
        None,
        "entry 11: truncated: the file ends without a newline",
        id="no-final-newline",
    ),
    pytest.param(no_entries_file, None, None, "entries.jsonl: no such file", id="no-entries"),
    pytest.param(
        removed_checkpoints(3, 7, 10, 12),
        None,
        None,
        "checkpoints: no signed checkpoint",
        id="checkpoints-removed",
    ),
    pytest.param(emptied, None, None, "entries.jsonl: holds no entries", id="empty"),
    pytest.param(
        signed_by_an_unknown_key,
        None,
        None,
        "checkpoints/000000000007.note: signed by an unknown key",
        id="unknown-key",
    ),
    pytest.param(
        signed_by_a_key_of_another_name,
        None,
        None,
        "checkpoints/000000000007.note: signed by an unknown key",
        id="key-of-another-name",
    ),
    pytest.param(
        another_origin,
        None,
        None,
        "checkpoints/000000000007.note: checkpoint origin 'other.example/audit' is not the "
        "expected 'onecard.example/audit' of checkpoints/000000000003.note",
        id="another-origin",
    ),
    pytest.param(
        named_after_another_size,
        None,
        None,
        "checkpoints/000000000008.note: holds the checkpoint of tree size 7",
        id="misnamed",
    ),
    pytest.param(
        named_without_12_digits,
        None,
        None,
        "checkpoints/7.note: file name is not the 12-digit tree size",
        id="short-name",
    ),
    pytest.param(
        changed_after_signing,
        None,
        None,
        "checkpoints/000000000007.note: invalid signature",
        id="changed-after-signing",
    ),
]


@pytest.mark.parametrize(
    ("damage", "index", "last", "message"), LINE_DAMAGE + ROOT_DAMAGE + OTHER_DAMAGE
)
def test_damage_is_named_at_the_first_bad_entry(
    export: Export,
    verifiers: VerifierSet,
    mode: Mode,
    damage: Damage,
    index: int | None,
    last: int | None,
    message: str,
) -> None:
    damage(export)
    report = verify_export(export.path, verifiers, workers=mode.workers)
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.index, report.problem.last) == (index, last)
    assert message in report.problem.message


@pytest.mark.parametrize(("damage", "index", "last", "message"), LINE_DAMAGE + ROOT_DAMAGE)
def test_verify_leaves_gives_the_verdict_of_verify_export(
    export: Export,
    verifiers: VerifierSet,
    damage: Damage,
    index: int | None,
    last: int | None,
    message: str,
) -> None:
    damage(export)
    leaves = export.entries.read_bytes().split(b"\n")
    if not leaves[-1]:
        leaves.pop()
    checkpoints = load_checkpoints(export.path, verifiers)
    from_memory = verify_leaves(leaves, checkpoints)
    from_file = verify_export(export.path, verifiers)
    assert from_memory.problem is not None
    assert from_memory.problem.index == index
    assert from_memory.problem == from_file.problem
    assert from_memory.entries == from_file.entries


def test_verify_leaves_accepts_good_leaves(export: Export, verifiers: VerifierSet) -> None:
    report = verify_leaves(export.leaves, load_checkpoints(export.path, verifiers))
    assert without_time(report) == without_time(verify_export(export.path, verifiers))
    assert report.ok


@pytest.mark.parametrize("at", [0, 3, 10])
def test_verify_leaves_refuses_a_leaf_holding_a_line_break(
    export: Export, verifiers: VerifierSet, at: int
) -> None:
    """Two entries joined by a line break must not pass for one (or the other way round)."""
    leaves = list(export.leaves)
    leaves[at : at + 2] = [leaves[at] + b"\n" + leaves[at + 1]]
    report = verify_leaves(leaves, load_checkpoints(export.path, verifiers))
    assert report.problem == verify.Problem(at, f"entry {at}: malformed: holds a line break")
    assert report.entries == at


def test_tree_roots_match_across_chunks_of_the_tree() -> None:
    """The verifier's tree gives the root of ``root_of`` at sizes around its chunk size."""
    n = 3 * fast.CHUNK + 5
    leaves = chain(n)
    hashes = [hash_leaf(leaf) for leaf in leaves]
    sizes = [*range(1, 40), fast.CHUNK - 1, fast.CHUNK, fast.CHUNK + 1, 2 * fast.CHUNK + 3, n]
    checkpoints = [Checkpoint(ORIGIN, size, root_of(hashes[:size])) for size in sizes]
    report = verify_leaves(leaves, checkpoints)
    assert report.ok
    assert report.entries == n


# --- the parallel worker and the line reader ------------------------------------------------


@pytest.fixture
def cuts(monkeypatch: pytest.MonkeyPatch) -> Callable[[tuple[int, ...]], None]:
    """``set_cuts`` in this process, as a pool initializer does in a worker; undone after."""
    monkeypatch.setattr(fast, "_cuts", ())
    return fast.set_cuts


@pytest.mark.parametrize("sizes", [(), (7,), (7, 13), (0, 1, 2, 3, 20)])
@pytest.mark.parametrize("range_size", [1, 50, 137, SMALL_RANGE, 1 << 20])
def test_scan_range_results_join_into_the_tree(
    tmp_path: Path,
    cuts: Callable[[tuple[int, ...]], None],
    range_size: int,
    sizes: tuple[int, ...],
) -> None:
    """Consecutive ranges continue each other; their subtrees stop at every checkpoint size."""
    cuts(sizes)
    leaves = chain(20)
    hashes = [hash_leaf(leaf) for leaf in leaves]
    path = tmp_path / "entries.jsonl"
    path.write_bytes(lines_bytes(leaves))
    size = path.stat().st_size
    results = [
        fast.scan_range(str(path), start, min(start + range_size, size))
        for start in range(0, size, range_size)
    ]
    assert all(r.ok for r in results)
    scanned = [r for r in results if r.entries]
    starts = [r.first_index for r in scanned]
    assert starts == [0, *(r.first_index + r.entries for r in scanned[:-1])]
    tree = CompactRange()
    roots = {0: tree.root()}
    for r in scanned:
        for level, root in r.subtrees:
            tree.push_subtree(level, root)
            roots[tree.size] = tree.root()
    assert tree.size == len(leaves)
    for n in (*sizes, len(leaves)):
        assert roots[n] == root_of(hashes[:n])


@pytest.mark.parametrize("sizes", [(), (3,), (10,), (12,)])
def test_scan_range_checks_every_line(
    tmp_path: Path, cuts: Callable[[tuple[int, ...]], None], sizes: tuple[int, ...]
) -> None:
    """Before the latest checkpoint as after it, a line that breaks the chain or the record
    schema fails the range."""
    lines = chain(12)
    path = tmp_path / "entries.jsonl"
    cuts(sizes)
    for bad in (
        b"not an entry",
        lines[5].replace(b'"v":%d}' % RECORD_VERSION, b'"v":"%d"}' % RECORD_VERSION),
        lines[6],
    ):
        path.write_bytes(lines_bytes([*lines[:5], bad, *lines[6:]]))
        assert not fast.scan_range(str(path), 0, path.stat().st_size).ok
    path.write_bytes(lines_bytes(lines))
    assert fast.scan_range(str(path), 0, path.stat().st_size).ok


def test_scan_range_refuses_a_file_without_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "entries.jsonl"
    path.write_bytes(lines_bytes(chain(3))[:-1])
    assert not fast.scan_range(str(path), 0, path.stat().st_size).ok


@pytest.mark.parametrize("block_size", [1, 2, 7, 64, 1 << 20])
@pytest.mark.parametrize("data", [b"", b"a\n", b"ab\n\ncd\nefg\n", b"ab\ncd", b"abc"])
def test_read_blocks_yields_whole_lines(data: bytes, block_size: int) -> None:
    """Blocks join up to the file; each ends with a newline but a last line without one."""
    blocks = [bytes(block) for block in fast.read_blocks(io.BytesIO(data), block_size)]
    assert b"".join(blocks) == data
    assert all(blocks)
    assert all(block.endswith(b"\n") for block in blocks[:-1])
    if blocks and not data.endswith(b"\n"):
        assert b"\n" not in blocks[-1]  # the unterminated line comes alone


# --- receipts -------------------------------------------------------------------------------


def audit_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]), by its definition: from the leaf up."""
    if len(hashes) == 1:
        return []
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    if m < k:
        return [*audit_path(m, hashes[:k]), root_of(hashes[k:])]
    return [*audit_path(m - k, hashes[k:]), root_of(hashes[:k])]


@pytest.fixture
def signed(tmp_path: Path, signer: Ed25519FileSigner, verifiers: VerifierSet) -> Checkpoint:
    """The checkpoint of 13 entries, as a regulator opens it from an export."""
    make_export(tmp_path, signer, 13, (13,))
    return load_checkpoints(tmp_path, verifiers)[-1]


class Receipt(NamedTuple):
    """The arguments of ``verify_receipt``."""

    index: int
    leaf_hash: bytes
    checkpoint: Checkpoint
    proof: list[bytes]


HASHES = [hash_leaf(leaf) for leaf in chain(14)]  # chain(13) is chain(14)[:13]


def checkpoint_of(size: int) -> Checkpoint:
    return Checkpoint(ORIGIN, size, root_of(HASHES[:size]))


def test_receipts_of_every_entry_verify(signed: Checkpoint) -> None:
    for i in range(13):
        verify_receipt(*Receipt(i, HASHES[i], signed, audit_path(i, HASHES[:13])))


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


# A receipt for entry 5 of 13, changed. The tree size only sets the shape of the path: a
# size of the same shape (12, 14) is refused because the root is not that size's.
RECEIPT_MUTATIONS = [
    pytest.param(lambda r: r._replace(index=4), id="previous-index"),
    pytest.param(lambda r: r._replace(index=6), id="next-index"),
    pytest.param(lambda r: r._replace(index=13), id="index-beyond-the-tree"),
    pytest.param(lambda r: r._replace(checkpoint=checkpoint_of(12)), id="checkpoint-12"),
    pytest.param(lambda r: r._replace(checkpoint=checkpoint_of(14)), id="checkpoint-14"),
    pytest.param(
        lambda r: r._replace(checkpoint=dataclasses.replace(r.checkpoint, size=8)),
        id="size-8-with-the-root-of-13",
    ),
    pytest.param(
        lambda r: r._replace(
            checkpoint=dataclasses.replace(r.checkpoint, root_hash=flip(r.checkpoint.root_hash))
        ),
        id="flipped-root",
    ),
    pytest.param(lambda r: r._replace(leaf_hash=flip(r.leaf_hash)), id="flipped-leaf-hash"),
    pytest.param(
        lambda r: r._replace(proof=[flip(r.proof[0]), *r.proof[1:]]), id="flipped-first-proof-hash"
    ),
    pytest.param(
        lambda r: r._replace(proof=[*r.proof[:-1], flip(r.proof[-1])]), id="flipped-last-proof-hash"
    ),
    pytest.param(lambda r: r._replace(proof=r.proof[:-1]), id="short-proof"),
]


@pytest.mark.parametrize("mutate", RECEIPT_MUTATIONS)
def test_a_wrong_receipt_is_refused(
    signed: Checkpoint, mutate: Callable[[Receipt], Receipt]
) -> None:
    receipt = Receipt(5, HASHES[5], signed, audit_path(5, HASHES[:13]))
    with pytest.raises(ProofError):
        verify_receipt(*mutate(receipt))


# --- progress -------------------------------------------------------------------------------


@pytest.mark.parametrize("log_size", [None, 99, 3])
def test_progress_counts_what_was_read_against_the_signed_size(
    export: Export, verifiers: VerifierSet, mode: Mode, log_size: int | None
) -> None:
    """The total is the newest checkpoint's size: log.json (untrusted) does not change it."""
    if log_size is not None:
        (export.path / "log.json").write_text(json.dumps({"origin": ORIGIN, "size": log_size}))
    calls: list[tuple[int, int]] = []
    report = verify_export(
        export.path, verifiers, workers=mode.workers, progress=lambda *c: calls.append(c)
    )
    assert report.ok
    assert calls[-1] == (12, 12)


def test_progress_counts_an_appended_entry_as_read(export: Export, verifiers: VerifierSet) -> None:
    appended(chained=True)(export)
    calls: list[tuple[int, int]] = []
    report = verify_export(export.path, verifiers, progress=lambda *c: calls.append(c))
    assert not report.ok
    assert calls[-1] == (13, 12)


def test_verify_leaves_reports_progress_against_the_signed_size(
    export: Export, verifiers: VerifierSet
) -> None:
    calls: list[tuple[int, int]] = []
    checkpoints = load_checkpoints(export.path, verifiers)
    verify_leaves(export.leaves, checkpoints, progress=lambda *c: calls.append(c))
    assert calls[-1] == (12, 12)


# --- trusted checkpoints: rollback and fork --------------------------------------------------


def trusted_note(export: Export, size: int, leaves: list[bytes] | None = None) -> Path:
    """A checkpoint the regulator kept, of ``size`` entries of ``leaves`` (the export's)."""
    hashes = [hash_leaf(leaf) for leaf in (leaves or export.leaves)[:size]]
    path = export.path.parent / f"kept-{size}.note"
    path.write_bytes(sign_checkpoint(Checkpoint(ORIGIN, size, root_of(hashes)), export.signer))
    return path


def test_a_trusted_checkpoint_the_export_extends_verifies(
    export: Export, verifiers: VerifierSet, mode: Mode
) -> None:
    trusted = [open_trusted(trusted_note(export, n), verifiers) for n in (5, 12)]
    assert verify_export(export.path, verifiers, trusted=trusted, workers=mode.workers).ok


def test_a_rollback_below_a_trusted_checkpoint_is_named(
    export: Export, verifiers: VerifierSet, mode: Mode
) -> None:
    trusted = open_trusted(trusted_note(export, 12), verifiers)
    export.write_lines(export.leaves[:10])
    export.note(12).unlink()
    assert verify_export(export.path, verifiers, workers=mode.workers).ok  # alone, it passes
    report = verify_export(export.path, verifiers, trusted=[trusted], workers=mode.workers)
    assert report.problem is not None
    assert (report.problem.index, report.problem.last) == (10, 11)
    assert "the trusted checkpoint 12 holds them: the log was rolled back" in str(report.problem)


def test_a_fork_of_a_trusted_checkpoint_is_refused(
    export: Export, verifiers: VerifierSet, mode: Mode
) -> None:
    other = chain(12)
    other[5] = leaf_bytes(5, hash_leaf(other[4]), dataclasses.replace(RECORD, org="x").body(), None)
    trusted = open_trusted(trusted_note(export, 7, other), verifiers)
    report = verify_export(export.path, verifiers, trusted=[trusted], workers=mode.workers)
    assert report.problem is not None
    assert "the export's checkpoint 7 and the trusted checkpoint 7 are both signed" in (
        report.problem.message
    )


def test_a_fork_below_the_exports_checkpoints_names_the_range(
    export: Export, verifiers: VerifierSet, mode: Mode
) -> None:
    other = chain(12)
    other[4] = leaf_bytes(4, hash_leaf(other[3]), dataclasses.replace(RECORD, org="x").body(), None)
    trusted = open_trusted(trusted_note(export, 5, other), verifiers)
    report = verify_export(export.path, verifiers, trusted=[trusted], workers=mode.workers)
    assert report.problem is not None
    assert (report.problem.index, report.problem.last) == (3, 4)
    assert "do not give the root of trusted checkpoint 5" in report.problem.message
    assert "rewritten after the trusted checkpoint was signed: a fork" in report.problem.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        (b"not a note", "not a checkpoint of the log: malformed note"),
        (b"x", "malformed note"),
    ],
)
def test_an_unusable_trusted_checkpoint_is_an_export_error(
    tmp_path: Path, verifiers: VerifierSet, content: bytes | None, message: str
) -> None:
    path = tmp_path / "kept.note"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(verify.ExportError, match=message):
        open_trusted(path, verifiers)


def test_a_trusted_checkpoint_by_an_unknown_key_is_refused(
    export: Export, verifiers: VerifierSet, tmp_path: Path
) -> None:
    intruder = Ed25519FileSigner.generate(tmp_path / "intruder.key", ORIGIN)
    path = tmp_path / "kept.note"
    path.write_bytes(sign_checkpoint(Checkpoint(ORIGIN, 3, export.root(3)), intruder))
    with pytest.raises(verify.ExportError, match="no signature from a known key"):
        open_trusted(path, verifiers)


# --- back-links: each entry about a citizen names the one before it ---------------------------

CITIZENS = ("aa" * 32, "bb" * 32, "")  # entry i is about CITIZENS[i % 3]; "": about no one


def citizen_chain(n: int, links: dict[int, int | None] | None = None) -> list[bytes]:
    """``n`` leaves chained and linked as the log writes them; ``links`` overrides the back-link
    of some entries (the chain, the leaf hashes, is rebuilt over the altered leaves)."""
    newest: dict[str, int] = {}
    leaves: list[bytes] = []
    prev = ZERO_HASH
    for i in range(n):
        subject = CITIZENS[i % 3]
        back = newest.get(subject) if subject else None
        if links is not None and i in links:
            back = links[i]
        record = dataclasses.replace(RECORD, request_id=f"req-{i}", subject=subject)
        leaves.append(leaf_bytes(i, prev, record.body(), back))
        prev = hash_leaf(leaves[-1])
        if subject:
            newest[subject] = i
    return leaves


def signed_export(path: Path, signer: Ed25519FileSigner, leaves: list[bytes]) -> Export:
    """An export of ``leaves`` with every checkpoint correctly signed over them."""
    export = Export(path, leaves, signer)
    (path / "checkpoints").mkdir(parents=True)
    export.write_lines(leaves)
    for size in (4, 9, len(leaves)):
        export.sign(size)
    return export


def test_a_log_of_linked_citizens_verifies(
    tmp_path: Path, signer: Ed25519FileSigner, verifiers: VerifierSet, mode: Mode
) -> None:
    export = signed_export(tmp_path / "export", signer, citizen_chain(14))
    report = verify_export(export.path, verifiers, workers=mode.workers)
    assert report.ok, report.problem
    assert report.entries == 14


@pytest.mark.parametrize(
    ("links", "named", "says"),
    [
        # entry 9 (citizen a) skips entry 6: the history from 9 on would hide it
        pytest.param({9: 3}, 9, "it names entry 3 as the previous entry", id="skips-one"),
        pytest.param({9: None}, 9, "it names none (null)", id="cut-short"),
        pytest.param({7: 6}, 7, "names entry 6", id="another-citizen's"),
        pytest.param({5: 2}, 5, "that is none: it is the first", id="no-subject-linked"),
        pytest.param({12: 12}, 12, "it names entry 12", id="itself"),
    ],
)
def test_a_wrong_back_link_fails_naming_the_entry_although_every_checkpoint_is_signed(
    tmp_path: Path,
    signer: Ed25519FileSigner,
    verifiers: VerifierSet,
    mode: Mode,
    links: dict[int, int | None],
    named: int,
    says: str,
) -> None:
    export = signed_export(tmp_path / "export", signer, citizen_chain(14, links))
    for size in (4, 9, 14):  # the checkpoints open and hold the altered leaves' roots
        note = open_trusted(export.note(size), verifiers)
        assert note.root_hash == export.root(size)
    report = verify_export(export.path, verifiers, workers=mode.workers)
    assert report.problem is not None
    assert report.problem.index == named
    assert f"entry {named} has a wrong back-link" in report.problem.message
    assert says in report.problem.message
    assert str(report.problem).startswith(f"first bad entry: {named}: ")


def test_verify_leaves_checks_back_links_too(
    tmp_path: Path, signer: Ed25519FileSigner, verifiers: VerifierSet
) -> None:
    leaves = citizen_chain(14, {10: 1})  # entry 10 (citizen b) skips entry 4 and 7
    export = signed_export(tmp_path / "export", signer, leaves)
    checkpoints = load_checkpoints(export.path, verifiers)
    report = verify_leaves(leaves, checkpoints)
    assert report.problem is not None and report.problem.index == 10
    assert verify_leaves(
        citizen_chain(14),
        load_checkpoints(
            signed_export(tmp_path / "good", signer, citizen_chain(14)).path, verifiers
        ),
    ).ok
