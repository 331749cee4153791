import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConcessionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONCESSION_TYPE_UNSPECIFIED: _ClassVar[ConcessionType]
    CONCESSION_TYPE_SENIOR: _ClassVar[ConcessionType]
    CONCESSION_TYPE_DISABLED: _ClassVar[ConcessionType]
    CONCESSION_TYPE_STUDENT: _ClassVar[ConcessionType]
CONCESSION_TYPE_UNSPECIFIED: ConcessionType
CONCESSION_TYPE_SENIOR: ConcessionType
CONCESSION_TYPE_DISABLED: ConcessionType
CONCESSION_TYPE_STUDENT: ConcessionType

class CheckConcessionRequest(_message.Message):
    __slots__ = ("card", "purpose", "basis", "concession_type")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    CONCESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    basis: _common_pb2.LawfulBasis
    concession_type: ConcessionType
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[_Union[_common_pb2.LawfulBasis, _Mapping]] = ..., concession_type: _Optional[_Union[ConcessionType, str]] = ...) -> None: ...

class CheckConcessionResponse(_message.Message):
    __slots__ = ("eligible", "valid_until", "decision", "receipt")
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    eligible: bool
    valid_until: _timestamp_pb2.Timestamp
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, eligible: _Optional[bool] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
