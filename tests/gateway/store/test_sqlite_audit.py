"""The SQLite audit log: sequencing, the leaf chain, proofs, checkpoints, rollback and search.

Every expectation comes from an independent reference: the leaves the records must produce
(``leaf_bytes`` chained from ``ZERO_HASH``), their RFC 6962 hashes and ``root_of`` over them.
The log's proofs are checked with the RFC 9162 verifiers, never against its own answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.log import Receipt, SearchQuery
from gateway.audit.note import NoteError, Verifier, VerifierSet
from gateway.audit.proof import OutOfRangeError, root_of, verify_consistency, verify_inclusion
from gateway.audit.record import ZERO_HASH, AuditRecord, leaf_bytes, rfc3339
from gateway.audit.rfc6962 import hash_leaf
from gateway.audit.signer import Ed25519FileSigner
from gateway.errors import StoreUnavailable
from gateway.store import SqliteStore, sqlite_search
from gateway.store.sqlite_audit import SqliteAuditLog
from gateway.store.sqlite_search import index_path

ORIGIN = "onecard.example/audit"
HOUR = 3600.0  # a checkpoint interval no test outlives: only the first batch after a start signs
START = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


# -- helpers ---------------------------------------------------------------------------------


def make_record(n: int, **overrides: Any) -> AuditRecord:
    """A distinct record (its request id and time come from ``n``)."""
    fields: dict[str, Any] = {
        "time": rfc3339(START + dt.timedelta(seconds=n)),
        "request_id": f"req-{n:05d}",
        "org": "org-a",
        "org_type": "hospital",
        "cert_sha256": "ab" * 32,
        "rpc": "/onecard.v1.Records/Get",
        "outcome": "OK",
        "reason": "",
        "released_sha256": "cd" * 32,
        "latency_us": 100 + n,
        "decision": "allow",
        "basis": "treatment",
        "subject": f"subject-{n % 3}",
    }
    fields.update(overrides)
    return AuditRecord(**fields)


def records(count: int, first: int = 0) -> list[AuditRecord]:
    return [make_record(n) for n in range(first, first + count)]


def reference_backs(recs: Sequence[AuditRecord]) -> list[int | None]:
    """Each record's back-link: the index of the previous record about its subject, if any."""
    newest: dict[str, int] = {}
    backs: list[int | None] = []
    for index, record in enumerate(recs):
        backs.append(newest.get(record.subject) if record.subject else None)
        if record.subject:
            newest[record.subject] = index
    return backs


def reference_chain(recs: Sequence[AuditRecord]) -> tuple[list[bytes], list[bytes]]:
    """The leaves and leaf hashes a log must hold after appending ``recs`` in this order."""
    leaves: list[bytes] = []
    hashes: list[bytes] = []
    prev = ZERO_HASH
    for index, (record, back) in enumerate(zip(recs, reference_backs(recs), strict=True)):
        leaf = leaf_bytes(index, prev, record.body(), back)
        prev = hash_leaf(leaf)
        leaves.append(leaf)
        hashes.append(prev)
    return leaves, hashes


def in_log_order(recs: Sequence[AuditRecord], receipts: Sequence[Receipt]) -> list[AuditRecord]:
    """``recs`` ordered by the indexes their receipts gave them (for concurrent appends)."""
    by_index = {receipt.index: record for record, receipt in zip(recs, receipts, strict=True)}
    assert sorted(by_index) == list(range(len(recs)))
    return [by_index[i] for i in range(len(recs))]


async def append_each(log: SqliteAuditLog, recs: Sequence[AuditRecord]) -> list[Receipt]:
    """Append one record at a time: every append is a batch of its own."""
    return [await log.append(record) for record in recs]


async def append_all(log: SqliteAuditLog, recs: Sequence[AuditRecord]) -> list[Receipt]:
    """Append concurrently: the writer group-commits them in as few batches as it can."""
    return list(await asyncio.gather(*(log.append(record) for record in recs)))


async def hold_writer(store: SqliteStore) -> tuple[threading.Event, asyncio.Future[None]]:
    """Block the writer thread inside a transaction until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    held = asyncio.ensure_future(store.write(hold))
    await asyncio.to_thread(started.wait, 10)
    return release, held


async def append_in_one_batch(
    store: SqliteStore, log: SqliteAuditLog, recs: Sequence[AuditRecord]
) -> list[Receipt | BaseException]:
    """Queue ``recs`` while the writer thread is held, so that one batch commits them all."""
    release, held = await hold_writer(store)
    appends = [asyncio.ensure_future(log.append(record)) for record in recs]
    await asyncio.sleep(0)  # every append is now queued behind the held write
    release.set()
    await held
    return await asyncio.gather(*appends, return_exceptions=True)


async def stored_leaves(log: SqliteAuditLog) -> list[bytes]:
    return [entry.leaf for entry in await log.entries(0, await log.size())]


async def assert_inclusion(log: SqliteAuditLog, hashes: list[bytes], index: int, size: int) -> None:
    leaf_hash, proof = await log.inclusion_proof(index, size)
    assert leaf_hash == hashes[index]
    verify_inclusion(leaf_hash, index, size, proof, root_of(hashes[:size]))


async def assert_consistency(log: SqliteAuditLog, hashes: list[bytes], m: int, n: int) -> None:
    proof = await log.consistency_proof(m, n)
    verify_consistency(m, n, proof, root_of(hashes[:m]), root_of(hashes[:n]))


async def assert_every_proof(log: SqliteAuditLog, hashes: list[bytes]) -> None:
    """Every inclusion and consistency proof of every tree size up to ``len(hashes)``."""
    for size in range(1, len(hashes) + 1):
        for index in range(size):
            await assert_inclusion(log, hashes, index, size)
        for m in range(size + 1):
            await assert_consistency(log, hashes, m, size)


def open_cp(note: bytes, signer: Ed25519FileSigner) -> Checkpoint:
    return open_checkpoint(note, VerifierSet([Verifier.parse(signer.verifier_key())]), ORIGIN)


async def checkpoint_sizes(log: SqliteAuditLog) -> list[int]:
    return [size for size, _ in await log.checkpoints()]


def fail_inserts(db: Path, table: str) -> None:
    """Make every INSERT into ``table`` fail, for every connection (a schema trigger)."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(
            f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table}"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )


def allow_inserts(db: Path, table: str) -> None:
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"DROP TRIGGER fail_{table}")


class Logs:
    """Opens audit logs on one database file; closes every store at teardown."""

    def __init__(self, db: Path, signer: Ed25519FileSigner) -> None:
        self.db = db
        self.signer = signer
        self._stores: list[SqliteStore] = []

    def open(self, interval: float = HOUR) -> tuple[SqliteStore, SqliteAuditLog]:
        store = SqliteStore(self.db)
        self._stores.append(store)
        return store, SqliteAuditLog(store, self.signer, checkpoint_interval_s=interval)

    async def close_all(self) -> None:
        for store in self._stores:
            await store.close()


@pytest.fixture
def log(logs: Logs) -> SqliteAuditLog:
    return logs.open()[1]


# -- sequencing and the leaf chain -----------------------------------------------------------


async def test_receipts_have_consecutive_indexes_and_the_stored_leaf_hashes(
    log: SqliteAuditLog, signer: Ed25519FileSigner
) -> None:
    receipts = await append_each(log, records(7))
    leaves = await stored_leaves(log)
    assert [r.index for r in receipts] == list(range(7))
    assert [r.leaf_hash for r in receipts] == [hash_leaf(leaf) for leaf in leaves]
    assert {r.origin for r in receipts} == {signer.name}


async def test_each_leaf_wraps_its_record_chained_from_the_zero_hash(log: SqliteAuditLog) -> None:
    recs = records(7)
    await append_each(log, recs)
    leaves, _ = reference_chain(recs)
    assert await stored_leaves(log) == leaves
    # The chain's first link is spelled out, not only taken from leaf_bytes.
    assert leaves[0].startswith(b'{"i":0,"prev":"' + b"0" * 64 + b'","r":{')


async def test_each_leaf_decodes_to_its_index_previous_hash_and_record(
    log: SqliteAuditLog,
) -> None:
    recs = records(4)
    await append_each(log, recs)
    prev, backs = ZERO_HASH, reference_backs(recs)
    for index, (leaf, record) in enumerate(zip(await stored_leaves(log), recs, strict=True)):
        fields = {**dataclasses.asdict(record), "policies": list(record.policies)}
        fields["back"] = backs[index]
        assert json.loads(leaf) == {"i": index, "prev": prev.hex(), "r": fields}
        prev = hash_leaf(leaf)


async def test_concurrent_appends_each_get_one_index_and_form_one_chain(
    log: SqliteAuditLog,
) -> None:
    recs = records(300)
    receipts = await append_all(log, recs)
    leaves, hashes = reference_chain(in_log_order(recs, receipts))
    assert await stored_leaves(log) == leaves
    assert [r.leaf_hash for r in receipts] == [hashes[r.index] for r in receipts]


# -- proofs ----------------------------------------------------------------------------------


async def test_every_proof_of_every_size_up_to_40_verifies(log: SqliteAuditLog) -> None:
    recs = records(40)
    # One batch per append for the first half, then group-committed batches of any size.
    receipts = await append_each(log, recs[:20]) + await append_all(log, recs[20:])
    _, hashes = reference_chain(in_log_order(recs, receipts))
    await assert_every_proof(log, hashes)


async def test_proofs_verify_while_the_log_is_exactly_that_size(log: SqliteAuditLog) -> None:
    recs = records(12)
    _, hashes = reference_chain(recs)
    for size, record in enumerate(recs, start=1):
        await log.append(record)
        for index in range(size):
            await assert_inclusion(log, hashes, index, size)
        for m in range(size + 1):
            await assert_consistency(log, hashes, m, size)


async def test_proofs_verify_in_a_large_log_of_concurrent_appends(log: SqliteAuditLog) -> None:
    recs = records(1000)
    receipts = await append_all(log, recs)
    _, hashes = reference_chain(in_log_order(recs, receipts))
    for index, size in [
        (0, 1000),
        (511, 1000),
        (512, 1000),
        (999, 1000),
        (998, 999),
        (700, 777),
        (512, 513),
        (0, 513),
        (255, 300),
    ]:
        await assert_inclusion(log, hashes, index, size)
    for m, n in [
        (1, 1000),
        (511, 1000),
        (512, 1000),
        (999, 1000),
        (37, 613),
        (300, 777),
        (64, 65),
        (1000, 1000),
        (0, 1000),
    ]:
        await assert_consistency(log, hashes, m, n)


@pytest.mark.parametrize(
    ("proof", "args"),
    [
        ("inclusion", (0, 6)),
        ("inclusion", (5, 5)),
        ("inclusion", (3, 2)),
        ("consistency", (1, 6)),
        ("consistency", (5, 6)),
        ("consistency", (4, 3)),
    ],
)
async def test_proofs_beyond_the_log_are_out_of_range(
    log: SqliteAuditLog, proof: str, args: tuple[int, int]
) -> None:
    await append_all(log, records(5))
    prove = log.inclusion_proof if proof == "inclusion" else log.consistency_proof
    with pytest.raises(OutOfRangeError):
        await prove(*args)


# -- reopening -------------------------------------------------------------------------------

SEGMENTS = (1, 2, 5, 8, 13)  # sizes after each restart: 1, 3, 8, 16, 29


async def append_across_restarts(logs: Logs) -> tuple[list[AuditRecord], list[Receipt]]:
    """Append ``SEGMENTS`` records, closing the store and opening a new log after each."""
    recs: list[AuditRecord] = []
    receipts: list[Receipt] = []
    for count in SEGMENTS:
        store, log = logs.open()
        segment = records(count, first=len(recs))
        receipts += await append_each(log, segment)
        recs += segment
        await store.close()
    return recs, receipts


async def test_indexes_and_the_leaf_chain_continue_after_reopening(logs: Logs) -> None:
    recs, receipts = await append_across_restarts(logs)
    leaves, hashes = reference_chain(recs)
    assert [r.index for r in receipts] == list(range(len(recs)))
    assert [r.leaf_hash for r in receipts] == hashes
    assert await stored_leaves(logs.open()[1]) == leaves


async def test_proofs_span_entries_written_before_and_after_reopening(logs: Logs) -> None:
    recs, _ = await append_across_restarts(logs)
    _, hashes = reference_chain(recs)
    await assert_every_proof(logs.open()[1], hashes)


async def test_the_first_checkpoint_after_reopening_has_the_root_of_the_whole_log(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    recs, _ = await append_across_restarts(logs)
    _, log = logs.open()
    recs.append(make_record(len(recs)))
    await log.append(recs[-1])
    _, hashes = reference_chain(recs)
    note = await log.latest_checkpoint()
    assert note is not None
    assert open_cp(note, signer) == Checkpoint(ORIGIN, len(recs), root_of(hashes))


async def test_reopening_remembers_what_was_already_checkpointed(logs: Logs) -> None:
    store, log = logs.open()
    await append_each(log, records(3))
    await log.checkpoint_now()
    await store.close()
    _, log = logs.open()
    await log.checkpoint_now()
    assert await checkpoint_sizes(log) == [1, 3]


# -- checkpoints -----------------------------------------------------------------------------


async def test_an_empty_log_has_no_checkpoint(log: SqliteAuditLog) -> None:
    await log.checkpoint_now()
    assert await log.latest_checkpoint() is None
    assert await log.checkpoints() == []


async def test_with_no_interval_every_batch_signs_a_checkpoint_of_its_tree(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    _, log = logs.open(interval=0)
    recs = records(6)
    await append_each(log, recs)
    _, hashes = reference_chain(recs)
    signed = await log.checkpoints()
    assert [size for size, _ in signed] == [1, 2, 3, 4, 5, 6]
    for size, note in signed:
        assert open_cp(note, signer) == Checkpoint(ORIGIN, size, root_of(hashes[:size]))


async def test_appends_queued_together_commit_as_one_batch_with_one_checkpoint(
    logs: Logs,
) -> None:
    store, log = logs.open(interval=0)
    await log.append(make_record(0))
    receipts = await append_in_one_batch(store, log, records(5, first=1))
    assert [r.index for r in receipts if isinstance(r, Receipt)] == [1, 2, 3, 4, 5]
    assert await checkpoint_sizes(log) == [1, 6]


async def test_the_latest_checkpoint_covers_the_whole_log(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    _, log = logs.open(interval=0)
    recs = records(9)
    receipts = await append_each(log, recs[:4]) + await append_all(log, recs[4:])
    _, hashes = reference_chain(in_log_order(recs, receipts))
    note = await log.latest_checkpoint()
    assert note is not None
    assert open_cp(note, signer) == Checkpoint(ORIGIN, 9, root_of(hashes))


async def test_with_a_long_interval_only_the_first_batch_signs(log: SqliteAuditLog) -> None:
    await append_each(log, records(5))
    assert await checkpoint_sizes(log) == [1]


async def test_checkpoint_now_signs_the_current_size(
    log: SqliteAuditLog, signer: Ed25519FileSigner
) -> None:
    recs = records(5)
    await append_each(log, recs)
    await log.checkpoint_now()
    _, hashes = reference_chain(recs)
    assert await checkpoint_sizes(log) == [1, 5]
    note = await log.latest_checkpoint()
    assert note is not None
    assert open_cp(note, signer) == Checkpoint(ORIGIN, 5, root_of(hashes))


async def test_checkpoint_now_with_nothing_new_signs_nothing(logs: Logs) -> None:
    _, log = logs.open(interval=0)
    await append_each(log, records(3))
    await log.checkpoint_now()
    assert await checkpoint_sizes(log) == [1, 2, 3]


async def test_a_checkpoint_from_another_key_does_not_open(
    log: SqliteAuditLog, tmp_path: Path
) -> None:
    await log.append(make_record(0))
    note = await log.latest_checkpoint()
    assert note is not None
    other = Ed25519FileSigner.generate(tmp_path / "other.key", ORIGIN)
    with pytest.raises(NoteError):
        open_cp(note, other)


# -- a failed batch --------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["audit_entries", "audit_checkpoints"])
async def test_after_a_rolled_back_batch_the_next_entry_takes_its_index(
    logs: Logs, signer: Ed25519FileSigner, table: str
) -> None:
    store, log = logs.open(interval=0)  # every batch also writes a checkpoint
    recs = records(5)
    await append_each(log, recs)

    fail_inserts(logs.db, table)
    failed = await append_in_one_batch(store, log, records(3, first=100))
    assert all(isinstance(outcome, StoreUnavailable) for outcome in failed)
    allow_inserts(logs.db, table)

    recs += records(3, first=5)
    receipts = await append_each(log, recs[5:])
    assert [r.index for r in receipts] == [5, 6, 7]
    leaves, hashes = reference_chain(recs)
    assert await stored_leaves(log) == leaves
    await assert_every_proof(log, hashes)
    note = await log.latest_checkpoint()
    assert note is not None
    assert open_cp(note, signer) == Checkpoint(ORIGIN, 8, root_of(hashes))


async def test_a_checkpoint_lost_with_its_batch_is_signed_by_the_next_one(
    logs: Logs, signer: Ed25519FileSigner
) -> None:
    _, log = logs.open(interval=HOUR)  # only the first batch after a start signs
    # Make the commit fail after the checkpoint was written: the token ledger's prune runs last.
    with closing(sqlite3.connect(logs.db, isolation_level=None)) as conn:
        conn.execute("INSERT INTO redeemed_tokens VALUES (x'00', 1)")
        conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON redeemed_tokens"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    with pytest.raises(StoreUnavailable):
        await log.append(make_record(0))
    with closing(sqlite3.connect(logs.db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER refuse")

    await log.append(make_record(1))
    note = await log.latest_checkpoint()
    assert note is not None  # now, not an hour later
    assert open_cp(note, signer).size == 1


async def test_a_search_sees_every_appended_entry_without_waiting_for_the_writer(
    logs: Logs,
) -> None:
    store, log = logs.open()
    await append_each(log, records(3))
    release, held = await hold_writer(store)  # the writer is inside a long transaction
    try:
        found = await asyncio.wait_for(log.search(SearchQuery()), timeout=5)
    finally:
        release.set()
        await held
    assert [e.index for e in found] == [0, 1, 2]


async def test_a_batch_that_rolls_back_never_reaches_the_search_index(logs: Logs) -> None:
    store, log = logs.open()
    await append_each(log, records(2))
    fail_inserts(logs.db, "audit_entries")
    outcomes = await append_in_one_batch(store, log, records(3, first=100))
    assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes)
    allow_inserts(logs.db, "audit_entries")
    await log.append(make_record(2))
    assert [json.loads(e.leaf)["r"]["request_id"] for e in await log.search(SearchQuery())] == [
        "req-00000", "req-00001", "req-00002"
    ]  # fmt: skip


# -- reading: entries, size, search ----------------------------------------------------------


async def test_size_counts_the_stored_entries(log: SqliteAuditLog) -> None:
    assert await log.size() == 0
    await append_all(log, records(7))
    assert await log.size() == 7


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (0, 7, range(7)),
        (2, 5, range(2, 5)),
        (3, 100, range(3, 7)),
        (7, 10, range(0)),
        (4, 4, range(0)),
    ],
)
async def test_entries_returns_the_range_clipped_to_the_log(
    log: SqliteAuditLog, start: int, end: int, want: range
) -> None:
    recs = records(7)
    await append_each(log, recs)
    leaves, _ = reference_chain(recs)
    got = await log.entries(start, end)
    assert [(e.index, e.leaf) for e in got] == [(i, leaves[i]) for i in want]


SEARCH_RECORDS = [
    make_record(n, org=org, rpc=rpc, decision=decision, basis=basis, subject=subject)
    for n, (org, rpc, decision, basis, subject) in enumerate(
        [
            ("org-a", "/r/Get", "allow", "treatment", "s1"),
            ("org-b", "/r/Get", "deny", "treatment", "s2"),
            ("org-a", "/r/List", "allow", "emergency", "s1"),
            ("org-c", "/r/Get", "allow", "consent", "s3"),
            ("org-a", "/r/Get", "deny", "consent", "s2"),
            ("org-b", "/r/List", "allow", "treatment", "s1"),
            ("org-a", "/r/Get", "allow", "treatment", "s3"),
            ("org-a", "/r/List", "deny", "emergency", "s1"),
            ("org-c", "/r/Get", "allow", "treatment", "s2"),
            ("org-a", "/r/Get", "allow", "consent", "s1"),
        ]
    )
]


def matches(index: int, record: AuditRecord, q: SearchQuery) -> bool:
    """The documented meaning of a query: empty fields do not filter; since <= time < until."""
    equal = all(
        not want or getattr(record, name) == want
        for name, want in [
            ("org", q.org),
            ("rpc", q.rpc),
            ("decision", q.decision),
            ("basis", q.basis),
            ("subject", q.subject),
        ]
    )
    return (
        equal
        and index > q.after_index
        and (not q.since or record.time >= q.since)
        and (not q.until or record.time < q.until)
    )


def at(n: int) -> str:
    return SEARCH_RECORDS[n].time


SEARCH_QUERIES = [
    SearchQuery(org="org-a"),
    SearchQuery(rpc="/r/List"),
    SearchQuery(decision="deny"),
    SearchQuery(basis="consent"),
    SearchQuery(subject="s2"),
    SearchQuery(since=at(6)),
    SearchQuery(until=at(3)),
    SearchQuery(since=at(2), until=at(7)),
    SearchQuery(after_index=4),
    SearchQuery(limit=3),
    SearchQuery(org="org-a", decision="allow", basis="treatment"),
    SearchQuery(org="org-a", since=at(1), after_index=2, limit=2),
    SearchQuery(subject="s1", rpc="/r/List", until=at(7)),
]


def expected_search(query: SearchQuery) -> list[int]:
    """The indexes ``query`` must return from a log of ``SEARCH_RECORDS``."""
    want = [i for i, r in enumerate(SEARCH_RECORDS) if matches(i, r, query)][: query.limit]
    assert 0 < len(want) < len(SEARCH_RECORDS)  # the query filters, and something is left
    return want


async def assert_every_search_query(log: SqliteAuditLog) -> None:
    """Each of ``SEARCH_QUERIES`` returns what it must from a log of ``SEARCH_RECORDS``."""
    for query in SEARCH_QUERIES:
        assert [e.index for e in await log.search(query)] == expected_search(query), query


@pytest.mark.parametrize(
    "query",
    SEARCH_QUERIES,
    ids=lambda q: ",".join(
        f"{f.name}={getattr(q, f.name)}"
        for f in dataclasses.fields(q)
        if getattr(q, f.name) != f.default
    ),
)
async def test_search_returns_exactly_the_matching_entries_in_order(
    log: SqliteAuditLog, query: SearchQuery
) -> None:
    await append_each(log, SEARCH_RECORDS)
    leaves, _ = reference_chain(SEARCH_RECORDS)
    want = expected_search(query)
    got = await log.search(query)
    assert [(e.index, e.leaf) for e in got] == [(i, leaves[i]) for i in want]


async def test_search_with_no_match_is_empty(log: SqliteAuditLog) -> None:
    await append_each(log, SEARCH_RECORDS)
    assert await log.search(SearchQuery(org="org-a", basis="nobody")) == []


async def test_the_search_index_is_rebuilt_from_the_leaves_after_a_restart(logs: Logs) -> None:
    store, log = logs.open()
    await append_each(log, SEARCH_RECORDS)
    await log.search(SearchQuery())  # the index is complete
    await store.close()
    with closing(sqlite3.connect(index_path(logs.db), isolation_level=None)) as conn:
        conn.execute("DELETE FROM audit_search WHERE idx >= 3")  # its tail was never fsynced
    _, log = logs.open()
    await assert_every_search_query(log)


async def test_a_failing_search_index_neither_fails_appends_nor_loses_entries(logs: Logs) -> None:
    _, log = logs.open()
    fail_inserts(index_path(logs.db), "audit_search")
    receipts = await append_each(log, SEARCH_RECORDS)
    assert [r.index for r in receipts] == list(range(len(SEARCH_RECORDS)))
    with pytest.raises(StoreUnavailable):
        await log.search(SearchQuery())  # an incomplete answer is never given
    allow_inserts(index_path(logs.db), "audit_search")
    await assert_every_search_query(log)


async def test_search_finds_entries_that_reuse_the_indexes_of_a_rolled_back_batch(
    logs: Logs,
) -> None:
    store, log = logs.open()
    await append_each(log, records(5))
    fail_inserts(logs.db, "audit_entries")
    await append_in_one_batch(store, log, records(3, first=100))  # indexes 5, 6, 7: rolled back
    allow_inserts(logs.db, "audit_entries")
    await log.append(make_record(5))
    await log.search(SearchQuery())  # the index catches up
    await store.close()
    _, log = logs.open()
    await append_each(log, [make_record(n, org="org-b") for n in (6, 7)])
    assert [e.index for e in await log.search(SearchQuery(org="org-b"))] == [6, 7]


async def test_search_by_subject_compares_the_whole_pseudonym(log: SqliteAuditLog) -> None:
    # The index keeps a pseudonym's first 64 bits: these two share them, and must not mix.
    one, other = "ab" * 8 + "01" * 24, "ab" * 8 + "02" * 24
    await append_each(log, [make_record(n, subject=[one, other][n % 2]) for n in range(6)])
    assert [e.index for e in await log.search(SearchQuery(subject=one))] == [0, 2, 4]
    assert [e.index for e in await log.search(SearchQuery(subject=other))] == [1, 3, 5]
    assert await log.search(SearchQuery(subject="ab" * 8 + "03" * 24)) == []


async def count_indexed(db: Path, want: int) -> int:
    """Rows in audit_search once there are ``want`` (or what there is after two seconds)."""
    for _ in range(200):
        with closing(sqlite3.connect(index_path(db))) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM audit_search").fetchone()
        if rows == want:
            break
        await asyncio.sleep(0.01)
    return int(rows)


async def test_a_quiet_log_has_every_entry_indexed_without_a_search(logs: Logs) -> None:
    _, log = logs.open()
    await append_each(log, records(5))
    assert await count_indexed(logs.db, 5) == 5


async def test_a_busy_log_has_whole_chunks_indexed_only(
    logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_search, "QUIET_S", 3600.0)  # appends never stop for long
    monkeypatch.setattr(sqlite_search, "CHUNK", 4)
    _, log = logs.open()
    await append_each(log, records(10))
    assert await count_indexed(logs.db, 8) == 8  # two chunks of 4; 2 entries wait
    await asyncio.sleep(0.1)
    assert await count_indexed(logs.db, 8) == 8
    assert [e.index for e in await log.search(SearchQuery(after_index=7))] == [8, 9]


async def test_a_schema_3_database_loses_its_search_table_to_the_index_file(
    logs: Logs,
) -> None:
    store, log = logs.open()
    await append_each(log, SEARCH_RECORDS)
    await store.close()
    index_path(logs.db).unlink()
    with closing(sqlite3.connect(logs.db, isolation_level=None)) as conn:
        conn.executescript(
            """
            CREATE TABLE audit_search (idx INTEGER PRIMARY KEY, time TEXT, org TEXT, rpc TEXT,
                decision TEXT, basis TEXT, subject TEXT, outcome TEXT);
            INSERT INTO audit_search VALUES (0, 't', 'org-x', 'r', 'd', 'b', 's', 'o');
            PRAGMA user_version = 3;
            """
        )
    _, log = logs.open()
    await assert_every_search_query(log)
    with closing(sqlite3.connect(logs.db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (8,)
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_schema")}
        assert "audit_search" not in tables


async def test_a_search_index_file_that_is_not_a_database_is_rebuilt(logs: Logs) -> None:
    store, log = logs.open()
    await append_each(log, SEARCH_RECORDS)
    await store.close()
    index_path(logs.db).write_bytes(b"this is not a database, and was never one" * 100)
    _, log = logs.open()
    await assert_every_search_query(log)


async def test_if_the_index_thread_dies_searches_fail_instead_of_hanging(
    logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(self: sqlite_search.SearchIndex, buffer: object) -> None:
        raise SystemExit("a bug")  # not an Exception: nothing inside the thread catches it

    monkeypatch.setattr(sqlite_search.SearchIndex, "_write", crash)
    _, log = logs.open()
    await append_each(log, records(3))  # appends do not depend on the index
    for _ in range(2):  # the search that meets the crash, and one after it
        with pytest.raises(StoreUnavailable, match="stopped on an error"):
            await asyncio.wait_for(log.search(SearchQuery()), timeout=5)


@pytest.mark.parametrize(
    "query",
    [
        *SEARCH_QUERIES,
        SearchQuery(subject="s1", after_index=2, limit=2),  # starts and ends inside spans
        SearchQuery(subject="s2", after_index=3),  # starts at a span's edge
        SearchQuery(subject="s1", org="org-a", limit=1),
    ],
)
async def test_search_by_subject_walks_the_spans_of_the_log(
    logs: Logs, monkeypatch: pytest.MonkeyPatch, query: SearchQuery
) -> None:
    monkeypatch.setattr(sqlite_search, "SPAN_BITS", 2)  # spans of 4 entries: 10 entries, 3 spans
    _, log = logs.open()
    await append_each(log, SEARCH_RECORDS)
    assert [e.index for e in await log.search(query)] == expected_search(query)


async def test_a_search_index_of_an_older_layout_is_rebuilt(logs: Logs) -> None:
    store, log = logs.open()
    await append_each(log, SEARCH_RECORDS)
    await store.close()
    index_path(logs.db).unlink()
    with closing(sqlite3.connect(index_path(logs.db), isolation_level=None)) as conn:
        conn.executescript(
            """
            CREATE TABLE audit_search (idx INTEGER PRIMARY KEY, time TEXT, org INT, rpc INT,
                decision INT, basis INT, outcome INT, subject INT);
            INSERT INTO audit_search VALUES (0, 't', 1, 1, 1, 1, 1, 1);
            PRAGMA user_version = 1;
            """
        )
    _, log = logs.open()
    await assert_every_search_query(log)


async def test_a_schema_5_database_gets_its_subject_heads_from_the_stored_leaves(
    logs: Logs,
) -> None:
    """Entries from before back-links still count: the next entry about a subject links to the
    newest stored one, even though the map of newest entries did not exist yet."""
    store, log = logs.open()
    recs = records(7)  # subjects 0, 1, 2, 0, 1, 2, 0
    await append_each(log, recs)
    await store.close()
    with closing(sqlite3.connect(logs.db, isolation_level=None)) as conn:
        conn.executescript("DROP TABLE audit_subject_heads; PRAGMA user_version = 6;")
    _, log = logs.open()
    recs += records(3, first=7)  # subjects 1, 2, 0
    await append_each(log, recs[7:])
    backs = [json.loads(leaf)["r"]["back"] for leaf in await stored_leaves(log)]
    assert backs == reference_backs(recs) == [None, None, None, 0, 1, 2, 3, 4, 5, 6]
