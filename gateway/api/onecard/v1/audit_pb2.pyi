import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("signed_checkpoint", "origin", "tree_size", "root_hash", "receipt")
    SIGNED_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    signed_checkpoint: bytes
    origin: str
    tree_size: int
    root_hash: bytes
    receipt: _common_pb2.AuditReceipt
    def __init__(self, signed_checkpoint: _Optional[bytes] = ..., origin: _Optional[str] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("leaf_index", "tree_size")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    tree_size: int
    def __init__(self, leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("leaf_hash", "hashes", "receipt")
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    leaf_hash: bytes
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    receipt: _common_pb2.AuditReceipt
    def __init__(self, leaf_hash: _Optional[bytes] = ..., hashes: _Optional[_Iterable[bytes]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("from_size", "to_size")
    FROM_SIZE_FIELD_NUMBER: _ClassVar[int]
    TO_SIZE_FIELD_NUMBER: _ClassVar[int]
    from_size: int
    to_size: int
    def __init__(self, from_size: _Optional[int] = ..., to_size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("hashes", "receipt")
    HASHES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    receipt: _common_pb2.AuditReceipt
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("start_index", "end_index")
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    END_INDEX_FIELD_NUMBER: _ClassVar[int]
    start_index: int
    end_index: int
    def __init__(self, start_index: _Optional[int] = ..., end_index: _Optional[int] = ...) -> None: ...

class GetEntriesResponse(_message.Message):
    __slots__ = ("entries", "receipt")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    receipt: _common_pb2.AuditReceipt
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class SearchEntriesRequest(_message.Message):
    __slots__ = ("since", "until", "org_id", "rpc", "decision", "basis", "card", "after_index", "first_page", "page_size")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    AFTER_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    org_id: str
    rpc: str
    decision: str
    basis: str
    card: _common_pb2.CardRef
    after_index: int
    first_page: bool
    page_size: int
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org_id: _Optional[str] = ..., rpc: _Optional[str] = ..., decision: _Optional[str] = ..., basis: _Optional[str] = ..., card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., after_index: _Optional[int] = ..., first_page: _Optional[bool] = ..., page_size: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("index", "leaf")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    index: int
    leaf: bytes
    def __init__(self, index: _Optional[int] = ..., leaf: _Optional[bytes] = ...) -> None: ...

class SearchEntriesResponse(_message.Message):
    __slots__ = ("entries", "receipt")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    receipt: _common_pb2.AuditReceipt
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportCount(_message.Message):
    __slots__ = ("org", "code", "count")
    ORG_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    org: str
    code: str
    count: int
    def __init__(self, org: _Optional[str] = ..., code: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class EmergencyAccess(_message.Message):
    __slots__ = ("index", "time", "org", "reason", "outcome", "justification", "justification_sha256_prefix")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATION_SHA256_PREFIX_FIELD_NUMBER: _ClassVar[int]
    index: int
    time: _timestamp_pb2.Timestamp
    org: str
    reason: str
    outcome: str
    justification: str
    justification_sha256_prefix: str
    def __init__(self, index: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org: _Optional[str] = ..., reason: _Optional[str] = ..., outcome: _Optional[str] = ..., justification: _Optional[str] = ..., justification_sha256_prefix: _Optional[str] = ...) -> None: ...

class ConsentChanges(_message.Message):
    __slots__ = ("day", "granted", "revoked")
    DAY_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    day: str
    granted: int
    revoked: int
    def __init__(self, day: _Optional[str] = ..., granted: _Optional[int] = ..., revoked: _Optional[int] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("emergency_accesses", "emergency_details", "refusals", "consent_changes", "entries", "receipt")
    EMERGENCY_ACCESSES_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_DETAILS_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_CHANGES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    emergency_accesses: _containers.RepeatedCompositeFieldContainer[ReportCount]
    emergency_details: _containers.RepeatedCompositeFieldContainer[EmergencyAccess]
    refusals: _containers.RepeatedCompositeFieldContainer[ReportCount]
    consent_changes: _containers.RepeatedCompositeFieldContainer[ConsentChanges]
    entries: int
    receipt: _common_pb2.AuditReceipt
    def __init__(self, emergency_accesses: _Optional[_Iterable[_Union[ReportCount, _Mapping]]] = ..., emergency_details: _Optional[_Iterable[_Union[EmergencyAccess, _Mapping]]] = ..., refusals: _Optional[_Iterable[_Union[ReportCount, _Mapping]]] = ..., consent_changes: _Optional[_Iterable[_Union[ConsentChanges, _Mapping]]] = ..., entries: _Optional[int] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
