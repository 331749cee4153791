"""Crash test: SIGKILL the gateway process repeatedly under load, then check the log.

Every response the client received must have its entry, byte for byte, and the log must reopen,
keep one unbroken sequence, and match its newest signed checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
from pathlib import Path

import grpc
import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import card_pb2, card_pb2_grpc, common_pb2
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import root_of
from gateway.audit.rfc6962 import hash_leaf
from gateway.client import org_channel
from gateway.pki import ensure_pki
from gateway.ports import CardStatus
from tests.integration.conftest import CITIZEN_APP
from tests.integration.served import free_port, serve_env, start

pytestmark = pytest.mark.integration
ROUNDS = 4
WRITERS = 16


async def test_sigkill_under_load_loses_no_released_entry(
    tmp_path: Path, population: Population, started: list[asyncio.subprocess.Process]
) -> None:
    data = tmp_path / "data"
    pki = ensure_pki(data / "pki")
    port = free_port()
    env = serve_env(data, port, audit_checkpoint_interval_s="0", log_level="warning")
    card = common_pb2.CardRef(card_number=population.first(card_status=CardStatus.NORMAL).id_number)
    received: dict[int, bytes] = {}
    rng = random.Random(1101)

    async def writer(stub: card_pb2_grpc.CardServiceStub) -> None:
        request = card_pb2.IssueCardTokenRequest(card=card, purpose=common_pb2.PURPOSE_PATRQT)
        while True:
            try:
                response = await stub.IssueCardToken(request, timeout=5)
            except grpc.aio.AioRpcError:
                return  # the server died under us
            received[response.receipt.leaf_index] = response.receipt.leaf_hash

    for _ in range(ROUNDS):
        proc = await start(started, env, pki, port)
        async with org_channel(f"127.0.0.1:{port}", pki, CITIZEN_APP) as ch:
            stub = card_pb2_grpc.CardServiceStub(ch)
            tasks = [asyncio.create_task(writer(stub)) for _ in range(WRITERS)]
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await asyncio.gather(*tasks)

    # One clean start and stop: the log reopens after the last crash and signs a checkpoint.
    proc = await start(started, env, pki, port)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0

    with sqlite3.connect(data / "onecard.db") as conn:
        rows = conn.execute("SELECT idx, leaf FROM audit_entries ORDER BY idx").fetchall()
        (note,) = conn.execute(
            "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
    leaves = [bytes(leaf) for _, leaf in rows]
    assert [idx for idx, _ in rows] == list(range(len(rows)))
    hashes = [hash_leaf(leaf) for leaf in leaves]
    for i, leaf in enumerate(leaves):
        prev = hashes[i - 1].hex() if i else "0" * 64
        assert json.loads(leaf)["prev"] == prev
    assert len(received) > ROUNDS * WRITERS  # the load was real
    print(f"{len(received)} released responses, {len(leaves)} entries after {ROUNDS} SIGKILLs")
    for index, leaf_hash in received.items():
        assert hashes[index] == leaf_hash, f"entry {index} was released but not kept"
    verifiers = VerifierSet([Verifier.parse((data / "audit-log.pub").read_text().strip())])
    checkpoint = open_checkpoint(bytes(note), verifiers, "onecard.local/audit")
    assert checkpoint.size == len(leaves)
    assert checkpoint.root_hash == root_of(hashes)
