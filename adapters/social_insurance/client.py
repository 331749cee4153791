"""The social insurance adapter: ``CardRegistry`` and ``InsuranceBackend`` over JSON/HTTP.

``SocialInsuranceClient`` owns the HTTP exchange with the back end: one pooled, keep-alive
``aiohttp.ClientSession`` per client, created lazily inside the running event loop (and bound
to it); a deadline on every call; naming each failure for the shared table of
``adapters.errors``, which turns it into the gateway's error:

==========================================================  ======================
timeout (connect, send, answer or body)                     ``TIMEOUT``
connection refused or reset                                 ``UNREACHABLE``
HTTP status other than 200                                  ``HTTP_STATUS``
``infcode`` -1 (other than an unknown person)               ``REFUSED``
body too large, not JSON, schema mismatch, a field that     ``MALFORMED``
fails its code format (``formats``)
answer for another person                                   ``WRONG_PERSON``
``infcode`` -1 with "未查询到" (found no such person)          ``NOT_FOUND``
==========================================================  ======================

Error messages are fixed texts written for the caller. Failures are logged as structlog events
(``social_insurance_*``) with the transaction, our ``msgid``, the back end's ``inf_refmsgid``
(to find the exchange in its own log) and the kind of failure, never the ID number, the name,
or the back end's ``err_msg`` (platforms echo certificate numbers and names in it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ValidationError

from adapters.errors import Failure, backend_error, map_transport_errors
from adapters.http import PooledSession, read_capped
from adapters.social_insurance import wire
from gateway.ports import CardHolder, PersonInsurance

_log = structlog.get_logger(__name__)

_BACKEND = "social insurance back end"
_EVENTS = "social_insurance"
_MAX_BODY_BYTES = 1 << 20
_OPTER_TYPE = "1"  # operator (经办人)
_RECER_SYS_CODE = "YBXT"
_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}

_Answer = TypeVar("_Answer", wire.PersonInfoResponse, wire.CardInfoResponse)


class SocialInsuranceClient:
    """Implements ``gateway.ports.CardRegistry`` (CR01) and ``InsuranceBackend`` (1101)."""

    def __init__(
        self,
        base_url: str,
        *,
        fixmedins_code: str = "H00000000000",
        opter: str = "onecard-gateway",
        fixmedins_name: str = "OneCard gateway",
        mdtrtarea_admvs: str = "110000",
    ) -> None:
        self._url = base_url.rstrip("/") + wire.PATH
        self._fixmedins_code = fixmedins_code
        self._fixmedins_name = fixmedins_name
        self._mdtrtarea_admvs = mdtrtarea_admvs
        self._opter = opter
        self._sequence = itertools.count()
        self._pool = PooledSession("SocialInsuranceClient")

    async def resolve(self, id_number: str, *, timeout: float) -> CardHolder:
        """The card holder and card status of ``id_number`` (CR01)."""
        answer = await self._exchange(
            wire.INFNO_CARD_INFO, wire.card_info_query(id_number), wire.parse_card_info, timeout
        )
        _require_same_person(answer, answer.output.cardinfo.certno, id_number)
        return wire.to_card_holder(answer.output.cardinfo)

    async def person_insurance(self, id_number: str, *, timeout: float) -> PersonInsurance:
        """The insurance schemes of ``id_number`` (1101 person info)."""
        answer = await self._exchange(
            wire.INFNO_PERSON_INFO,
            wire.person_info_query(id_number),
            wire.parse_person_info,
            timeout,
        )
        _require_same_person(answer, answer.output.baseinfo.certno, id_number)
        return wire.to_person_insurance(answer.output)

    async def close(self) -> None:
        """Close the pooled connections; the client opens a new pool if used again."""
        await self._pool.close()

    # -- one exchange ----------------------------------------------------------------------------

    async def _exchange(
        self,
        infno: str,
        data: BaseModel,
        parse: Callable[[bytes], _Answer],
        timeout: float,
    ) -> _Answer:
        envelope = self._envelope(infno, data)
        log = _LazyLog(infno=infno, msgid=envelope.msgid)
        body = await self._post(envelope, timeout, log)
        try:  # the usual answer, parsed once; the head alone says what any other one is
            answer: _Answer | None = parse(body)
        except ValidationError:
            answer = None
        head: wire.ResponseHead = answer or _validated(wire.parse_head, body, log)
        log = log.bind(inf_refmsgid=head.inf_refmsgid)
        if head.not_found:
            log.info("social_insurance_person_not_found")
            raise backend_error(Failure.NOT_FOUND, _BACKEND)
        if not head.ok:
            log.warning(
                "social_insurance_refused",
                infcode=head.infcode,
                err_msg_chars=len(head.err_msg or ""),
            )
            raise backend_error(Failure.REFUSED, _BACKEND)
        return answer if answer is not None else _validated(parse, body, log)

    async def _post(
        self,
        envelope: wire.RequestEnvelope,
        timeout: float,
        log: _LazyLog,
    ) -> bytes:
        session = self._pool.get()
        payload = envelope.model_dump_json().encode()
        with map_transport_errors(_BACKEND, timeout=timeout, log=log, prefix=_EVENTS):
            async with (
                asyncio.timeout(timeout),
                session.post(
                    self._url,
                    data=payload,
                    headers=_HEADERS,
                    timeout=_client_timeout(timeout),
                ) as response,
            ):
                if response.status != 200:
                    log.warning("social_insurance_http_error", status=response.status)
                    raise backend_error(Failure.HTTP_STATUS, _BACKEND, status=response.status)
                return await read_capped(
                    response,
                    limit=_MAX_BODY_BYTES,
                    backend=_BACKEND,
                    log=log,
                    event="social_insurance_answer_too_large",
                )

    def _envelope(self, infno: str, data: BaseModel) -> wire.RequestEnvelope:
        now = dt.datetime.now()
        sender = self._fixmedins_code[:12].ljust(12, "0")
        return wire.RequestEnvelope(
            infno=infno,
            msgid=f"{sender}{now:%Y%m%d%H%M%S}{next(self._sequence) % 10_000:04d}",
            infver=wire.INFVER,
            opter_type=_OPTER_TYPE,
            opter=self._opter,
            opter_name=self._opter,
            inf_time=now.strftime(wire.INF_TIME_FORMAT),
            fixmedins_code=self._fixmedins_code,
            fixmedins_name=self._fixmedins_name,
            mdtrtarea_admvs=self._mdtrtarea_admvs,
            recer_sys_code=_RECER_SYS_CODE,
            input={"data": data.model_dump()},
        )


class _LazyLog:
    """The exchange's logger, bound to its context only when it logs: binding a structlog
    logger costs more than an exchange that logs nothing needs (most of them)."""

    def __init__(self, **context: Any) -> None:
        self._context = context

    def bind(self, **more: Any) -> _LazyLog:
        return _LazyLog(**self._context, **more)

    def info(self, event: str, *args: Any, **fields: Any) -> Any:
        return _log.bind(**self._context).info(event, *args, **fields)

    def warning(self, event: str, *args: Any, **fields: Any) -> Any:
        return _log.bind(**self._context).warning(event, *args, **fields)


@functools.lru_cache(maxsize=16)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The request's aiohttp timeout (immutable; one per configured timeout)."""
    return aiohttp.ClientTimeout(total=seconds)


_Parsed = TypeVar("_Parsed", bound=BaseModel)


def _validated(parse: Callable[[bytes], _Parsed], body: bytes, log: _LazyLog) -> _Parsed:
    try:
        return parse(body)
    except ValidationError as exc:
        # Where and which rule, never the value (nor pydantic's message, which may quote it).
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['type']}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        log.warning("social_insurance_malformed_answer", problems=problems[:10])
        raise backend_error(Failure.MALFORMED, _BACKEND) from None


def _require_same_person(answer: wire.ResponseHead, certno: str, id_number: str) -> None:
    if certno.upper() != id_number.upper():
        _log.warning("social_insurance_wrong_person", inf_refmsgid=answer.inf_refmsgid)
        raise backend_error(Failure.WRONG_PERSON, _BACKEND)
