"""The store-neutral sequencer against an in-memory fake of its rows (no database).

What a store must see: consecutive indexes chained from the zero hash, every Merkle node in the
row of the entry that completed it, checkpoints at the configured cadence (and idle ones through
the store's timer), tokens redeemed in the batch, the identity bound on opening, and after a
rolled-back batch a state rebuilt from the rows, checked, or refused.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.compact import CompactRange, NodeID
from gateway.audit.log import Receipt, Redemption, Spend, TokenSpend
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.record import ZERO_HASH, AuditRecord, leaf_bytes
from gateway.audit.rfc6962 import HASH_SIZE, hash_children, hash_leaf
from gateway.audit.selfcheck import LogDamagedError, StoredTip, UnreadableNodeError
from gateway.audit.sequencer import LogIdentityError, Sequencer, SharedHead, node_row
from gateway.audit.signer import Ed25519FileSigner
from tests.gateway.store.test_sqlite_audit import make_record, records, reference_backs

T = TypeVar("T")
ORIGIN = "test.onecard.example/sequencer"
INTERVAL = 10.0


@dataclass
class FakeRows:
    """``LogRows`` in dicts; ``fail_inserts`` makes the next entry insert raise."""

    entries: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # idx -> nodes, leaf
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    redeemed: set[bytes] = field(default_factory=set)
    key_rows: list[tuple[str, str]] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)
    fail_inserts: bool = False
    shared: bool = False  # several sequencers append to these rows (``claim`` says what is there)
    claims: int = 0

    def claim(self) -> SharedHead | None:
        self.claims += 1
        if not self.shared:
            return None
        return SharedHead(self.size(), max(self.checkpoints, default=0))

    def size(self) -> int:
        return max(self.entries, default=-1) + 1

    def tip(self) -> StoredTip:
        if not self.entries:
            return StoredTip(0, 0, None)
        last = max(self.entries)
        return StoredTip(last + 1, min(self.entries), self.entries[last][1])

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        out = []
        for node in ids:
            nodes = self.entries.get(node_row(node), (b"", b""))[0]
            h = nodes[node.level * HASH_SIZE : (node.level + 1) * HASH_SIZE]
            if len(h) != HASH_SIZE:
                raise UnreadableNodeError(node, "is not stored")
            out.append(h)
        return out

    def newest_checkpoint(self) -> tuple[int, bytes] | None:
        if not self.checkpoints:
            return None
        size = max(self.checkpoints)
        return size, self.checkpoints[size]

    def insert_entries(self, start: int, nodes: Sequence[bytes], leaves: Sequence[bytes]) -> None:
        if self.fail_inserts:
            self.fail_inserts = False
            raise OSError("disk says no")
        for i, (n, leaf) in enumerate(zip(nodes, leaves, strict=True), start):
            assert i not in self.entries, f"entry {i} written twice"
            self.entries[i] = (n, leaf)

    def insert_checkpoint(self, size: int, note: bytes, created_at: str) -> None:
        assert size not in self.checkpoints
        self.checkpoints[size] = note

    def redeem(self, spend: Spend) -> str:
        assert isinstance(spend, TokenSpend)
        if spend.token_id in self.redeemed:
            return "token_replayed"
        self.redeemed.add(spend.token_id)
        return ""

    def subject_heads(self, subjects: Sequence[str]) -> dict[str, int]:
        return {s: self.heads[s] for s in subjects if s in self.heads}

    def set_subject_heads(self, heads: Sequence[tuple[str, int]]) -> None:
        self.heads.update(heads)

    def keys(self) -> list[tuple[str, str]]:
        return list(self.key_rows)

    def add_key(self, origin: str, verifier_key: str, from_size: int, added_at: str) -> None:
        self.key_rows.append((origin, verifier_key))


class FakeStore:
    """``RowAccess`` and a writer: each batch is a transaction that commits or rolls back."""

    name = "fake-store"

    def __init__(self, rows: FakeRows | None = None) -> None:
        self.rows = rows if rows is not None else FakeRows()
        self.now = 1000.0
        self.wakes: list[float] = []

    def snapshot(self, read: Callable[[FakeRows], T]) -> T:
        return read(copy.deepcopy(self.rows))

    def transaction(self, write: Callable[[FakeRows], T]) -> T:
        saved = copy.deepcopy(self.rows)
        try:
            return write(self.rows)
        except BaseException:
            self.rows = saved
            raise

    def wake_at(self, deadline: float) -> None:
        self.wakes.append(deadline)

    def open(self, signer: Ed25519FileSigner, interval: float = INTERVAL) -> Sequencer:
        sequencer = Sequencer(signer, self, checkpoint_interval_s=interval, clock=lambda: self.now)
        sequencer.open()
        sequencer.start()
        return sequencer

    def batch(self, sequencer: Sequencer, payloads: list[Any]) -> list[Receipt]:
        """One writer transaction: the receipts, or the error after a rollback."""
        saved = copy.deepcopy(self.rows)
        try:
            receipts = sequencer.run_batch(self.rows, payloads)
            sequencer.finish_batch(self.rows)
        except BaseException:
            self.rows = saved
            self.rows.fail_inserts = False  # the failure happened once
            sequencer.rolled_back()
            raise
        self.durable = sequencer.committed()
        return receipts


def payloads(recs: Sequence[AuditRecord]) -> list[Any]:
    return [(r, r.body(), None) for r in recs]


def subtree_hash(leaf_hashes: list[bytes], node: NodeID) -> bytes:
    """RFC 6962 hash of the perfect subtree ``node``, computed from the leaf hashes alone."""
    level = leaf_hashes[node.index << node.level : (node.index + 1) << node.level]
    while len(level) > 1:
        level = [hash_children(a, b) for a, b in zip(level[::2], level[1::2], strict=True)]
    return level[0]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "log.key"
    Ed25519FileSigner.generate(path, ORIGIN)
    return path


@pytest.fixture
def signer(key_file: Path) -> Ed25519FileSigner:
    return Ed25519FileSigner(key_file, ORIGIN)


def verified_sizes(store: FakeStore, signer: Ed25519FileSigner) -> list[int]:
    verifiers = VerifierSet([Verifier.parse(signer.verifier_key())])
    return [
        open_checkpoint(n, verifiers, ORIGIN).size
        for _, n in sorted(store.rows.checkpoints.items())
    ]


# -- sequencing and node placement -----------------------------------------------------------


def test_batches_get_consecutive_indexes_with_leaves_chained_from_the_zero_hash(
    signer: Ed25519FileSigner, loops: str
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    recs = records(11)
    receipts: list[Receipt] = []
    for start, end in ((0, 1), (1, 4), (4, 9), (9, 11)):  # batches of 1, 3, 5 and 2
        receipts += store.batch(sequencer, payloads(recs[start:end]))
    assert [r.index for r in receipts] == list(range(11))
    prev = ZERO_HASH
    for i, (record, back) in enumerate(zip(recs, reference_backs(recs), strict=True)):
        leaf = leaf_bytes(i, prev, record.body(), back)
        assert store.rows.entries[i][1] == leaf
        prev = hash_leaf(leaf)
        assert receipts[i].leaf_hash == prev
    assert [i for i, _ in store.durable] == [9, 10]


def test_each_entry_row_holds_exactly_the_nodes_it_completes(
    signer: Ed25519FileSigner, loops: str
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads(records(13)))
    store.batch(sequencer, payloads(records(10, first=13)))
    hashes = [hash_leaf(store.rows.entries[i][1]) for i in range(23)]
    for i, (nodes, _) in store.rows.entries.items():
        # entry i completes node (level, k) when i == ((k + 1) << level) - 1
        completed = [
            NodeID(level, (i + 1 >> level) - 1) for level in range(6) if (i + 1) % (1 << level) == 0
        ]
        assert nodes == b"".join(subtree_hash(hashes, node) for node in completed), i


# -- checkpoint cadence ----------------------------------------------------------------------


def test_checkpoints_are_signed_at_the_interval_and_idle_ones_at_the_store_timer(
    signer: Ed25519FileSigner,
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads(records(2)))  # the first batch after a start signs
    store.now += 1
    store.batch(sequencer, payloads(records(3, first=2)))  # within the interval: not signed
    assert verified_sizes(store, signer) == [2]
    assert store.wakes[-1] == 1000.0 + INTERVAL  # the idle checkpoint, an interval after
    store.now = store.wakes[-1]
    store.batch(sequencer, [])  # the store's empty batch at that time
    assert verified_sizes(store, signer) == [2, 5]
    wakes = len(store.wakes)
    store.now += 1
    store.batch(sequencer, [])  # nothing uncovered: no checkpoint, no timer
    assert (verified_sizes(store, signer), len(store.wakes)) == ([2, 5], wakes)


def test_with_no_interval_every_batch_signs(signer: Ed25519FileSigner) -> None:
    store = FakeStore()
    sequencer = store.open(signer, interval=0)
    for at in range(0, 6, 2):
        store.batch(sequencer, payloads(records(2, first=at)))
    assert verified_sizes(store, signer) == [2, 4, 6]


# -- token redemption ------------------------------------------------------------------------


def test_a_redeemed_token_logs_instead_and_says_replayed(signer: Ed25519FileSigner) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    first, second, refused = make_record(1), make_record(2), make_record(3, outcome="REFUSED")
    token = Redemption(TokenSpend(b"t" * 16, 2_000_000_000), refused)
    receipts = store.batch(
        sequencer, [(first, first.body(), token), (second, second.body(), token)]
    )
    assert [r.replayed for r in receipts] == [False, True]
    assert [r.refusal for r in receipts] == ["", "token_replayed"]
    logged = dataclasses.replace(refused, reason="token_replayed")
    assert logged.body()[1:] in store.rows.entries[1][1]  # after its back-link
    assert [record for _, record in store.durable] == [first, logged]
    (again,) = store.batch(sequencer, [(second, second.body(), token)])
    assert again.replayed and store.rows.redeemed == {b"t" * 16}


# -- identity --------------------------------------------------------------------------------


def test_opening_records_the_key_once_and_refuses_another_key_or_origin(
    signer: Ed25519FileSigner, key_file: Path, tmp_path: Path
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads(records(3)))
    assert store.rows.key_rows == [(ORIGIN, signer.verifier_key())]
    assert store.open(signer).size == 3  # a restart: same key, nothing recorded again
    assert len(store.rows.key_rows) == 1
    other_key = Ed25519FileSigner.generate(tmp_path / "other.key", ORIGIN)
    with pytest.raises(LogIdentityError, match="not this log's key"):
        store.open(other_key)
    other_origin = Ed25519FileSigner(key_file, "elsewhere.example/log")
    with pytest.raises(LogIdentityError, match="is not this log's origin"):
        store.open(other_origin)


def test_a_log_with_checkpoints_but_no_recorded_key_refuses_another_origin(
    signer: Ed25519FileSigner, key_file: Path
) -> None:
    store = FakeStore()
    store.batch(store.open(signer), payloads(records(2)))
    store.rows.key_rows.clear()  # as a log from before keys were recorded
    with pytest.raises(LogIdentityError, match="origin of this log's checkpoints"):
        store.open(Ed25519FileSigner(key_file, "elsewhere.example/log"))
    assert store.rows.key_rows == []  # nothing recorded


def test_entries_left_uncovered_by_a_crash_are_signed_within_an_interval(
    signer: Ed25519FileSigner,
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads(records(2)))
    store.now += 1
    store.batch(sequencer, payloads(records(2, first=2)))
    store.wakes.clear()
    store.now = 5000.0
    store.open(signer)  # a restart: 4 entries, checkpoint at 2
    assert store.wakes == [5000.0 + INTERVAL]


# -- recovery after a rolled-back batch ------------------------------------------------------


def test_after_a_rolled_back_batch_the_log_continues_from_the_stored_rows(
    signer: Ed25519FileSigner, loops: str
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads(records(3)))
    store.rows.fail_inserts = True
    with pytest.raises(OSError, match="disk says no"):
        store.batch(sequencer, payloads(records(4, first=3)))
    assert sequencer.size == 3  # memory did not run ahead of the rows
    receipts = store.batch(sequencer, payloads(records(2, first=3)))
    assert [r.index for r in receipts] == [3, 4]
    assert store.rows.entries[3][1].startswith(
        b'{"i":3,"prev":"' + hash_leaf(store.rows.entries[2][1]).hex().encode()
    )
    assert verified_sizes(store, signer) == [3, 5]  # the batch after a rollback signs


def test_a_reload_that_fails_signs_nothing_until_one_passes(signer: Ed25519FileSigner) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads(records(4)))
    stored = store.rows.entries[1]
    store.rows.entries[1] = (b"\x00" * len(stored[0]), stored[1])  # a changed node
    store.rows.fail_inserts = True
    with pytest.raises(OSError):
        store.batch(sequencer, payloads(records(1, first=4)))
    with pytest.raises(LogDamagedError, match=r"audit log damaged at entries \[3, 4\)"):
        store.batch(sequencer, payloads(records(1, first=4)))
    with pytest.raises(LogDamagedError):
        sequencer.checkpoint(store.rows)
    assert (len(store.rows.entries), verified_sizes(store, signer)) == (4, [4])
    store.rows.entries[1] = stored  # the read heals
    (receipt,) = store.batch(sequencer, payloads(records(1, first=4)))
    assert receipt.index == 4


# -- back-links ------------------------------------------------------------------------------


def test_back_links_follow_each_subject_and_older_records_still_count(
    signer: Ed25519FileSigner,
) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    recs = [
        make_record(0, v=2),  # subject-0, from before back-links: none of its own
        make_record(1, subject=""),  # about no one
        make_record(3),  # subject-0 again
    ]
    store.batch(sequencer, payloads(recs))
    store.batch(sequencer, payloads([make_record(6), make_record(4)]))  # subject-0, subject-1
    stored = [json.loads(store.rows.entries[i][1])["r"] for i in range(5)]
    assert "back" not in stored[0]
    assert [r["back"] for r in stored[1:]] == [None, 0, 2, None]
    assert store.rows.heads == {"subject-0": 3, "subject-1": 4}


def test_a_rolled_back_batch_leaves_no_back_link_behind(signer: Ed25519FileSigner) -> None:
    store = FakeStore()
    sequencer = store.open(signer)
    store.batch(sequencer, payloads([make_record(0)]))
    store.rows.fail_inserts = True
    with pytest.raises(OSError, match="disk says no"):
        store.batch(sequencer, payloads([make_record(3)]))  # subject-0 at 1: rolled back
    store.batch(sequencer, payloads([make_record(6)]))  # subject-0 again, now at 1
    assert json.loads(store.rows.entries[1][1])["r"]["back"] == 0
    assert store.rows.heads == {"subject-0": 1}


# -- several processes, one log ---------------------------------------------------------------


def test_sequencers_sharing_rows_take_turns_and_build_one_chained_tree(
    signer: Ed25519FileSigner, loops: str
) -> None:
    store = FakeStore(FakeRows(shared=True))
    one, two = store.open(signer), store.open(signer, interval=0)
    recs = records(20)
    turns = [(one, 0, 3), (two, 3, 4), (two, 4, 9), (one, 9, 10), (two, 10, 17), (one, 17, 20)]
    receipts = [r for seq, a, b in turns for r in store.batch(seq, payloads(recs[a:b]))]
    assert [r.index for r in receipts] == list(range(20))
    prev = ZERO_HASH
    for i, (record, back) in enumerate(zip(recs, reference_backs(recs), strict=True)):
        leaf = leaf_bytes(i, prev, record.body(), back)  # back-links across both sequencers
        assert store.rows.entries[i][1] == leaf
        prev = hash_leaf(leaf)
        assert receipts[i].leaf_hash == prev
    hashes = [hash_leaf(store.rows.entries[i][1]) for i in range(20)]
    verifiers = VerifierSet([Verifier.parse(signer.verifier_key())])
    for size, note in store.rows.checkpoints.items():  # every checkpoint is of the one tree
        root = open_checkpoint(note, verifiers, ORIGIN).root_hash
        tree = CompactRange()
        tree.extend(hashes[:size])
        assert root == tree.root(), size


def test_a_sequencer_does_not_sign_over_what_another_appended_wrongly(
    signer: Ed25519FileSigner,
) -> None:
    store = FakeStore(FakeRows(shared=True))
    one, two = store.open(signer), store.open(signer)
    store.batch(one, payloads(records(4)))
    store.batch(two, payloads(records(3, first=4)))
    nodes, leaf = store.rows.entries[5]
    store.rows.entries[5] = (bytes(HASH_SIZE) + nodes[HASH_SIZE:], leaf)  # a changed leaf node
    with pytest.raises(LogDamagedError, match="entries"):
        store.batch(one, payloads(records(1, first=7)))
    assert store.rows.size() == 7  # nothing appended over it
