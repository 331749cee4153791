"""Three gateway processes on one PostgreSQL log, and SIGKILL to the one appending (issue 17).

Three ``onecard serve`` processes share one schema and one data directory's keys (as hosts
behind a load balancer share them). Hospitals' visits go to any of them (the token issued at one
process, used at another) while, round after round, the process that holds the log's append
claim at that moment (read from ``pg_locks``: it is mid-transaction) is killed with SIGKILL and
started again. Afterwards: `onecard audit verify` accepts the export of the one log, every
released response's receipt is the stored entry's and is proved against the final signed
checkpoint, every checkpoint a gateway handed out during the run is of the same tree (no fork
at any failover), a token used at one process is refused at another, and a consent revoked at
one is refused at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import psycopg
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, consent_pb2
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.compact import NodeID
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import inclusion_proof, root_of, verify_inclusion
from gateway.audit.rfc6962 import hash_leaf
from gateway.cli import main
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.pki import PkiLayout, ensure_pki
from gateway.ports import CardStatus
from tests.integration.calls import (
    consent_basis,
    grant_consent,
    insurance_on,
    insurance_status,
    issue_token,
    revoke_consent,
)
from tests.integration.conftest import CITIZEN_APP, HOSPITAL, REGULATOR
from tests.integration.served import free_port, serve_env, start
from tests.postgres import fresh_schema

pytestmark = pytest.mark.integration
GATEWAYS = 3
ROUNDS = 3
VISITORS = 12
ORIGIN = "onecard.local/audit"
_APPEND_LOCK = 0x0C4E  # gateway.store.postgres: the class of the log's append claim
_WRITER_PID = re.compile(r"onecard-writer pid=(\d+)")


class Cluster:
    """Three gateway processes on one schema; each restarts on its own port when killed."""

    def __init__(
        self, started: list[asyncio.subprocess.Process], data: Path, dsn: str, pki: PkiLayout
    ) -> None:
        self.started, self.pki, self.dsn = started, pki, dsn
        self.ports = [free_port() for _ in range(GATEWAYS)]
        self.envs = [
            serve_env(
                data,
                port,
                store="postgres",
                database_url=dsn,
                audit_checkpoint_interval_s="0.2",
                log_level="warning",
            )
            for port in self.ports
        ]
        self.procs: list[asyncio.subprocess.Process | None] = [None] * GATEWAYS

    async def start(self, i: int) -> None:
        self.procs[i] = await start(self.started, self.envs[i], self.pki, self.ports[i])

    def target(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    async def kill_the_appender(self) -> tuple[int, bool]:
        """SIGKILL the process whose transaction holds the log's append claim now (caught in
        ``pg_locks`` within two seconds), else a random one; which, and whether caught."""
        pids = {proc.pid: i for i, proc in enumerate(self.procs) if proc is not None}
        victim, caught = None, False
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for _ in range(2000):
                for (name,) in conn.execute(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                    " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                    " AND l.classid = %s",
                    (_APPEND_LOCK,),
                ):
                    found = _WRITER_PID.match(name or "")
                    if found and int(found[1]) in pids:
                        victim, caught = pids[int(found[1])], True
                if caught:
                    break
                await asyncio.sleep(0.001)
        if victim is None:
            victim = random.choice(list(pids.values()))
        proc = self.procs[victim]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        self.procs[victim] = None
        return victim, caught

    async def stop(self) -> None:
        for proc in self.procs:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


@contextlib.asynccontextmanager
async def channels(cluster: Cluster, org: str) -> AsyncIterator[list[grpc.aio.Channel]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(org_channel(cluster.target(i), cluster.pki, org))
            for i in range(GATEWAYS)
        ]


async def test_three_processes_one_log_survive_sigkill_of_the_appender(
    tmp_path: Path, population: Population, started: list[asyncio.subprocess.Process]
) -> None:
    data = tmp_path / "data"
    pki = ensure_pki(data / "pki")
    people = [p.id_number for p in population if p.card_status == CardStatus.NORMAL and p.schemes]
    people = people[:20]
    receipts: dict[int, bytes] = {}  # every released response's receipt
    handed_out: list[bytes] = []  # signed checkpoints gateways answered with during the run
    rng = random.Random(17)
    with fresh_schema() as dsn:
        cluster = Cluster(started, data, dsn, pki)
        for i in range(GATEWAYS):  # one after the other: the first creates the data dir's keys
            await cluster.start(i)
        await _each_promise_holds_across_processes(cluster, people[0])
        stop = asyncio.Event()

        async def visitor(seed: int) -> None:
            pick = random.Random(seed)
            while not stop.is_set():
                card = pick.choice(people)
                at, to = pick.randrange(GATEWAYS), pick.randrange(GATEWAYS)
                try:
                    async with org_channel(cluster.target(at), pki, CITIZEN_APP) as app:
                        token = await issue_token(app, card)
                    async with org_channel(cluster.target(to), pki, HOSPITAL) as hosp:
                        answer = await insurance_status(hosp, card, token)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE,), exc  # a killed process
                    await asyncio.sleep(0.05)
                    continue
                receipts[answer.receipt.leaf_index] = answer.receipt.leaf_hash

        async def regulator() -> None:
            while not stop.is_set():
                i = rng.randrange(GATEWAYS)
                with contextlib.suppress(grpc.aio.AioRpcError):
                    async with org_channel(cluster.target(i), pki, REGULATOR) as reg:
                        got = await audit_pb2_grpc.AuditServiceStub(reg).GetCheckpoint(
                            audit_pb2.GetCheckpointRequest(), timeout=5
                        )
                        handed_out.append(got.signed_checkpoint)
                await asyncio.sleep(0.1)

        load = [asyncio.create_task(visitor(n)) for n in range(VISITORS)]
        load.append(asyncio.create_task(regulator()))
        kills = []
        for _ in range(ROUNDS):
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            victim, caught = await cluster.kill_the_appender()
            kills.append(caught)
            await cluster.start(victim)  # its start-up self-check passes over the others' work
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*load)
        await cluster.stop()
        export = tmp_path / "export"
        with pytest.MonkeyPatch.context() as env:
            for name, value in cluster.envs[0].items():
                env.setenv(name, value)
            assert main(["audit", "export", "--out", str(export)]) == 0
            key = str(data / "audit-log.pub")
            assert main(["audit", "verify", str(export), "--key", key]) == 0
            leaves, newest = _leaves(dsn), _newest_note(dsn)

    print(f"{len(receipts)} released visits, {len(leaves)} entries, appender caught: {kills}")
    assert len(receipts) > 50 * ROUNDS  # the load was real
    assert any(kills)  # at least one SIGKILL landed inside an append transaction
    hashes = [hash_leaf(leaf) for leaf in leaves]
    verifiers = VerifierSet([Verifier.parse((data / "audit-log.pub").read_text().strip())])
    final = open_checkpoint(newest, verifiers, ORIGIN)
    assert final.size == len(leaves) and final.root_hash == root_of(hashes)
    for index, leaf_hash in receipts.items():
        assert hashes[index] == leaf_hash, f"entry {index} was released but not kept"
    for index in random.Random(1).sample(sorted(receipts), 25):
        proof = _inclusion_path(hashes, index)
        verify_inclusion(receipts[index], index, len(hashes), proof, final.root_hash)
    assert len(handed_out) > 10
    for note in handed_out:  # one tree across every failover
        checkpoint = open_checkpoint(note, verifiers, ORIGIN)
        assert checkpoint.root_hash == root_of(hashes[: checkpoint.size])


async def _each_promise_holds_across_processes(cluster: Cluster, card: str) -> None:
    """A token used at one process is refused at another; a consent revoked at one is refused
    at every one."""
    async with channels(cluster, CITIZEN_APP) as apps, channels(cluster, HOSPITAL) as hosps:
        token = await issue_token(apps[0], card)
        await insurance_status(hosps[1], card, token)
        with pytest.raises(grpc.aio.AioRpcError) as replayed:
            await insurance_status(hosps[2], card, token)
        assert reason(replayed.value) == "token_replayed", replayed.value.details()

        granted = await grant_consent(apps[0], card, consent_pb2.Grantee(org_id=HOSPITAL))
        on_it = consent_basis(granted.consent.consent_id)
        for hosp in hosps:
            await insurance_on(hosp, card, on_it)
        await revoke_consent(apps[2], card, granted.consent.consent_id)
        for hosp in hosps:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await insurance_on(hosp, card, on_it)
            assert reason(refused.value) == "consent_revoked", refused.value.details()


def _leaves(dsn: str) -> list[bytes]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT idx, leaf FROM audit_entries ORDER BY idx").fetchall()
    assert [idx for idx, _ in rows] == list(range(len(rows)))  # one sequence, no gap
    return [bytes(leaf) for _, leaf in rows]


def _newest_note(dsn: str) -> bytes:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
        (note,) = row.fetchone() or (b"",)
    return bytes(note)


class _Leaves:
    """A ``proof.NodeReader`` computing each node from the leaf hashes alone."""

    def __init__(self, hashes: list[bytes]) -> None:
        self._hashes = hashes

    def read_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        return [root_of(self._hashes[n.index << n.level : (n.index + 1) << n.level]) for n in ids]


def _inclusion_path(hashes: list[bytes], index: int) -> list[bytes]:
    """RFC 6962 inclusion proof of ``index`` computed from the leaf hashes alone."""
    return inclusion_proof(_Leaves(hashes), index, len(hashes))
