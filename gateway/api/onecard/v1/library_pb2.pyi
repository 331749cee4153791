from gateway.api.onecard.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetPatronStatusRequest(_message.Message):
    __slots__ = ("card", "purpose", "basis", "library_id")
    CARD_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_ID_FIELD_NUMBER: _ClassVar[int]
    card: _common_pb2.CardRef
    purpose: _common_pb2.Purpose
    basis: _common_pb2.LawfulBasis
    library_id: str
    def __init__(self, card: _Optional[_Union[_common_pb2.CardRef, _Mapping]] = ..., purpose: _Optional[_Union[_common_pb2.Purpose, str]] = ..., basis: _Optional[_Union[_common_pb2.LawfulBasis, _Mapping]] = ..., library_id: _Optional[str] = ...) -> None: ...

class PatronBlocks(_message.Message):
    __slots__ = ("charge_privileges_denied", "renewal_privileges_denied", "recall_privileges_denied", "hold_privileges_denied", "card_reported_lost", "too_many_items_charged", "too_many_items_overdue", "too_many_renewals", "too_many_claims_of_items_returned", "too_many_items_lost", "excessive_outstanding_fines", "excessive_outstanding_fees", "recall_overdue", "too_many_items_billed")
    CHARGE_PRIVILEGES_DENIED_FIELD_NUMBER: _ClassVar[int]
    RENEWAL_PRIVILEGES_DENIED_FIELD_NUMBER: _ClassVar[int]
    RECALL_PRIVILEGES_DENIED_FIELD_NUMBER: _ClassVar[int]
    HOLD_PRIVILEGES_DENIED_FIELD_NUMBER: _ClassVar[int]
    CARD_REPORTED_LOST_FIELD_NUMBER: _ClassVar[int]
    TOO_MANY_ITEMS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    TOO_MANY_ITEMS_OVERDUE_FIELD_NUMBER: _ClassVar[int]
    TOO_MANY_RENEWALS_FIELD_NUMBER: _ClassVar[int]
    TOO_MANY_CLAIMS_OF_ITEMS_RETURNED_FIELD_NUMBER: _ClassVar[int]
    TOO_MANY_ITEMS_LOST_FIELD_NUMBER: _ClassVar[int]
    EXCESSIVE_OUTSTANDING_FINES_FIELD_NUMBER: _ClassVar[int]
    EXCESSIVE_OUTSTANDING_FEES_FIELD_NUMBER: _ClassVar[int]
    RECALL_OVERDUE_FIELD_NUMBER: _ClassVar[int]
    TOO_MANY_ITEMS_BILLED_FIELD_NUMBER: _ClassVar[int]
    charge_privileges_denied: bool
    renewal_privileges_denied: bool
    recall_privileges_denied: bool
    hold_privileges_denied: bool
    card_reported_lost: bool
    too_many_items_charged: bool
    too_many_items_overdue: bool
    too_many_renewals: bool
    too_many_claims_of_items_returned: bool
    too_many_items_lost: bool
    excessive_outstanding_fines: bool
    excessive_outstanding_fees: bool
    recall_overdue: bool
    too_many_items_billed: bool
    def __init__(self, charge_privileges_denied: _Optional[bool] = ..., renewal_privileges_denied: _Optional[bool] = ..., recall_privileges_denied: _Optional[bool] = ..., hold_privileges_denied: _Optional[bool] = ..., card_reported_lost: _Optional[bool] = ..., too_many_items_charged: _Optional[bool] = ..., too_many_items_overdue: _Optional[bool] = ..., too_many_renewals: _Optional[bool] = ..., too_many_claims_of_items_returned: _Optional[bool] = ..., too_many_items_lost: _Optional[bool] = ..., excessive_outstanding_fines: _Optional[bool] = ..., excessive_outstanding_fees: _Optional[bool] = ..., recall_overdue: _Optional[bool] = ..., too_many_items_billed: _Optional[bool] = ...) -> None: ...

class ItemCounts(_message.Message):
    __slots__ = ("holds", "overdue", "charged", "fine_items")
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    OVERDUE_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    FINE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    holds: int
    overdue: int
    charged: int
    fine_items: int
    def __init__(self, holds: _Optional[int] = ..., overdue: _Optional[int] = ..., charged: _Optional[int] = ..., fine_items: _Optional[int] = ...) -> None: ...

class GetPatronStatusResponse(_message.Message):
    __slots__ = ("library_id", "patron_known", "valid", "good_standing", "blocks", "counts", "has_fines", "fine_amount", "currency", "masked_name", "decision", "receipt")
    LIBRARY_ID_FIELD_NUMBER: _ClassVar[int]
    PATRON_KNOWN_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    GOOD_STANDING_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    HAS_FINES_FIELD_NUMBER: _ClassVar[int]
    FINE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MASKED_NAME_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    library_id: str
    patron_known: bool
    valid: bool
    good_standing: bool
    blocks: PatronBlocks
    counts: ItemCounts
    has_fines: bool
    fine_amount: str
    currency: str
    masked_name: str
    decision: _common_pb2.AccessDecision
    receipt: _common_pb2.AuditReceipt
    def __init__(self, library_id: _Optional[str] = ..., patron_known: _Optional[bool] = ..., valid: _Optional[bool] = ..., good_standing: _Optional[bool] = ..., blocks: _Optional[_Union[PatronBlocks, _Mapping]] = ..., counts: _Optional[_Union[ItemCounts, _Mapping]] = ..., has_fines: _Optional[bool] = ..., fine_amount: _Optional[str] = ..., currency: _Optional[str] = ..., masked_name: _Optional[str] = ..., decision: _Optional[_Union[_common_pb2.AccessDecision, _Mapping]] = ..., receipt: _Optional[_Union[_common_pb2.AuditReceipt, _Mapping]] = ...) -> None: ...
