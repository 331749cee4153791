"""How the gateway plugs in the eligibility server: its row's wiring function.

``wire_backend`` takes the ``[backends.eligibility]`` settings group. With a ``url`` (the
server's verify URL, e.g. ``https://elig.example.org/verify``) it needs the gateway's private
key and the server's public key as files; without one it starts the reference server
in-process on 127.0.0.1, with both key pairs made in ``keys_dir`` at first start. The group's
``credentials`` table carries the adapter's names (docs/backends.md):

================  ==========================================  ========================
name              what                                        default
================  ==========================================  ========================
``signing_key``   the gateway's private key file (PEM, JWK)   (required with a url)
``server_key``    the server's public key file (PEM, JWK)     (required with a url)
``api_key``       the server's API key, sent in a header      none
``api_key_header``  that header                               ``X-Server-API-Key``
``jws_alg``       signing algorithm                           ``RS256``
``jwe_alg``       key encryption algorithm                    ``RSA-OAEP``
``jwe_enc``       content encryption algorithm                ``A256CBC-HS512``
``issuer``        our ``iss``                                 ``onecard-gateway``
``server_issuer`` the ``iss`` answers must carry              any (reference: checked)
``max_age_s``     how old an answer may be                    300
``clock_skew_s``  clock difference tolerated                  60
``answer_ttl_s``  how long an operator may rely on an answer  3600
================  ==========================================  ========================
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.eligibility.client import EligibilityClient
from adapters.eligibility.keys import (
    KeyFileError,
    PartyKeys,
    load_private_key,
    load_public_key,
    reference_pair,
)
from adapters.eligibility.reference import API_KEY_HEADER, ISSUER, start_reference_server
from adapters.eligibility.tokens import Profile
from gateway.config import BackendSettings, ConfigError
from gateway.ports import ELIGIBILITY_BACKEND, Provided, WiredBackend

NAME = "eligibility"


class _Options(BaseModel):
    """The credentials table, parsed (strings from the settings file, checked here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signing_key: Path | None = None
    server_key: Path | None = None
    api_key: str | None = Field(None, min_length=1)
    api_key_header: str = Field(API_KEY_HEADER, min_length=1)
    jws_alg: str = "RS256"
    jwe_alg: str = "RSA-OAEP"
    jwe_enc: str = "A256CBC-HS512"
    issuer: str = Field("onecard-gateway", min_length=1)
    server_issuer: str = ""
    max_age_s: float = 300.0
    clock_skew_s: float = 60.0
    answer_ttl_s: float = Field(3600.0, gt=0, le=7 * 86400)


async def wire_backend(settings: BackendSettings) -> WiredBackend:
    """Start what the back end needs; on failure, stop what was started and raise."""
    options = _options(settings)
    profile = _profile(options, reference=settings.url is None)
    api_key = (options.api_key_header, options.api_key) if options.api_key else None
    async with contextlib.AsyncExitStack() as started:
        if settings.url is None:
            if options.signing_key or options.server_key:
                raise ConfigError(
                    f"backends.{NAME}.credentials: signing_key and server_key are for a real "
                    f"server (set backends.{NAME}.url); the reference server's keys are made "
                    f"in {settings.keys_dir}"
                )
            gateway_keys, server_keys = _reference_keys(settings.keys_dir)
            reference = await start_reference_server(
                server_keys, profile=profile, api_key=options.api_key
            )
            started.push_async_callback(reference.close)
            url = reference.verify_url
        else:
            url, gateway_keys = settings.url, _server_keys(options)
        client = EligibilityClient(
            url, gateway_keys, profile, answer_ttl_s=options.answer_ttl_s, api_key=api_key
        )
        started.push_async_callback(client.close)  # closed before the reference server
        close = started.pop_all().aclose
    return WiredBackend(provides=(Provided(ELIGIBILITY_BACKEND, client),), close=close, url=url)


def _options(settings: BackendSettings) -> _Options:
    raw = {name: secret.get_secret_value() for name, secret in settings.credentials.items()}
    try:
        return _Options.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"backends.{NAME}.credentials.{where}: {error['msg']}") from None


def _profile(options: _Options, *, reference: bool) -> Profile:
    try:
        return Profile(
            jws_alg=options.jws_alg,
            jwe_alg=options.jwe_alg,
            jwe_enc=options.jwe_enc,
            issuer=options.issuer,
            server_issuer=ISSUER if reference else options.server_issuer,
            max_age_s=options.max_age_s,
            clock_skew_s=options.clock_skew_s,
        )
    except ValueError as exc:
        raise ConfigError(f"backends.{NAME}.credentials: {exc}") from None


def _reference_keys(keys_dir: Path | None) -> tuple[PartyKeys, PartyKeys]:
    if keys_dir is None:
        raise ConfigError(f"backends.{NAME}.keys_dir: needed to keep the reference server's keys")
    try:
        return reference_pair(keys_dir)
    except KeyFileError as exc:
        raise ConfigError(f"backends.{NAME}: {exc}") from None


def _server_keys(options: _Options) -> PartyKeys:
    signing, server = options.signing_key, options.server_key
    if signing is None or server is None:
        missing = [n for n in ("signing_key", "server_key") if getattr(options, n) is None]
        raise ConfigError(
            f"backends.{NAME}.credentials: {' and '.join(missing)} needed with a url: the "
            f"gateway's private key file and the eligibility server's public key file "
            f"(PEM or JWK; docs/backends.md)"
        )
    try:
        return PartyKeys(load_private_key(signing), load_public_key(server))
    except KeyFileError as exc:
        raise ConfigError(f"backends.{NAME}.credentials: {exc}") from None
