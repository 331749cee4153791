"""The wire format of the social insurance back end: envelopes, payloads, and their conversion.

This module owns the JSON shapes and nothing else (no I/O). It follows the national medical
insurance platform's common envelope (``POST .../fsi/api/rsfComIfsService/callService``):

* request: ``infno``, ``msgid`` (30 characters: 12-character ``fixmedins_code``, 14-digit time,
  4-digit sequence), ``infver``, ``opter_type``, ``opter``, ``opter_name``, ``inf_time``
  (``yyyy-MM-dd HH:mm:ss``), ``fixmedins_code``, ``fixmedins_name``, ``mdtrtarea_admvs``,
  ``insuplc_admdvs``, ``recer_sys_code``, ``dev_no``, ``dev_safe_info``, ``cainfo``,
  ``signtype``, ``sign_no`` and ``input``;
* response: ``infcode`` (number: 0 success, -1 failure), ``inf_refmsgid``, ``refmsg_time``,
  ``respond_time`` (17 digits, ``yyyyMMddHHmmssSSS``), ``err_msg``, ``warn_msg`` and ``output``.

Transactions:

* ``1101`` person info (人员信息获取): input ``data`` with ``mdtrt_cert_type`` ``"02"`` (ID
  number) and ``psn_cert_type`` ``"01"`` (resident ID card); output ``baseinfo``,
  ``insuinfo[]`` and ``idetinfo[]`` as published. ``psn_insu_stas``: ``"1"`` normal,
  ``"2"`` paused, ``"4"`` terminated.
* ``CR01`` card registry: **OneCard's own extension**, not a published interface. The card
  issuer holds card status, but the national platform publishes no transaction for it, so
  OneCard defines one in the same envelope: input ``data`` with ``certno`` and
  ``psn_cert_type``; output ``cardinfo`` with ``psn_no``, ``certno``, ``psn_name``,
  ``card_stas``, ``card_sn`` and ``issu_admdvs``. ``card_stas`` codes:

  ====  ============================================
  "1"   normal                      (CardStatus.NORMAL)
  "2"   temporarily reported lost   (CardStatus.TEMPORARILY_REPORTED_LOST)
  "3"   reported lost               (CardStatus.REPORTED_LOST)
  "4"   locked                      (CardStatus.LOCKED)
  "5"   cancelled                   (CardStatus.CANCELLED)
  ====  ============================================

The platform has no error codes beyond ``infcode`` -1; an unknown person is recognised by its
``err_msg``, which contains ``未查询到`` ("found no ...") in the answers of both transactions.

Responses are parsed strictly from the JSON bytes (``extra="ignore"``: platforms add fields),
in two steps: the head first (``infcode``, ``err_msg``), then the transaction's output only
when ``infcode`` is 0, because failed answers carry no usable ``output``. Every field that is
passed on to a port value is checked against its code format (``formats``) while parsing, so
no value reaches a caller unchecked.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from adapters.social_insurance import formats
from gateway.ports import (
    CardHolder,
    CardStatus,
    InsuranceScheme,
    InsuranceStatus,
    PersonInsurance,
)

PATH = "/fsi/api/rsfComIfsService/callService"
INFNO_PERSON_INFO = "1101"
INFNO_CARD_INFO = "CR01"
INFVER = "V1.0"
PSN_CERT_TYPE_RESIDENT_ID = "01"
MDTRT_CERT_TYPE_ID_NUMBER = "02"
INFCODE_OK = 0
INFCODE_FAILED = -1
NOT_FOUND_MARKER = "未查询到"
INF_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_CENTS = Decimal("0.01")

CARD_STATUS_BY_CODE: dict[str, CardStatus] = {
    "1": CardStatus.NORMAL,
    "2": CardStatus.TEMPORARILY_REPORTED_LOST,
    "3": CardStatus.REPORTED_LOST,
    "4": CardStatus.LOCKED,
    "5": CardStatus.CANCELLED,
}
CODE_BY_CARD_STATUS: dict[CardStatus, str] = {v: k for k, v in CARD_STATUS_BY_CODE.items()}


def _blank_to_none(value: object) -> object:
    """The platform sends ``""`` (or null) for an absent date or text."""
    return None if value == "" else value


_OptText = Annotated[str | None, BeforeValidator(_blank_to_none)]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# -- requests ------------------------------------------------------------------------------------


class PersonInfoQuery(_Request):
    """``input.data`` of 1101."""

    mdtrt_cert_type: str
    mdtrt_cert_no: str
    card_sn: str = ""
    begntime: str = ""
    psn_cert_type: str = ""
    certno: str = ""
    psn_name: str = ""


class CardInfoQuery(_Request):
    """``input.data`` of CR01 (OneCard extension)."""

    certno: str
    psn_cert_type: str


class RequestEnvelope(_Request):
    """The common request envelope; ``input`` is validated per transaction by the receiver."""

    infno: str = Field(min_length=1, max_length=6)
    msgid: str = Field(min_length=1, max_length=30)
    infver: str
    opter_type: str
    opter: str
    opter_name: str
    inf_time: str
    fixmedins_code: str
    fixmedins_name: str
    mdtrtarea_admvs: str
    insuplc_admdvs: str = ""
    recer_sys_code: str
    dev_no: str = ""
    dev_safe_info: str = ""
    cainfo: str = ""
    signtype: str = ""
    sign_no: str = ""
    input: dict[str, Any]


# -- responses -----------------------------------------------------------------------------------


class ResponseHead(_Response):
    """The response envelope without its output."""

    infcode: int
    inf_refmsgid: str | None = None
    refmsg_time: str | None = None
    respond_time: str | None = None
    err_msg: str | None = None
    warn_msg: str | None = None

    @property
    def ok(self) -> bool:
        return self.infcode == INFCODE_OK

    @property
    def not_found(self) -> bool:
        return self.infcode == INFCODE_FAILED and NOT_FOUND_MARKER in (self.err_msg or "")


class BaseInfo(_Response):
    """``output.baseinfo`` of 1101 (only ``psn_no`` is passed on; ``certno`` is compared)."""

    psn_no: formats.PsnNo
    psn_cert_type: str
    certno: formats.CertNo
    psn_name: str
    gend: str
    naty: _OptText = None
    brdy: dt.date
    age: Decimal | None = None


class InsuInfo(_Response):
    """One entry of ``output.insuinfo[]`` of 1101 (every field but two is passed on)."""

    balc: Annotated[Decimal, Field(ge=0, max_digits=16, decimal_places=2)] | None = None
    insutype: formats.Insutype
    psn_type: _OptText = None
    psn_insu_stas: Literal["1", "2", "4"]
    psn_insu_date: formats.OptDate = None
    paus_insu_date: formats.OptDate = None
    cvlserv_flag: _OptText = None
    insuplc_admdvs: formats.Admdvs
    emp_name: formats.OptText = None


class IdetInfo(_Response):
    """One entry of ``output.idetinfo[]`` of 1101 (identities; not used by the ports)."""

    psn_idet_type: str
    psn_type_lv: _OptText = None
    memo: _OptText = None
    begntime: _OptText = None
    endtime: _OptText = None


class PersonInfoOutput(_Response):
    baseinfo: BaseInfo
    insuinfo: list[InsuInfo] = Field(default_factory=list)
    idetinfo: list[IdetInfo] = Field(default_factory=list)


class PersonInfoResponse(ResponseHead):
    output: PersonInfoOutput


class CardInfo(_Response):
    """``output.cardinfo`` of CR01 (OneCard extension)."""

    psn_no: formats.PsnNo
    certno: formats.CertNo
    psn_name: formats.PersonName
    card_stas: Literal["1", "2", "3", "4", "5"]
    card_sn: formats.CardSn
    issu_admdvs: formats.Admdvs


class CardInfoOutput(_Response):
    cardinfo: CardInfo


class CardInfoResponse(ResponseHead):
    output: CardInfoOutput


# -- parsing and conversion ----------------------------------------------------------------------


def parse_head(body: bytes) -> ResponseHead:
    """Validate the envelope head; raises ``pydantic.ValidationError`` (also for non-JSON)."""
    return ResponseHead.model_validate_json(body)


def parse_person_info(body: bytes) -> PersonInfoResponse:
    """Validate a successful 1101 answer; raises ``pydantic.ValidationError``."""
    return PersonInfoResponse.model_validate_json(body)


def parse_card_info(body: bytes) -> CardInfoResponse:
    """Validate a successful CR01 answer; raises ``pydantic.ValidationError``."""
    return CardInfoResponse.model_validate_json(body)


def to_card_holder(info: CardInfo) -> CardHolder:
    return CardHolder(
        holder_id=info.psn_no,
        card_status=CARD_STATUS_BY_CODE[info.card_stas],
        name=info.psn_name,
        issuing_district=info.issu_admdvs,
    )


def to_scheme(info: InsuInfo) -> InsuranceScheme:
    return InsuranceScheme(
        insutype=info.insutype,
        status=InsuranceStatus(info.psn_insu_stas),
        start_date=info.psn_insu_date,
        pause_date=info.paus_insu_date,
        insured_district=info.insuplc_admdvs,
        employer_name=info.emp_name,
        balance=info.balc.quantize(_CENTS) if info.balc is not None else None,
    )


def to_person_insurance(output: PersonInfoOutput) -> PersonInsurance:
    return PersonInsurance(
        holder_id=output.baseinfo.psn_no,
        schemes=tuple(to_scheme(i) for i in output.insuinfo),
    )


def person_info_query(id_number: str) -> PersonInfoQuery:
    """1101 input for a resident ID number (certificate type 02, ID card type 01)."""
    return PersonInfoQuery(
        mdtrt_cert_type=MDTRT_CERT_TYPE_ID_NUMBER,
        mdtrt_cert_no=id_number,
        psn_cert_type=PSN_CERT_TYPE_RESIDENT_ID,
        certno=id_number,
    )


def card_info_query(id_number: str) -> CardInfoQuery:
    return CardInfoQuery(certno=id_number, psn_cert_type=PSN_CERT_TYPE_RESIDENT_ID)
