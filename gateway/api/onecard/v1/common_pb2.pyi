import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Purpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_UNSPECIFIED: _ClassVar[Purpose]
    PURPOSE_TREAT: _ClassVar[Purpose]
    PURPOSE_ETREAT: _ClassVar[Purpose]
    PURPOSE_COVERAGE: _ClassVar[Purpose]
    PURPOSE_HPAYMT: _ClassVar[Purpose]
    PURPOSE_PATRQT: _ClassVar[Purpose]
    PURPOSE_HCOMPL: _ClassVar[Purpose]
    PURPOSE_LIBRARY_SERVICE: _ClassVar[Purpose]
    PURPOSE_FARE_CONCESSION: _ClassVar[Purpose]

class EmergencyReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMERGENCY_REASON_UNSPECIFIED: _ClassVar[EmergencyReason]
    EMERGENCY_REASON_PATIENT_INCAPACITATED: _ClassVar[EmergencyReason]
    EMERGENCY_REASON_LIFE_THREATENING: _ClassVar[EmergencyReason]
    EMERGENCY_REASON_OTHER: _ClassVar[EmergencyReason]
PURPOSE_UNSPECIFIED: Purpose
PURPOSE_TREAT: Purpose
PURPOSE_ETREAT: Purpose
PURPOSE_COVERAGE: Purpose
PURPOSE_HPAYMT: Purpose
PURPOSE_PATRQT: Purpose
PURPOSE_HCOMPL: Purpose
PURPOSE_LIBRARY_SERVICE: Purpose
PURPOSE_FARE_CONCESSION: Purpose
EMERGENCY_REASON_UNSPECIFIED: EmergencyReason
EMERGENCY_REASON_PATIENT_INCAPACITATED: EmergencyReason
EMERGENCY_REASON_LIFE_THREATENING: EmergencyReason
EMERGENCY_REASON_OTHER: EmergencyReason

class CardRef(_message.Message):
    __slots__ = ("card_number",)
    CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    card_number: str
    def __init__(self, card_number: _Optional[str] = ...) -> None: ...

class LawfulBasis(_message.Message):
    __slots__ = ("card_present", "consent_id", "emergency")
    CARD_PRESENT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    card_present: CardPresent
    consent_id: str
    emergency: Emergency
    def __init__(self, card_present: _Optional[_Union[CardPresent, _Mapping]] = ..., consent_id: _Optional[str] = ..., emergency: _Optional[_Union[Emergency, _Mapping]] = ...) -> None: ...

class CardPresent(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Emergency(_message.Message):
    __slots__ = ("reason", "justification")
    REASON_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    reason: EmergencyReason
    justification: str
    def __init__(self, reason: _Optional[_Union[EmergencyReason, str]] = ..., justification: _Optional[str] = ...) -> None: ...

class AccessDecision(_message.Message):
    __slots__ = ("policy_ids", "policy_set_sha256", "disclosed_fields")
    POLICY_IDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_SHA256_FIELD_NUMBER: _ClassVar[int]
    DISCLOSED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    policy_ids: _containers.RepeatedScalarFieldContainer[str]
    policy_set_sha256: str
    disclosed_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, policy_ids: _Optional[_Iterable[str]] = ..., policy_set_sha256: _Optional[str] = ..., disclosed_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("leaf_index", "leaf_hash", "log_origin", "appended_at")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    LOG_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    APPENDED_AT_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    leaf_hash: bytes
    log_origin: str
    appended_at: _timestamp_pb2.Timestamp
    def __init__(self, leaf_index: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., log_origin: _Optional[str] = ..., appended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
