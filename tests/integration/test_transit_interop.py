"""Interoperability with code none of ours is inside, both ways, over real HTTP on loopback.

- Our adapter (``EligibilityClient``) against a server assembled only from ``eligibility-api``'s
  server helpers, the way cal-itp/eligibility-server is (a table of ``sub``, ``name`` and types
  stands in for its database).
- ``eligibility-api``'s own ``Client`` (requests, the one benefits apps use) against our
  reference eligibility server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from eligibility_api import server as cal_itp
from eligibility_api.client import ApiError, Client
from eligibility_api.tokens import ResponseToken

from adapters.eligibility import EligibilityClient, Profile, start_reference_server
from adapters.eligibility.keys import PartyKeys, reference_pair
from adapters.eligibility.reference import API_KEY_HEADER, ReferenceServer
from adapters.social_insurance.seed import Population
from gateway.errors import BackendUnavailable
from gateway.ports import Concession
from tests.integration.served import free_port

pytestmark = pytest.mark.integration

SENIOR, SENIOR_NAME = "11010519491231002X", "张秀英"
EMPLOYEE, EMPLOYEE_NAME = "110101199003074477", "李明"
ALGS = {
    "jws_signing_alg": "RS256",
    "jwe_encryption_alg": "RSA-OAEP",
    "jwe_cek_enc": "A256CBC-HS512",
}


def _pem(keys: PartyKeys) -> tuple[bytes, bytes]:
    """(own private key, peer public key) as PEM, the way eligibility-api takes keys."""
    return (
        keys.own.export_to_pem(private_key=True, password=None),
        keys.peer.export_to_pem(private_key=False, password=None),
    )


# -- our adapter against a server made of eligibility-api's helpers ------------------------------


@dataclass
class HelperServer:
    """cal-itp/eligibility-server's ``Verify.get``, reduced to the helpers and a table."""

    keys: PartyKeys
    table: dict[tuple[str, str], set[str]]
    payloads: list[dict[str, Any]] = field(default_factory=list)

    async def verify(self, request: web.Request) -> web.Response:
        server_private, client_public = _pem(self.keys)
        token = request.headers["Authorization"].split(" ")[-1]
        payload = cal_itp.get_token_payload(
            token, ALGS["jwe_encryption_alg"], ALGS["jwe_cek_enc"], server_private,
            ALGS["jws_signing_alg"], client_public,
        )  # fmt: skip
        if not payload:
            return web.json_response({"message": "Invalid token format"}, status=400)
        self.payloads.append(payload)
        answer = cal_itp.create_response_payload(payload, issuer="eligibility_server.app")
        known = self.table.get((payload["sub"], payload["name"]), set())
        answer["eligibility"] = sorted(known & set(payload["eligibility"]))
        sealed = cal_itp.make_token(
            answer, ALGS["jws_signing_alg"], server_private, ALGS["jwe_encryption_alg"],
            ALGS["jwe_cek_enc"], client_public,
        )  # fmt: skip
        return web.json_response(sealed)


@pytest.fixture
async def helper_server(tmp_path: Path) -> AsyncIterator[tuple[HelperServer, str, PartyKeys]]:
    gateway_keys, server_keys = reference_pair(tmp_path / "keys")
    server = HelperServer(server_keys, {(SENIOR, SENIOR_NAME): {"senior", "courtesy_card"}})
    app = web.Application()
    app.router.add_get("/verify", server.verify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield server, f"http://127.0.0.1:{runner.addresses[0][1]}/verify", gateway_keys
    await runner.cleanup()


async def test_our_adapter_speaks_to_a_server_built_only_from_eligibility_api(
    helper_server: tuple[HelperServer, str, PartyKeys],
) -> None:
    server, url, keys = helper_server
    client = EligibilityClient(url, keys, Profile(server_issuer="eligibility_server.app"))
    try:
        yes = await client.check(SENIOR, SENIOR_NAME, Concession.SENIOR, agency="t-1", timeout=5)
        wrong_name = await client.check(SENIOR, "张秀", Concession.SENIOR, agency="t-1", timeout=5)
        other = await client.check(SENIOR, SENIOR_NAME, Concession.STUDENT, agency="t-1", timeout=5)
    finally:
        await client.close()

    assert (yes.eligible, wrong_name.eligible, other.eligible) == (True, False, False)
    first = server.payloads[0]
    assert {k: first[k] for k in ("iss", "agency", "sub", "name", "eligibility")} == {
        "iss": "onecard-gateway",
        "agency": "t-1",
        "sub": SENIOR,
        "name": SENIOR_NAME,
        "eligibility": ["senior"],
    }
    assert len({p["jti"] for p in server.payloads}) == 3  # a fresh jti per request
    assert abs(first["iat"] - dt.datetime.now(dt.UTC).timestamp()) < 600


async def test_our_adapter_refuses_that_server_when_it_names_another_issuer(
    helper_server: tuple[HelperServer, str, PartyKeys],
) -> None:
    _, url, keys = helper_server
    client = EligibilityClient(url, keys, Profile(server_issuer="someone-else"))
    try:
        with pytest.raises(BackendUnavailable) as info:
            await client.check(SENIOR, SENIOR_NAME, Concession.SENIOR, agency="t-1", timeout=5)
    finally:
        await client.close()
    assert info.value.reason == "backend_unverified"


# -- eligibility-api's Client against our reference server ---------------------------------------


@pytest.fixture
async def our_server(tmp_path: Path) -> AsyncIterator[tuple[ReferenceServer, PartyKeys]]:
    gateway_keys, server_keys = reference_pair(tmp_path / "keys")
    server = await start_reference_server(
        server_keys, population=Population.default(), api_key="k-123"
    )
    yield server, gateway_keys
    await server.close()


def _their_client(server: ReferenceServer, keys: PartyKeys, api_key: str | None) -> Client:
    client_private, server_public = _pem(keys)
    return Client(
        verify_url=server.verify_url,
        issuer="benefits-app",
        agency="transit-bj-001",
        jws_signing_alg=ALGS["jws_signing_alg"],
        client_private_key=client_private,
        jwe_encryption_alg=ALGS["jwe_encryption_alg"],
        jwe_cek_enc=ALGS["jwe_cek_enc"],
        server_public_key=server_public,
        headers={API_KEY_HEADER: api_key} if api_key else {},
        timeout=5,
    )


async def test_eligibility_api_client_gets_answers_from_our_reference_server(
    our_server: tuple[ReferenceServer, PartyKeys],
) -> None:
    server, keys = our_server
    client = _their_client(server, keys, "k-123")
    types = ["senior", "disabled", "student"]

    senior: ResponseToken = await asyncio.to_thread(client.verify, SENIOR, SENIOR_NAME, types)
    employee: ResponseToken = await asyncio.to_thread(client.verify, EMPLOYEE, EMPLOYEE_NAME, types)
    impostor: ResponseToken = await asyncio.to_thread(client.verify, SENIOR, EMPLOYEE_NAME, types)
    bad_sub: ResponseToken = await asyncio.to_thread(client.verify, "not-an-id", "x", types)

    assert (senior.eligibility, senior.error) == (["senior"], None)
    assert (employee.eligibility, employee.error) == ([], None)
    assert (impostor.eligibility, impostor.error) == ([], None)
    assert (bad_sub.eligibility, bad_sub.error) == ([], {"sub": "invalid"})


async def test_our_reference_server_refuses_a_client_without_its_api_key(
    our_server: tuple[ReferenceServer, PartyKeys],
) -> None:
    server, keys = our_server
    for api_key in (None, "wrong"):
        client = _their_client(server, keys, api_key)
        with pytest.raises(ApiError):  # 403: not a status the protocol answers with a token
            await asyncio.to_thread(client.verify, SENIOR, SENIOR_NAME, ["senior"])


async def test_onecard_backends_serves_eligibility_to_their_client_with_the_key_files_it_names(
    tmp_path: Path, started: list[asyncio.subprocess.Process]
) -> None:
    keys_dir = tmp_path / "keys"
    ports = [str(free_port()), str(free_port())]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "backends", "--port", ports[0],
        "--eligibility-port", ports[1], "--keys-dir", str(keys_dir),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    started.append(proc)
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    announced = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
    signing_key = keys_dir / "eligibility-gateway.pem"
    server_key = keys_dir / "eligibility-reference-server.pub.pem"
    assert f"http://127.0.0.1:{ports[1]}/verify" in announced
    assert str(signing_key) in announced and str(server_key) in announced

    client = Client(
        verify_url=f"http://127.0.0.1:{ports[1]}/verify", issuer="benefits-app", agency="t",
        jws_signing_alg="RS256", client_private_key=signing_key.read_bytes(),
        jwe_encryption_alg="RSA-OAEP", jwe_cek_enc="A256CBC-HS512",
        server_public_key=server_key.read_bytes(), timeout=5,
    )  # fmt: skip
    answer: ResponseToken = await asyncio.to_thread(
        client.verify, SENIOR, SENIOR_NAME, ["senior", "student"]
    )

    assert (answer.eligibility, answer.error) == (["senior"], None)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
