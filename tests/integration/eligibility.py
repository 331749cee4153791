"""Eligibility servers for the transit tests: the reference one "far away", and a faulty one.

``far_reference`` runs the reference eligibility server as a separate back end (the gateway is
pointed at its URL with key files, as at a real server). ``FaultyServer`` is built only from
``eligibility-api``'s server helpers, like cal-itp/eligibility-server, answering "eligible" to
everything, and can be told to misbehave: sign with another key, answer with an old ``iat``,
another request's ``jti``, garbage, or not at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from eligibility_api import server as cal_itp
from jwcrypto import jwk

from adapters.eligibility import PartyKeys, ReferenceServer, reference_pair, start_reference_server
from adapters.eligibility.keys import GATEWAY_KEY_FILE, SERVER_KEY_FILE
from adapters.social_insurance.seed import Population

ALGS = {
    "jws_signing_alg": "RS256",
    "jwe_encryption_alg": "RSA-OAEP",
    "jwe_cek_enc": "A256CBC-HS512",
}


@dataclass(frozen=True)
class KeyFiles:
    """The gateway's private key file and the server's public key file, and both sides' keys."""

    signing_key: Path
    server_key: Path
    gateway: PartyKeys
    server: PartyKeys

    def credentials(self) -> dict[str, str]:
        return {"signing_key": str(self.signing_key), "server_key": str(self.server_key)}


def key_files(directory: Path) -> KeyFiles:
    gateway, server = reference_pair(directory)
    return KeyFiles(
        directory / GATEWAY_KEY_FILE,
        (directory / SERVER_KEY_FILE).with_suffix(".pub.pem"),
        gateway,
        server,
    )


@asynccontextmanager
async def far_reference(
    keys: KeyFiles, population: Population | None = None
) -> AsyncIterator[ReferenceServer]:
    server = await start_reference_server(keys.server, population=population)
    try:
        yield server
    finally:
        await server.close()


def _pem(key: jwk.JWK, *, private: bool) -> bytes:
    pem: bytes = key.export_to_pem(private_key=private, password=None)
    return pem


class FaultyServer:
    """``GET /verify`` from the helpers; ``mode`` says how to misbehave ("ok": not at all)."""

    def __init__(self, keys: KeyFiles) -> None:
        self.mode = "ok"
        self.url = ""
        self.calls = 0
        self._own = _pem(keys.server.own, private=True)
        self._gateway = _pem(keys.server.peer, private=False)
        self._rogue = _pem(jwk.JWK.generate(kty="RSA", size=2048), private=True)
        self._release = asyncio.Event()

    async def verify(self, request: web.Request) -> web.Response:
        self.calls += 1
        token = request.headers.get("Authorization", "").split(" ")[-1]
        payload: dict[str, Any] | bool = cal_itp.get_token_payload(
            token=token,
            jwe_encryption_alg=ALGS["jwe_encryption_alg"],
            jwe_cek_enc=ALGS["jwe_cek_enc"],
            server_private_key=self._own,
            jws_signing_alg=ALGS["jws_signing_alg"],
            client_public_key=self._gateway,
        )
        assert isinstance(payload, dict), "the gateway's request must open with the helpers"
        if self.mode == "hang":
            await asyncio.wait_for(self._release.wait(), 30)
        if self.mode == "garbage":
            return web.json_response("this is not a token")
        if self.mode == "http_500":
            return web.json_response({"error": "500 Internal Server Error"}, status=500)
        answer = cal_itp.create_response_payload(token_payload=payload, issuer="faulty")
        answer["eligibility"] = list(payload["eligibility"])
        if self.mode == "wrong_jti":
            answer["jti"] = str(uuid.uuid4())
        if self.mode == "expired":
            answer["iat"] -= 3600
        if self.mode == "error":
            del answer["eligibility"]
            answer["error"] = {"sub": "invalid"}
        signer = self._rogue if self.mode == "bad_signature" else self._own
        sealed = cal_itp.make_token(
            payload=answer,
            jws_signing_alg=ALGS["jws_signing_alg"],
            server_private_key=signer,
            jwe_encryption_alg=ALGS["jwe_encryption_alg"],
            jwe_cek_enc=ALGS["jwe_cek_enc"],
            client_public_key=self._gateway,
        )
        return web.json_response(sealed, status=400 if self.mode == "error" else 200)

    def release(self) -> None:
        self._release.set()


@asynccontextmanager
async def faulty_server(keys: KeyFiles) -> AsyncIterator[FaultyServer]:
    server = FaultyServer(keys)
    app = web.Application()
    app.router.add_get("/verify", server.verify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/verify"
        yield server
    finally:
        server.release()
        await runner.cleanup()
