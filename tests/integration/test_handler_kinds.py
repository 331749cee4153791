"""Every handler of an audited service is audited or refused: none is passed through."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.api.onecard.v1 import common_pb2
from gateway.audit.signer import Ed25519FileSigner
from gateway.audit.stage import AuditStage
from gateway.client import org_channel
from gateway.client import refusal_reason as reason
from gateway.interceptor import GatewayInterceptor
from gateway.metrics import Metrics
from gateway.orgs import OrgRegistry
from gateway.pki import PkiLayout
from gateway.store import SqliteStore
from gateway.store.sqlite_audit import SqliteAuditLog
from tests.integration.conftest import HOSPITAL

pytestmark = pytest.mark.integration
SERVICE = "onecard.v1.UploadService"
_ident = (lambda b: b, lambda b: b)
reached: list[str] = []


async def _upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
    reached.append("upload")
    return b"stored"


async def _chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    reached.append("chat")
    yield b"hello"


async def _echo(request: common_pb2.CardRef, context: Any) -> common_pb2.CardRef:
    return request


@pytest.fixture
async def served(tmp_path: Path, pki: PkiLayout) -> AsyncIterator[tuple[str, SqliteAuditLog]]:
    store = SqliteStore(tmp_path / "onecard.db")
    log = SqliteAuditLog(
        store,
        Ed25519FileSigner.generate(tmp_path / "log.key", "test.local/log"),
        checkpoint_interval_s=3600,
    )
    interceptor = GatewayInterceptor(
        OrgRegistry.load(pki.orgs_file),
        Metrics.create(),
        AuditStage(log),
        audited_services={SERVICE},
        request_budget_s=2.0,
        request_id_key=b"k" * 32,
    )
    server = grpc.aio.server(interceptors=[interceptor])
    handlers = {
        "Upload": grpc.stream_unary_rpc_method_handler(_upload, *_ident),
        "Chat": grpc.stream_stream_rpc_method_handler(_chat, *_ident),
        "Echo": grpc.unary_unary_rpc_method_handler(
            _echo, common_pb2.CardRef.FromString, common_pb2.CardRef.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield f"127.0.0.1:{port}", log
    await server.stop(0)
    await store.close()


def _requests() -> Iterable[bytes]:
    return iter([b"a", b"b"])


async def test_client_streaming_handlers_are_refused_and_audited(
    served: tuple[str, SqliteAuditLog], pki: PkiLayout
) -> None:
    target, log = served
    reached.clear()
    async with org_channel(target, pki, HOSPITAL) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as upload:
            await channel.stream_unary(f"/{SERVICE}/Upload")(_requests())
        with pytest.raises(grpc.aio.AioRpcError) as chat:
            async for _ in channel.stream_stream(f"/{SERVICE}/Chat")(_requests()):
                pass
        echoed = await channel.unary_unary(f"/{SERVICE}/Echo")(b"\x08\x01")
    for err in (upload.value, chat.value):
        assert err.code() is grpc.StatusCode.UNIMPLEMENTED
        assert reason(err) == "not_supported"
    assert reached == []  # neither handler ran
    assert echoed == b"\x08\x01"
    records = [json.loads(e.leaf)["r"] for e in await log.entries(0, 10)]
    assert [(r["rpc"], r["outcome"]) for r in records] == [
        (f"{SERVICE}/Upload", "UNIMPLEMENTED"),
        (f"{SERVICE}/Chat", "UNIMPLEMENTED"),
        (f"{SERVICE}/Echo", "OK"),
    ]
