from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SchemeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEME_STATUS_UNSPECIFIED: _ClassVar[SchemeStatus]
    SCHEME_STATUS_ACTIVE: _ClassVar[SchemeStatus]
    SCHEME_STATUS_SUSPENDED: _ClassVar[SchemeStatus]
    SCHEME_STATUS_TERMINATED: _ClassVar[SchemeStatus]
SCHEME_STATUS_UNSPECIFIED: SchemeStatus
SCHEME_STATUS_ACTIVE: SchemeStatus
SCHEME_STATUS_SUSPENDED: SchemeStatus
SCHEME_STATUS_TERMINATED: SchemeStatus

class GetInsuranceStatusRequest(_message.Message):
    __slots__ = ("card", "purpose", "basis")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    basis: _common_pb2.LawfulBasis
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[_Union[_common_pb2.LawfulBasis, _Mapping]] = ...) -> None: ...

class InsuranceScheme(_message.Message):
    __slots__ = ("insutype", "type_name", "status", "start_date", "pause_date", "insured_district", "employer_name", "balance")
    INSUTYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    PAUSE_DATE_FIELD_NUMBER: _ClassVar[int]
    INSURED_DISTRICT_FIELD_NUMBER: _ClassVar[int]
    EMPLOYER_NAME_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    insutype: str
    type_name: str
    status: SchemeStatus
    start_date: str
    pause_date: str
    insured_district: str
    employer_name: str
    balance: str
    def __init__(self, insutype: _Optional[str] = ..., type_name: _Optional[str] = ..., status: _Optional[_Union[SchemeStatus, str]] = ..., start_date: _Optional[str] = ..., pause_date: _Optional[str] = ..., insured_district: _Optional[str] = ..., employer_name: _Optional[str] = ..., balance: _Optional[str] = ...) -> None: ...

class GetInsuranceStatusResponse(_message.Message):
    __slots__ = ("schemes", "decision", "receipt")
    SCHEMES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    schemes: _containers.RepeatedCompositeFieldContainer[InsuranceScheme]
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, schemes: _Optional[_Iterable[_Union[InsuranceScheme, _Mapping]]] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
