"""AuditService over mutual TLS: regulators verify receipts and search by citizen."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, card_pb2, card_pb2_grpc, common_pb2
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import verify_consistency, verify_inclusion
from gateway.audit.record import AuditRecord
from gateway.audit.stage import released_digest
from gateway.audit.verify import verify_leaves
from gateway.bootstrap import Gateway
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.audit.test_record import BASE as RECORD
from tests.integration.calls import insurance_status, issue_token
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, REGULATOR

pytestmark = pytest.mark.integration
ORIGIN = "onecard.local/audit"


async def test_a_regulator_verifies_a_receipt_and_searches_by_citizen(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    person, other = [p for p in population if p.card_status is CardStatus.NORMAL][:2]
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        issued = await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=person.id_number),
                purpose=common_pb2.PURPOSE_PATRQT,
            )
        )
        await issue_token(app, other.id_number)
    async with org_channel(gateway.target, pki, HOSPITAL) as hosp:
        await insurance_status(hosp, person.id_number, issued.token)

    public_key = (tmp_path / "data" / "audit-log.pub").read_text().strip()
    verifiers = VerifierSet([Verifier.parse(public_key)])
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        audit = audit_pb2_grpc.AuditServiceStub(reg)
        first = await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())
        checkpoint = open_checkpoint(first.signed_checkpoint, verifiers, ORIGIN)
        assert checkpoint.size == first.tree_size == 3
        proof = await audit.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(
                leaf_index=issued.receipt.leaf_index, tree_size=checkpoint.size
            )
        )
        assert proof.leaf_hash == issued.receipt.leaf_hash
        verify_inclusion(
            issued.receipt.leaf_hash,
            issued.receipt.leaf_index,
            checkpoint.size,
            list(proof.hashes),
            checkpoint.root_hash,
        )
        found = await audit.SearchEntries(
            audit_pb2.SearchEntriesRequest(
                card=common_pb2.CardRef(card_number=person.id_number), first_page=True
            )
        )
        later = open_checkpoint(
            (await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())).signed_checkpoint,
            verifiers,
            ORIGIN,
        )
        consistency = await audit.GetConsistencyProof(
            audit_pb2.GetConsistencyProofRequest(from_size=checkpoint.size, to_size=later.size)
        )
    verify_consistency(
        checkpoint.size,
        later.size,
        list(consistency.hashes),
        checkpoint.root_hash,
        later.root_hash,
    )
    records = [json.loads(e.leaf)["r"] for e in found.entries]
    # The token issue and the hospital's read are this citizen's; the other citizen's are not.
    assert [r["rpc"].rsplit("/", 1)[1] for r in records] == ["IssueCardToken", "GetInsuranceStatus"]
    assert len({r["subject"] for r in records}) == 1
    # The search itself was logged, by pseudonym, as a statutory exchange of the regulator.
    entries = await gateway.audit_log.entries(0, 100)
    search = next(json.loads(e.leaf)["r"] for e in entries if b"SearchEntries" in e.leaf)
    assert search["org"] == REGULATOR and search["basis"] == "statutory"
    assert search["subject"] == records[0]["subject"]
    assert person.id_number.encode() not in b"".join(e.leaf for e in entries)


async def test_only_regulators_read_the_audit_log(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(HOSPITAL) as hosp:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await audit_pb2_grpc.AuditServiceStub(hosp).SearchEntries(
                audit_pb2.SearchEntriesRequest(first_page=True)
            )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "policy_denied"


INVALID, BEYOND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE
TOO_BIG = 2**63  # no log index or size can be this large (entries are numbered in an int64)
Inclusion, Consistency = audit_pb2.GetInclusionProofRequest, audit_pb2.GetConsistencyProofRequest
Entries, Search = audit_pb2.GetEntriesRequest, audit_pb2.SearchEntriesRequest
REFUSED_READS = {
    # Wrong whatever the log holds: INVALID_ARGUMENT.
    "inclusion, index = size": (Inclusion(leaf_index=5, tree_size=5), INVALID, "invalid_request"),
    "inclusion, size 0": (Inclusion(leaf_index=0, tree_size=0), INVALID, "invalid_request"),
    "inclusion, size 2^63": (Inclusion(tree_size=TOO_BIG), INVALID, "invalid_request"),
    "inclusion, index 2^64-1": (
        Inclusion(leaf_index=2**64 - 1, tree_size=2**64 - 1),
        INVALID,
        "invalid_request",
    ),
    "consistency, from > to": (Consistency(from_size=5, to_size=3), INVALID, "invalid_request"),
    "consistency, to 2^63": (Consistency(from_size=1, to_size=TOO_BIG), INVALID, "invalid_request"),
    "entries, empty": (Entries(start_index=3, end_index=3), INVALID, "invalid_request"),
    "entries, too many": (Entries(start_index=0, end_index=10_001), INVALID, "invalid_request"),
    "entries, at 2^63": (
        Entries(start_index=TOO_BIG, end_index=TOO_BIG + 1),
        INVALID,
        "invalid_request",
    ),
    "search, after 2^63": (Search(after_index=TOO_BIG), INVALID, "invalid_request"),
    "search, after 2^64-1": (Search(after_index=2**64 - 1), INVALID, "invalid_request"),
    # Well formed but past what the log holds now: OUT_OF_RANGE.
    "inclusion, size past the log": (Inclusion(leaf_index=5, tree_size=1000), BEYOND, "beyond_log"),
    "consistency, to past the log": (Consistency(from_size=1, to_size=10**6), BEYOND, "beyond_log"),
    "consistency, 0 to past the log": (Consistency(to_size=10**6), BEYOND, "beyond_log"),
    "consistency, equal past the log": (
        Consistency(from_size=10**6, to_size=10**6),
        BEYOND,
        "beyond_log",
    ),
    "entries, past the log": (
        Entries(start_index=10**6, end_index=10**6 + 1),
        BEYOND,
        "beyond_log",
    ),
}


async def _read(reg: grpc.aio.Channel, request: Any) -> list[Any]:
    """Send one AuditService read; the stream's messages or the unary answer, as a list."""
    audit = audit_pb2_grpc.AuditServiceStub(reg)
    if isinstance(request, Entries):
        return [chunk async for chunk in audit.GetEntries(request)]
    method = {
        Inclusion: audit.GetInclusionProof,
        Consistency: audit.GetConsistencyProof,
        Search: audit.SearchEntries,
    }[type(request)]
    return [await method(request)]


@pytest.mark.parametrize(
    ("request_", "code", "why"), REFUSED_READS.values(), ids=REFUSED_READS.keys()
)
async def test_proof_and_entry_reads_refuse_bad_sizes_consistently(
    gateway: Gateway,
    channel: Callable[[str], grpc.aio.Channel],
    request_: Any,
    code: grpc.StatusCode,
    why: str,
) -> None:
    async with channel(REGULATOR) as reg:
        await _read(reg, Search(first_page=True))  # the log is not empty: sizes 1..n exist
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _read(reg, request_)

    assert (info.value.code(), reason(info.value)) == (code, why)
    assert "Traceback" not in (info.value.details() or "")
    index = int(dict(info.value.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record = json.loads(entry.leaf)["r"]
    assert (record["outcome"], record["reason"]) == (code.name, why)


async def test_empty_consistency_proofs_from_zero_and_between_equal_sizes(
    gateway: Gateway, channel: Callable[[str], grpc.aio.Channel]
) -> None:
    async with channel(REGULATOR) as reg:
        for _ in range(3):
            await _read(reg, Search(first_page=True))
        size = await gateway.audit_log.size()
        (from_zero,) = await _read(reg, Consistency(from_size=0, to_size=size))
        (equal,) = await _read(reg, Consistency(from_size=2, to_size=2))
        (proper,) = await _read(reg, Consistency(from_size=1, to_size=size))

    assert list(from_zero.hashes) == list(equal.hashes) == []
    assert len(proper.hashes) > 0  # the same RPC does answer with hashes when there are any


def _filler(n: int) -> AuditRecord:
    return dataclasses.replace(RECORD, request_id=f"filler-{n}")


async def test_a_regulator_streams_entries_and_rebuilds_the_signed_root(
    gateway_factory: Callable[..., Any], pki: PkiLayout, tmp_path: Path
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    for n in range(1500):  # more than one chunk of 1,000
        await gateway.audit_log.append(_filler(n))
    verifiers = VerifierSet(
        [Verifier.parse((tmp_path / "data" / "audit-log.pub").read_text().strip())]
    )
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        audit = audit_pb2_grpc.AuditServiceStub(reg)
        signed = (await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())).signed_checkpoint
        checkpoint = open_checkpoint(signed, verifiers, ORIGIN)
        call = audit.GetEntries(audit_pb2.GetEntriesRequest(start_index=0, end_index=5000))
        chunks = [chunk async for chunk in call]
        trailers = dict(await call.trailing_metadata())

    # The end is clipped to the log: 1,500 fillers plus the GetCheckpoint call's own entry.
    assert [len(chunk.entries) for chunk in chunks] == [1000, 501]
    leaves = [entry.leaf for chunk in chunks for entry in chunk.entries]
    assert [e.index for c in chunks for e in c.entries] == list(range(1501))
    assert checkpoint.size == 1500
    assert verify_leaves(leaves[: checkpoint.size], [checkpoint]).ok
    assert not verify_leaves(leaves, [checkpoint]).ok  # the last entry is not covered by it
    # The stream was logged before it left: its receipt rides on the first chunk and in the
    # trailers, and its entry holds the digest of exactly what was streamed.
    receipt = chunks[0].receipt
    assert receipt.leaf_index == 1501 == int(trailers["onecard-audit-index"])
    assert not chunks[1].HasField("receipt")
    (entry,) = await gateway.audit_log.entries(1501, 1502)
    record = json.loads(entry.leaf)["r"]
    assert record["rpc"] == "onecard.v1.AuditService/GetEntries"
    chunks[0].ClearField("receipt")
    assert record["released_sha256"] == released_digest(chunks)


@pytest.mark.parametrize(
    ("start", "end", "code", "why"),
    [
        (3, 3, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (0, 10_001, grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (10**6, 10**6 + 1, grpc.StatusCode.OUT_OF_RANGE, "beyond_log"),
    ],
)
async def test_bad_entry_ranges_are_refused_and_logged(
    gateway: Gateway,
    channel: Callable[[str], grpc.aio.Channel],
    start: int,
    end: int,
    code: grpc.StatusCode,
    why: str,
) -> None:
    async with channel(REGULATOR) as reg:
        call = audit_pb2_grpc.AuditServiceStub(reg).GetEntries(
            audit_pb2.GetEntriesRequest(start_index=start, end_index=end)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [chunk async for chunk in call]
    assert info.value.code() is code
    assert reason(info.value) == why
    index = int(dict(info.value.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    record = json.loads(entry.leaf)["r"]
    assert (record["rpc"], record["outcome"], record["reason"], record["released_sha256"]) == (
        "onecard.v1.AuditService/GetEntries",
        code.name,
        why,
        "",
    )


async def test_only_regulators_stream_entries(
    channel: Callable[[str], grpc.aio.Channel],
) -> None:
    async with channel(HOSPITAL) as hosp:
        call = audit_pb2_grpc.AuditServiceStub(hosp).GetEntries(
            audit_pb2.GetEntriesRequest(start_index=0, end_index=10)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [chunk async for chunk in call]
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason(info.value) == "policy_denied"


@pytest.fixture
def shanghai_time() -> Iterator[None]:
    """The process's local time zone is UTC+8 (TZ=Asia/Shanghai) for the test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff == 8 * 3600
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def _stamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_searches_take_utc_times_whatever_the_hosts_time_zone(
    shanghai_time: None, gateway_factory: Callable[..., Any], pki: PkiLayout
) -> None:
    gateway: Gateway = await gateway_factory()
    now = dt.datetime.now(dt.UTC)
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        fresh = [(await _read(reg, Search(first_page=True)))[0].receipt for _ in range(3)]
        window = Search(
            since=_stamp(now - dt.timedelta(minutes=5)),
            until=_stamp(now + dt.timedelta(minutes=5)),
            first_page=True,
        )
        (around_now,) = await _read(reg, window)
        (from_year_1,) = await _read(
            reg,
            Search(
                since=Timestamp(seconds=-62_135_596_800),
                until=Timestamp(seconds=253_402_300_799, nanos=999_999_999),
                first_page=True,
            ),
        )
        (eight_hours_ago,) = await _read(
            reg,
            Search(
                since=_stamp(now - dt.timedelta(hours=8, minutes=5)),
                until=_stamp(now - dt.timedelta(hours=7, minutes=55)),
                first_page=True,
            ),
        )

    found = [e.index for e in around_now.entries]
    assert [r.leaf_index for r in fresh] == found == [0, 1, 2]
    assert [e.index for e in from_year_1.entries][:4] == [0, 1, 2, 3]
    assert list(eight_hours_ago.entries) == []  # where a local-time reading would have looked


BAD_TIMES = {
    "since before year 1": Search(since=Timestamp(seconds=-62_135_596_801)),
    "until past year 9999": Search(until=Timestamp(seconds=253_402_300_800)),
    "since nanos -1": Search(since=Timestamp(seconds=0, nanos=-1)),
    "until nanos 10^9": Search(until=Timestamp(seconds=0, nanos=1_000_000_000)),
}


@pytest.mark.parametrize("request_", BAD_TIMES.values(), ids=BAD_TIMES.keys())
async def test_search_times_out_of_range_are_invalid_argument_and_audited(
    gateway: Gateway, channel: Callable[[str], grpc.aio.Channel], request_: Any
) -> None:
    async with channel(REGULATOR) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _read(reg, request_)

    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason(info.value) == "timestamp_out_of_range"
    field = "since" if request_.HasField("since") else "until"
    assert (info.value.details() or "").startswith(f"{field}")
    assert "must be" in (info.value.details() or "")
    index = int(dict(info.value.trailing_metadata() or ())["onecard-audit-index"])
    (entry,) = await gateway.audit_log.entries(index, index + 1)
    assert json.loads(entry.leaf)["r"]["outcome"] == "INVALID_ARGUMENT"


async def test_search_bounds_hold_to_the_nanosecond_and_for_years_before_1000(
    gateway: Gateway, channel: Callable[[str], grpc.aio.Channel]
) -> None:
    async with channel(REGULATOR) as reg:
        await _read(reg, Search(first_page=True))
        (first,) = await gateway.audit_log.entries(0, 1)
        stored = dt.datetime.strptime(json.loads(first.leaf)["r"]["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        just_after = _stamp(stored.replace(tzinfo=dt.UTC))
        just_after.nanos += 1  # 1 ns after entry 0 was made
        (since,) = await _read(reg, Search(since=just_after, first_page=True))
        (until,) = await _read(reg, Search(until=just_after, first_page=True))
        (year_999,) = await _read(
            reg, Search(since=_stamp(dt.datetime(999, 6, 1, tzinfo=dt.UTC)), first_page=True)
        )

    assert 0 not in [e.index for e in since.entries]
    assert [e.index for e in until.entries] == [0]
    assert [e.index for e in year_999.entries][:2] == [0, 1]


EDGES = (0, 1, 2**63 - 1, 2**63, 2**64 - 1)


def _edge_requests() -> list[Any]:
    requests: list[Any] = []
    for a in EDGES:
        for b in EDGES:
            requests.append(Inclusion(leaf_index=a, tree_size=b))
            requests.append(Consistency(from_size=a, to_size=b))
            requests.append(Entries(start_index=a, end_index=b))
        for page in (0, 1, 1000, 1001, 2**32 - 1):
            requests.append(Search(after_index=a, page_size=page))
            requests.append(Search(after_index=a, page_size=page, first_page=True))
    return requests


async def test_no_edge_value_of_a_size_or_index_is_an_internal_error(
    gateway_factory: Callable[..., Any], pki: PkiLayout
) -> None:
    unlimited = {"regulator": {"per_s": 1_000_000, "burst": 1_000_000}}  # a sweep, not a flood
    gateway: Gateway = await gateway_factory(rate_limits=unlimited)
    outcomes: dict[str, set[str]] = {}
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        await _read(reg, Search(first_page=True))
        for request_ in _edge_requests():
            try:
                await _read(reg, request_)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            outcomes.setdefault(code.name, set()).add(type(request_).__name__)

    assert set(outcomes) <= {"OK", "INVALID_ARGUMENT", "OUT_OF_RANGE"}, outcomes
    assert set(outcomes) == {"OK", "INVALID_ARGUMENT", "OUT_OF_RANGE"}  # each rule was reached
