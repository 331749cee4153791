import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IssueCardTokenRequest(_message.Message):
    __slots__ = ("card", "purpose")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ...) -> None: ...

class IssueCardTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at", "decision", "receipt")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: _timestamp_pb2.Timestamp
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class VerifyCardRequest(_message.Message):
    __slots__ = ("card", "purpose", "basis")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    basis: _common_pb2.LawfulBasis
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[_Union[_common_pb2.LawfulBasis, _Mapping]] = ...) -> None: ...

class VerifyCardResponse(_message.Message):
    __slots__ = ("card_holder_valid", "masked_name", "issuing_district", "decision", "receipt")
    CARD_HOLDER_VALID_FIELD_NUMBER: _ClassVar[int]
    MASKED_NAME_FIELD_NUMBER: _ClassVar[int]
    ISSUING_DISTRICT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    card_holder_valid: bool
    masked_name: str
    issuing_district: str
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, card_holder_valid: _Optional[bool] = ..., masked_name: _Optional[str] = ..., issuing_district: _Optional[str] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
