"""The eligibility adapter: ``EligibilityBackend`` over the Cal-ITP Eligibility Verification API.

``EligibilityClient`` sends ``GET <verify url>`` with the sealed request token in
``Authorization: Bearer`` (and the server's API key in its header, when it has one), opens the
answer (``tokens.open_answer``: decrypt, verify, same ``jti``, fresh) and turns it into a
predicate and its validity: until ``answer_ttl_s`` from now, or the answer's ``exp`` if sooner.
One pooled ``aiohttp.ClientSession`` per client, made in the running loop. Every failure is
named for the shared table of ``adapters.errors``:

=============================================  ================
timeout (connect, send, answer or body)        ``TIMEOUT``
connection refused or reset                    ``UNREACHABLE``
HTTP status other than 200 and 400             ``HTTP_STATUS``
an answer whose claims carry ``error``         ``REFUSED``
body too large, not a token, undecryptable,    ``MALFORMED``
claims of the wrong shape
bad signature, another ``jti``, stale          ``UNVERIFIED``
=============================================  ================

Logged events (``eligibility_*``) carry the request's ``jti``, the concession and which check
failed; never the ID number, the name, or anything the server wrote.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable

import aiohttp
import structlog

from adapters.eligibility import tokens
from adapters.eligibility.keys import PartyKeys
from adapters.errors import Failure, backend_error, map_transport_errors
from adapters.http import PooledSession, read_capped
from gateway.ports import Concession, ConcessionAnswer

_log = structlog.get_logger(__name__)

_BACKEND = "eligibility server"
_EVENTS = "eligibility"
_MAX_BODY_BYTES = 64 * 1024
_ANSWERED = frozenset({200, 400})  # both carry a token (400: its claims hold ``error``)


class EligibilityClient:
    """Implements ``gateway.ports.EligibilityBackend``."""

    def __init__(
        self,
        verify_url: str,
        keys: PartyKeys,
        profile: tokens.Profile,
        *,
        answer_ttl_s: float = 3600.0,
        api_key: tuple[str, str] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._url = verify_url
        self._keys = keys
        self._profile = profile
        self._ttl = dt.timedelta(seconds=answer_ttl_s)
        self._api_key = api_key
        self._clock = clock
        self._pool = PooledSession("EligibilityClient")

    async def check(
        self, id_number: str, name: str, concession: Concession, *, agency: str, timeout: float
    ) -> ConcessionAnswer:
        """Ask whether the person qualifies for ``concession``; the verified answer."""
        types = (concession.value,)
        asked = tokens.request(
            sub=id_number,
            name=name,
            types=types,
            agency=agency,
            keys=self._keys,
            profile=self._profile,
            now=self._clock(),
        )
        log = _log.bind(jti=asked.jti, concession=concession.value)
        body = await self._get(asked.token, timeout, log)
        now = self._clock()
        try:
            answer = tokens.open_answer(
                _token_text(body), asked=asked, types=types, keys=self._keys,
                profile=self._profile, now=now,
            )  # fmt: skip
        except tokens.AnswerRefused as refused:
            log.warning(f"eligibility_answer_{refused.failure.value}", check=refused.check)
            raise backend_error(refused.failure, _BACKEND) from None
        if answer.error:
            log.warning("eligibility_refused")
            raise backend_error(Failure.REFUSED, _BACKEND)
        valid_until = now + self._ttl
        if answer.expires_at is not None:
            valid_until = min(valid_until, answer.expires_at)
        eligible = concession.value in answer.eligibility
        log.info("eligibility_answered")  # not the answer: the audit entry holds it
        return ConcessionAnswer(eligible=eligible, valid_until=valid_until)

    async def close(self) -> None:
        """Close the pooled connections; the client opens a new pool if used again."""
        await self._pool.close()

    async def _get(
        self, token: str, timeout: float, log: structlog.typing.FilteringBoundLogger
    ) -> bytes:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self._api_key is not None:
            headers[self._api_key[0]] = self._api_key[1]
        session = self._pool.get()
        with map_transport_errors(_BACKEND, timeout=timeout, log=log, prefix=_EVENTS):
            async with (
                asyncio.timeout(timeout),
                session.get(
                    self._url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response,
            ):
                if response.status not in _ANSWERED:
                    log.warning("eligibility_http_error", status=response.status)
                    raise backend_error(Failure.HTTP_STATUS, _BACKEND, status=response.status)
                return await read_capped(
                    response,
                    limit=_MAX_BODY_BYTES,
                    backend=_BACKEND,
                    log=log,
                    event="eligibility_answer_too_large",
                    chunk=16 * 1024,
                )


def _token_text(body: bytes) -> str:
    """The compact token in a body: a JSON string (as Flask-RESTful answers) or the bare text."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        return decoded if isinstance(decoded, str) else text
    return text
