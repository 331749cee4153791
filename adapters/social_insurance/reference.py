"""The reference social insurance back end: a real aiohttp server on loopback.

It answers ``POST /fsi/api/rsfComIfsService/callService`` the way the national medical insurance
platform does, for the synthetic citizens of ``seed.Population``: transaction ``1101`` (person
info) and OneCard's ``CR01`` (card registry, see ``wire``). Like the platform, it answers every
business outcome with HTTP 200 and ``infcode``: a malformed request, an unknown transaction or
an unknown person get ``infcode`` -1 and an ``err_msg`` in Chinese, which (like real platforms)
may repeat the certificate number. The gateway's adapter never passes that text on.

It does not check ``sign_no`` (the 9001 sign-in) or ``cainfo`` signatures. It binds 127.0.0.1
unless told otherwise and refuses wildcard addresses.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import ValidationError

from adapters.loopback import Site, serve
from adapters.social_insurance import wire
from adapters.social_insurance.seed import Person, Population

_log = structlog.get_logger(__name__)

_PLATFORM_ADMDVS = "100000"  # the answering platform's division, the prefix of inf_refmsgid

_Output = dict[str, Any]
_Query = TypeVar("_Query", wire.PersonInfoQuery, wire.CardInfoQuery)


class _Refusal(Exception):
    """A business failure: answered as ``infcode`` -1 with this ``err_msg``."""

    def __init__(self, err_msg: str) -> None:
        super().__init__(err_msg)
        self.err_msg = err_msg


def build_app(population: Population) -> web.Application:
    """The aiohttp application serving ``population``."""
    app = web.Application()
    app.router.add_post(wire.PATH, _Platform(population).call_service)
    return app


@dataclass(frozen=True, slots=True)
class ReferenceServer:
    """A running reference back end; ``url`` is the base URL with the bound port."""

    site: Site
    population: Population

    @property
    def host(self) -> str:
        return self.site.host

    @property
    def port(self) -> int:
        return self.site.port

    @property
    def url(self) -> str:
        return self.site.url

    async def close(self) -> None:
        await self.site.close()


async def start_reference_server(
    host: str = "127.0.0.1", port: int = 0, population: Population | None = None
) -> ReferenceServer:
    """Start the reference back end on ``host:port`` (port 0: any free port)."""
    population = population if population is not None else Population.default()
    server = ReferenceServer(
        await serve(build_app(population), host, port, "reference back end"), population
    )
    _log.info("reference_backend_started", url=server.url, people=len(population))
    return server


class _Platform:
    """The request handler: envelope checks, dispatch by ``infno``, answer envelope."""

    def __init__(self, population: Population) -> None:
        self._population = population
        self._sequence = itertools.count(1)
        self._transactions: dict[str, Callable[[dict[str, Any]], _Output]] = {
            wire.INFNO_PERSON_INFO: self._person_info,
            wire.INFNO_CARD_INFO: self._card_info,
        }

    async def call_service(self, request: web.Request) -> web.Response:
        received = dt.datetime.now()
        try:
            envelope = _parse_envelope(await request.read())
            output = self._transaction(envelope.infno)(envelope.input)
        except _Refusal as refusal:
            return self._answer(received, wire.INFCODE_FAILED, refusal.err_msg, None)
        return self._answer(received, wire.INFCODE_OK, "", output)

    def _transaction(self, infno: str) -> Callable[[dict[str, Any]], _Output]:
        transaction = self._transactions.get(infno)
        if transaction is None:
            raise _Refusal(f"交易编号[{infno}]不存在")
        return transaction

    def _answer(
        self, received: dt.datetime, infcode: int, err_msg: str, output: _Output | None
    ) -> web.Response:
        now = dt.datetime.now()
        body = {
            "infcode": infcode,
            "inf_refmsgid": f"{_PLATFORM_ADMDVS}{now:%Y%m%d%H%M%S}{next(self._sequence):010d}",
            "refmsg_time": _stamp(received),
            "respond_time": _stamp(now),
            "err_msg": err_msg,
            "warn_msg": "",
            "cainfo": "",
            "signtype": "",
            "output": output if output is not None else {},
        }
        return web.Response(
            text=json.dumps(body, ensure_ascii=False), content_type="application/json"
        )

    def _person_info(self, raw_input: dict[str, Any]) -> _Output:
        query = _parse_data(wire.PersonInfoQuery, raw_input)
        if query.mdtrt_cert_type == wire.MDTRT_CERT_TYPE_ID_NUMBER:
            certno = query.mdtrt_cert_no
        elif query.psn_cert_type == wire.PSN_CERT_TYPE_RESIDENT_ID and query.certno:
            certno = query.certno
        else:
            raise _Refusal(f"就诊凭证类型[{query.mdtrt_cert_type}]暂不支持")
        person = self._population.by_id_number(certno)
        if person is None:
            raise _Refusal(f"{wire.NOT_FOUND_MARKER}参保人员信息[证件号码:{certno}]")
        return _person_info_output(person)

    def _card_info(self, raw_input: dict[str, Any]) -> _Output:
        query = _parse_data(wire.CardInfoQuery, raw_input)
        if query.psn_cert_type != wire.PSN_CERT_TYPE_RESIDENT_ID:
            raise _Refusal(f"人员证件类型[{query.psn_cert_type}]暂不支持")
        person = self._population.by_id_number(query.certno)
        if person is None:
            raise _Refusal(f"{wire.NOT_FOUND_MARKER}社会保障卡信息[证件号码:{query.certno}]")
        return {
            "cardinfo": {
                "psn_no": person.psn_no,
                "certno": person.id_number,
                "psn_name": person.name,
                "card_stas": wire.CODE_BY_CARD_STATUS[person.card_status],
                "card_sn": person.card_sn,
                "issu_admdvs": person.issuing_district,
            }
        }


def _parse_envelope(body: bytes) -> wire.RequestEnvelope:
    try:
        return wire.RequestEnvelope.model_validate_json(body)
    except ValidationError as exc:
        raise _Refusal(f"请求报文格式错误[{_first_problem(exc)}]") from None


def _parse_data(model: type[_Query], raw_input: dict[str, Any]) -> _Query:
    try:
        return model.model_validate(raw_input.get("data"))
    except ValidationError as exc:
        raise _Refusal(f"交易输入校验失败[input.data.{_first_problem(exc)}]") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "报文"
    return f"{where} {error['msg']}"


def _person_info_output(person: Person) -> _Output:
    return {
        "baseinfo": {
            "psn_no": person.psn_no,
            "psn_cert_type": wire.PSN_CERT_TYPE_RESIDENT_ID,
            "certno": person.id_number,
            "psn_name": person.name,
            "gend": person.gender,
            "naty": "01",
            "brdy": person.birth_date.isoformat(),
            "age": person.age,
            "exp_content": "",
        },
        "insuinfo": [
            {
                "balc": float(s.balance) if s.balance is not None else None,
                "insutype": s.insutype,
                "psn_type": person.psn_type,
                "psn_insu_stas": s.status.value,
                "psn_insu_date": s.start_date.isoformat() if s.start_date else "",
                "paus_insu_date": s.pause_date.isoformat() if s.pause_date else "",
                "cvlserv_flag": "1" if person.civil_servant else "0",
                "insuplc_admdvs": s.insured_district,
                "emp_name": s.employer_name or "",
            }
            for s in person.schemes
        ],
        "idetinfo": [],
    }


def _stamp(moment: dt.datetime) -> str:
    """``yyyyMMddHHmmssSSS``, the platform's 17-digit time stamp."""
    return f"{moment:%Y%m%d%H%M%S}{moment.microsecond // 1000:03d}"
