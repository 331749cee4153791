"""The real gateway never signs a fork: start-up refuses a damaged log, another origin or key;
an idle gateway still signs a checkpoint for its last receipt; keys rotate only on purpose."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from adapters.social_insurance.seed import Population
from gateway.api.onecard.v1 import audit_pb2, audit_pb2_grpc, card_pb2, card_pb2_grpc, common_pb2
from gateway.audit.checkpoint import open_checkpoint
from gateway.audit.note import Verifier, VerifierSet
from gateway.audit.proof import verify_inclusion
from gateway.bootstrap import Gateway
from gateway.cli import main
from gateway.client import org_channel
from gateway.errors import SetupError
from gateway.pki import PkiLayout
from gateway.ports import CardStatus
from tests.integration.calls import issue_token
from tests.integration.conftest import CITIZEN_APP, REGULATOR

pytestmark = pytest.mark.integration
ORIGIN = "onecard.local/audit"


async def exchanges(gateway: Gateway, pki: PkiLayout, population: Population, n: int) -> None:
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        for _ in range(n):
            await issue_token(app, person.id_number)


def checkpoint_rows(data: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(data / "onecard.db")) as conn:
        return list(conn.execute("SELECT size, note, created_at FROM audit_checkpoints"))


def flip_node(data: Path, row: int, level: int) -> bytes:
    """Flip one bit of the hash of the node at ``level`` stored in entry ``row``; the original."""
    with closing(sqlite3.connect(data / "onecard.db", isolation_level=None)) as conn:
        (nodes,) = conn.execute("SELECT nodes FROM audit_entries WHERE idx = ?", (row,)).fetchone()
        changed = bytearray(nodes)
        changed[level * 32] ^= 0x01
        conn.execute("UPDATE audit_entries SET nodes = ? WHERE idx = ?", (bytes(changed), row))
    return bytes(nodes)


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL: tests/gateway/store)
async def test_start_up_refuses_a_flipped_node_and_another_origin_without_signing(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=3600)
    await exchanges(gateway, pki, population, 6)
    await gateway.stop(0)  # signs checkpoint 6: its border is (2, 0) in entry 3, (1, 2) in 5
    before = checkpoint_rows(data)
    assert max(row[0] for row in before) == 6

    original = flip_node(data, 5, 1)
    with pytest.raises(SetupError) as caught:
        await gateway_factory()
    message = str(caught.value)
    assert "audit log damaged at entries [0, 6)" in message
    assert "onecard audit verify" in message
    assert checkpoint_rows(data) == before

    with closing(sqlite3.connect(data / "onecard.db", isolation_level=None)) as conn:
        conn.execute("UPDATE audit_entries SET nodes = ? WHERE idx = 5", (original,))
    with pytest.raises(SetupError, match=r"'elsewhere\.example/audit' is not this log's origin"):
        await gateway_factory(audit_origin="elsewhere.example/audit")
    assert checkpoint_rows(data) == before
    assert (data / "audit-log.pub").read_text().startswith(ORIGIN + "+")

    gateway = await gateway_factory()  # repaired and as configured before: it serves again
    await exchanges(gateway, pki, population, 1)
    await gateway.stop(0)
    assert max(row[0] for row in checkpoint_rows(data)) == 7


def serve_config(tmp_path: Path, pki: PkiLayout, **settings: object) -> Path:
    config = tmp_path / "gw.toml"
    lines = [f'data_dir = "{tmp_path / "data"}"', f'pki_dir = "{pki.directory}"']
    lines += ["listen_port = 0", "metrics_port = 0"]
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in settings.items()]
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL: tests/gateway/store)
@pytest.mark.parametrize("value", ["'x'", "7"])
async def test_a_nodes_blob_of_another_type_is_a_one_line_error_from_serve(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
    started: list[asyncio.subprocess.Process],
    value: str,
) -> None:
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    await exchanges(gateway, pki, population, 3)
    await gateway.stop(0)
    with closing(sqlite3.connect(tmp_path / "data" / "onecard.db", isolation_level=None)) as c:
        c.execute(f"UPDATE audit_entries SET nodes = {value} WHERE idx = 1")
    before = checkpoint_rows(tmp_path / "data")

    config = serve_config(tmp_path, pki)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    started.append(proc)
    _, raw = await asyncio.wait_for(proc.communicate(), timeout=60)
    err = raw.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1
    assert "entries [0, 2)" in err
    assert "not a BLOB" in err
    assert "Traceback" not in err
    assert checkpoint_rows(tmp_path / "data") == before


async def test_an_idle_gateway_signs_the_last_receipt_within_the_interval(
    gateway_factory: Callable[..., Any], pki: PkiLayout, population: Population, tmp_path: Path
) -> None:
    interval = 2.0
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=interval)
    person = population.first(card_status=CardStatus.NORMAL)
    async with org_channel(gateway.target, pki, CITIZEN_APP) as app:
        await issue_token(app, person.id_number)  # the first batch after a start signs
        issued = await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=person.id_number),
                purpose=common_pb2.PURPOSE_PATRQT,
            )
        )
    receipt = issued.receipt
    assert receipt.leaf_index == 1

    await asyncio.sleep(interval + 0.5)  # no traffic at all
    signed = dict(await gateway.audit_log.checkpoints())  # read before any call is audited
    assert max(signed) == 2

    public_key = (tmp_path / "data" / "audit-log.pub").read_text().strip()
    verifiers = VerifierSet([Verifier.parse(public_key)])
    async with org_channel(gateway.target, pki, REGULATOR) as reg:
        audit = audit_pb2_grpc.AuditServiceStub(reg)
        fetched = await audit.GetCheckpoint(audit_pb2.GetCheckpointRequest())
        checkpoint = open_checkpoint(fetched.signed_checkpoint, verifiers, ORIGIN)
        assert checkpoint.size >= 2
        proof = await audit.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(leaf_index=1, tree_size=checkpoint.size)
        )
    verify_inclusion(
        receipt.leaf_hash, receipt.leaf_index, checkpoint.size, list(proof.hashes),
        checkpoint.root_hash,
    )  # fmt: skip


@pytest.mark.sqlite_only  # the SQLite file itself (PostgreSQL: tests/gateway/store)
async def test_rotate_key_keeps_the_old_key_published_and_refuses_while_served(
    gateway_factory: Callable[..., Any],
    pki: PkiLayout,
    population: Population,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "data"
    config = serve_config(tmp_path, pki)
    gateway: Gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    await exchanges(gateway, pki, population, 2)
    capsys.readouterr()
    assert main(["audit", "rotate-key", "--config", str(config)]) == 2
    assert "stop it first" in capsys.readouterr().err
    await gateway.stop(0)
    old_key = (data / "audit-log.pub").read_text().strip()

    assert main(["audit", "rotate-key", "--config", str(config)]) == 0
    published = (data / "audit-log.pub").read_text().splitlines()
    assert published[0] == old_key
    assert len(published) == 2
    retired = [p.name for p in (data / "keys").iterdir() if ".retired-" in p.name]
    assert len(retired) == 1

    gateway = await gateway_factory(audit_checkpoint_interval_s=0)
    await exchanges(gateway, pki, population, 1)
    await gateway.stop(0)
    old, new = (VerifierSet([Verifier.parse(key)]) for key in published)
    notes = dict((size, note) for size, note, _ in checkpoint_rows(data))
    assert open_checkpoint(notes[2], old, ORIGIN).size == 2
    assert open_checkpoint(notes[3], new, ORIGIN).size == 3

    (data / "keys" / "audit-log.key").rename(data / "keys" / "new.key")
    (data / "keys" / retired[0]).rename(data / "keys" / "audit-log.key")
    with pytest.raises(SetupError, match="is a retired key of this log"):
        await gateway_factory()
