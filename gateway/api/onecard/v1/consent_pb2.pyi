import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_CATEGORY_UNSPECIFIED: _ClassVar[DataCategory]
    DATA_CATEGORY_INSURANCE: _ClassVar[DataCategory]
    DATA_CATEGORY_HEALTH_LAB: _ClassVar[DataCategory]
    DATA_CATEGORY_HEALTH_IMAGING: _ClassVar[DataCategory]
    DATA_CATEGORY_HEALTH_DOCUMENTS: _ClassVar[DataCategory]
    DATA_CATEGORY_LIBRARY: _ClassVar[DataCategory]
    DATA_CATEGORY_TRANSIT: _ClassVar[DataCategory]

class ConsentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_STATUS_UNSPECIFIED: _ClassVar[ConsentStatus]
    CONSENT_STATUS_ACTIVE: _ClassVar[ConsentStatus]
    CONSENT_STATUS_REVOKED: _ClassVar[ConsentStatus]
    CONSENT_STATUS_EXPIRED: _ClassVar[ConsentStatus]
    CONSENT_STATUS_EXHAUSTED: _ClassVar[ConsentStatus]
DATA_CATEGORY_UNSPECIFIED: DataCategory
DATA_CATEGORY_INSURANCE: DataCategory
DATA_CATEGORY_HEALTH_LAB: DataCategory
DATA_CATEGORY_HEALTH_IMAGING: DataCategory
DATA_CATEGORY_HEALTH_DOCUMENTS: DataCategory
DATA_CATEGORY_LIBRARY: DataCategory
DATA_CATEGORY_TRANSIT: DataCategory
CONSENT_STATUS_UNSPECIFIED: ConsentStatus
CONSENT_STATUS_ACTIVE: ConsentStatus
CONSENT_STATUS_REVOKED: ConsentStatus
CONSENT_STATUS_EXPIRED: ConsentStatus
CONSENT_STATUS_EXHAUSTED: ConsentStatus

class Grantee(_message.Message):
    __slots__ = ("org_id", "org_type_in_district")
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_TYPE_IN_DISTRICT_FIELD_NUMBER: _ClassVar[int]
    org_id: str
    org_type_in_district: OrgTypeInDistrict
    def __init__(self, org_id: _Optional[str] = ..., org_type_in_district: _Optional[_Union[OrgTypeInDistrict, _Mapping]] = ...) -> None: ...

class OrgTypeInDistrict(_message.Message):
    __slots__ = ("org_type", "district")
    ORG_TYPE_FIELD_NUMBER: _ClassVar[int]
    DISTRICT_FIELD_NUMBER: _ClassVar[int]
    org_type: str
    district: str
    def __init__(self, org_type: _Optional[str] = ..., district: _Optional[str] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("consent_id", "grantee", "categories", "purposes", "valid_from", "valid_until", "max_uses", "uses", "status", "granted_at", "revoked_at")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    grantee: Grantee
    categories: _containers.RepeatedScalarFieldContainer[DataCategory]
    purposes: _containers.RepeatedScalarFieldContainer[_common_pb2.Purpose]
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    max_uses: int
    uses: int
    status: ConsentStatus
    granted_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, consent_id: _Optional[str] = ..., grantee: _Optional[_Union[Grantee, _Mapping]] = ..., categories: _Optional[_Iterable[_Union[DataCategory, str]]] = ..., purposes: _Optional[_Iterable[_Union[_common_pb2.Purpose, str]]] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_uses: _Optional[int] = ..., uses: _Optional[int] = ..., status: _Optional[_Union[ConsentStatus, str]] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GrantConsentRequest(_message.Message):
    __slots__ = ("card", "purpose", "grantee", "categories", "purposes", "valid_from", "valid_until", "max_uses")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MAX_USES_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    grantee: Grantee
    categories: _containers.RepeatedScalarFieldContainer[DataCategory]
    purposes: _containers.RepeatedScalarFieldContainer[_common_pb2.Purpose]
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    max_uses: int
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., grantee: _Optional[_Union[Grantee, _Mapping]] = ..., categories: _Optional[_Iterable[_Union[DataCategory, str]]] = ..., purposes: _Optional[_Iterable[_Union[_common_pb2.Purpose, str]]] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_uses: _Optional[int] = ...) -> None: ...

class GrantConsentResponse(_message.Message):
    __slots__ = ("consent", "artefact", "decision", "receipt")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    ARTEFACT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    artefact: str
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., artefact: _Optional[str] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("card", "purpose", "consent_id")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    consent_id: str
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., consent_id: _Optional[str] = ...) -> None: ...

class RevokeConsentResponse(_message.Message):
    __slots__ = ("consent", "decision", "receipt")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class ListConsentsRequest(_message.Message):
    __slots__ = ("card", "purpose")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ...) -> None: ...

class ListConsentsResponse(_message.Message):
    __slots__ = ("consents", "decision", "receipt")
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[Consent]
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, consents: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...

class GetAccessHistoryRequest(_message.Message):
    __slots__ = ("card", "purpose", "page_size", "page_token")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    page_size: int
    page_token: str
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AccessEvent(_message.Message):
    __slots__ = ("index", "leaf", "inclusion_proof", "time", "org", "org_type", "rpc", "category", "purpose", "basis", "consent_id", "outcome", "reason", "emergency", "previous_index")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    ORG_TYPE_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    leaf: bytes
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    time: _timestamp_pb2.Timestamp
    org: str
    org_type: str
    rpc: str
    category: str
    purpose: _common_pb2.Purpose
    basis: str
    consent_id: str
    outcome: str
    reason: str
    emergency: bool
    previous_index: int
    def __init__(self, index: _Optional[int] = ..., leaf: _Optional[bytes] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., org: _Optional[str] = ..., org_type: _Optional[str] = ..., rpc: _Optional[str] = ..., category: _Optional[str] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[str] = ..., consent_id: _Optional[str] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., emergency: _Optional[bool] = ..., previous_index: _Optional[int] = ...) -> None: ...

class GetAccessHistoryResponse(_message.Message):
    __slots__ = ("checkpoint", "events", "next_page_token", "decision", "receipt")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: bytes
    events: _containers.RepeatedCompositeFieldContainer[AccessEvent]
    next_page_token: str
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, checkpoint: _Optional[bytes] = ..., events: _Optional[_Iterable[_Union[AccessEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
