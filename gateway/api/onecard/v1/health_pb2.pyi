from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_CATEGORY_UNSPECIFIED: _ClassVar[HealthCategory]
    HEALTH_CATEGORY_LAB: _ClassVar[HealthCategory]
    HEALTH_CATEGORY_IMAGING: _ClassVar[HealthCategory]
    HEALTH_CATEGORY_DOCUMENTS: _ClassVar[HealthCategory]
HEALTH_CATEGORY_UNSPECIFIED: HealthCategory
HEALTH_CATEGORY_LAB: HealthCategory
HEALTH_CATEGORY_IMAGING: HealthCategory
HEALTH_CATEGORY_DOCUMENTS: HealthCategory

class ListHealthRecordsRequest(_message.Message):
    __slots__ = ("card", "purpose", "basis", "category", "date_from", "date_to", "page_size", "page_token")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    DATE_FROM_FIELD_NUMBER: _ClassVar[int]
    DATE_TO_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    basis: _common_pb2.LawfulBasis
    category: HealthCategory
    date_from: str
    date_to: str
    page_size: int
    page_token: str
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[_Union[_common_pb2.LawfulBasis, _Mapping]] = ..., category: _Optional[_Union[HealthCategory, str]] = ..., date_from: _Optional[str] = ..., date_to: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class HealthRecordSummary(_message.Message):
    __slots__ = ("record_id", "kind", "date", "title", "performer", "status", "source")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PERFORMER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    kind: str
    date: str
    title: str
    performer: str
    status: str
    source: str
    def __init__(self, record_id: _Optional[str] = ..., kind: _Optional[str] = ..., date: _Optional[str] = ..., title: _Optional[str] = ..., performer: _Optional[str] = ..., status: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ListHealthRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token", "partial", "unavailable_sources", "decision", "receipt")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_SOURCES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[HealthRecordSummary]
    next_page_token: str
    partial: bool
    unavailable_sources: _containers.RepeatedScalarFieldContainer[str]
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, records: _Optional[_Iterable[_Union[HealthRecordSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., partial: _Optional[bool] = ..., unavailable_sources: _Optional[_Iterable[str]] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class GetHealthRecordRequest(_message.Message):
    __slots__ = ("card", "purpose", "basis", "category", "record_id")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    basis: _common_pb2.LawfulBasis
    category: HealthCategory
    record_id: str
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[_Union[_common_pb2.LawfulBasis, _Mapping]] = ..., category: _Optional[_Union[HealthCategory, str]] = ..., record_id: _Optional[str] = ...) -> None: ...

class GetHealthRecordResponse(_message.Message):
    __slots__ = ("summary", "fhir_json", "resource_count", "decision", "receipt")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FHIR_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    summary: HealthRecordSummary
    fhir_json: str
    resource_count: int
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, summary: _Optional[_Union[HealthRecordSummary, _Mapping]] = ..., fhir_json: _Optional[str] = ..., resource_count: _Optional[int] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
