"""The reference eligibility server: Cal-ITP's ``/verify`` on loopback, deciding from ``registers``.

Built on the ``eligibility-api`` package's server helpers (``get_token_payload``,
``create_response_payload``, ``make_token``), the ones cal-itp/eligibility-server is built on,
and answering as that server does: ``GET /verify`` with the request token in
``Authorization`` (``Bearer`` optional) and, when it has one, its API key in
``X-Server-API-Key``; a missing header or a wrong key is 403, a token it cannot open is 400 with
a JSON message, a ``sub`` that is not a resident ID number is 400 with a token whose claims hold
``error``; otherwise 200 with a token whose ``eligibility`` lists the asked types the person
qualifies for today. The token is sent as a JSON string, as Flask-RESTful sends it.

The helpers take keys as PEM and parse them on every call; a private key's load includes
OpenSSL's key check (tens of milliseconds, measured ~0.1 s per request here), so they run in a
worker thread (the parse releases the GIL) and the event loop, the gateway's when the server
runs in-process, stays free. It logs neither the ``sub`` nor the ``name`` nor the answer. It
binds 127.0.0.1 unless told otherwise and refuses wildcard addresses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from eligibility_api import server as cal_itp

from adapters.eligibility.keys import PartyKeys
from adapters.eligibility.registers import Registers
from adapters.eligibility.tokens import Profile
from adapters.loopback import Site, serve
from adapters.social_insurance.seed import Population

__all__ = [
    "ISSUER",
    "VERIFY_PATH",
    "ReferenceServer",
    "build_app",
    "service_day",
    "start_reference_server",
]

_log = structlog.get_logger(__name__)

ISSUER = "onecard-eligibility-reference"
VERIFY_PATH = "/verify"
API_KEY_HEADER = "X-Server-API-Key"
_SUB = re.compile(r"[0-9]{17}[0-9X]")
_CHINA = dt.timezone(dt.timedelta(hours=8))


def service_day() -> dt.date:
    """The day the reference server decides on, in China Standard Time (UTC+8)."""
    return dt.datetime.now(_CHINA).date()


@dataclass(frozen=True, slots=True)
class _Verifier:
    """``GET /verify``: open the request with the helpers, decide, seal the answer."""

    registers: Registers
    server_private: bytes  # PEM, made once (the helpers parse it again on every call)
    gateway_public: bytes  # PEM
    profile: Profile
    api_key: str | None
    today: Callable[[], dt.date]

    async def verify(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization")
        given_key = request.headers.get(API_KEY_HEADER)
        if authorization is None or (
            self.api_key is not None and not _same(given_key, self.api_key)
        ):
            return web.json_response({"error": "403 Forbidden: Forbidden"}, status=403)
        payload = await asyncio.to_thread(self._open, authorization.split(" ")[-1])
        if not isinstance(payload, dict):
            return web.json_response({"message": "Invalid token format"}, status=400)
        try:
            sub, name, types = payload["sub"], payload["name"], list(payload["eligibility"])
            answer = cal_itp.create_response_payload(token_payload=payload, issuer=ISSUER)
        except (KeyError, TypeError):
            return web.json_response({"message": "Bad request"}, status=400)
        if isinstance(sub, str) and _SUB.fullmatch(sub) and isinstance(name, str):
            answer["eligibility"] = self.registers.qualifies(sub, name, types, self.today())
            status = 200
        else:
            answer["error"] = {"sub": "invalid"}
            status = 400
        _log.info("eligibility_reference_answered", status=status, asked=len(types))
        return _token_response(await asyncio.to_thread(self._seal, answer), status)

    def _open(self, token: str) -> dict[str, Any] | bool:
        opened: dict[str, Any] | bool = cal_itp.get_token_payload(
            token=token,
            jwe_encryption_alg=self.profile.jwe_alg,
            jwe_cek_enc=self.profile.jwe_enc,
            server_private_key=self.server_private,
            jws_signing_alg=self.profile.jws_alg,
            client_public_key=self.gateway_public,
        )
        return opened

    def _seal(self, payload: dict[str, Any]) -> str:
        token: str = cal_itp.make_token(
            payload=payload,
            jws_signing_alg=self.profile.jws_alg,
            server_private_key=self.server_private,
            jwe_encryption_alg=self.profile.jwe_alg,
            jwe_cek_enc=self.profile.jwe_enc,
            client_public_key=self.gateway_public,
        )
        return token


def build_app(
    registers: Registers,
    keys: PartyKeys,
    *,
    profile: Profile | None = None,
    api_key: str | None = None,
    today: Callable[[], dt.date] = service_day,
) -> web.Application:
    """The aiohttp application answering ``/verify`` (and ``/healthcheck``) for ``registers``;
    ``keys.own`` is the server's private key, ``keys.peer`` the gateway's public key."""
    verifier = _Verifier(
        registers, _private_pem(keys), _public_pem(keys), profile or Profile(), api_key, today
    )
    app = web.Application()
    app.router.add_get(VERIFY_PATH, verifier.verify)
    app.router.add_get("/healthcheck", _healthcheck)
    return app


@dataclass(frozen=True, slots=True)
class ReferenceServer:
    """A running reference eligibility server; ``verify_url`` is its ``/verify`` address."""

    site: Site
    registers: Registers

    @property
    def host(self) -> str:
        return self.site.host

    @property
    def port(self) -> int:
        return self.site.port

    @property
    def url(self) -> str:
        return self.site.url

    @property
    def verify_url(self) -> str:
        return self.url + VERIFY_PATH

    async def close(self) -> None:
        await self.site.close()


async def start_reference_server(
    keys: PartyKeys,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    population: Population | None = None,
    profile: Profile | None = None,
    api_key: str | None = None,
    today: Callable[[], dt.date] = service_day,
) -> ReferenceServer:
    """Start the reference eligibility server on ``host:port`` (port 0: any free port)."""
    registers = Registers.build(population or Population.default(), today())
    app = build_app(registers, keys, profile=profile, api_key=api_key, today=today)
    server = ReferenceServer(
        await serve(app, host, port, "reference eligibility server"), registers
    )
    _log.info("eligibility_reference_started", url=server.verify_url)
    return server


def _token_response(token: str, status: int) -> web.Response:
    return web.Response(
        text=json.dumps(token) + "\n", status=status, content_type="application/json"
    )


async def _healthcheck(request: web.Request) -> web.Response:
    return web.Response(text="Healthy")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _private_pem(keys: PartyKeys) -> bytes:
    pem: bytes = keys.own.export_to_pem(private_key=True, password=None)
    return pem


def _public_pem(keys: PartyKeys) -> bytes:
    pem: bytes = keys.peer.export_to_pem(private_key=False, password=None)
    return pem
