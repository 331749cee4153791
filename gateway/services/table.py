"""The service table: each onecard.v1 service the gateway serves, and how it is built.

A row per service: its descriptor (from ``gateway.services.SERVICES``), the generated function
that adds its servicer to a gRPC server, and a factory that builds the servicer from
``ServiceParts`` (the pipeline, the wired back ends' ports and the gateway's own parts).
Bootstrap registers exactly the rows it is given; the audited RPCs, the health and reflection
names and the policies' response types all follow from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from gateway.api.onecard.v1 import (
    audit_pb2_grpc,
    card_pb2_grpc,
    consent_pb2_grpc,
    health_pb2_grpc,
    insurance_pb2_grpc,
    library_pb2_grpc,
    transit_pb2_grpc,
)
from gateway.audit.log import AuditLog
from gateway.backends import Ports
from gateway.pipeline import Pipeline
from gateway.ports import ELIGIBILITY_BACKEND, HEALTH_RECORDS, INSURANCE_BACKEND, LIBRARY_BACKEND
from gateway.services import SERVICES
from gateway.services.audit import AuditService
from gateway.services.card import CardService
from gateway.services.consent import ConsentParts, ConsentService
from gateway.services.health import HealthRecordService
from gateway.services.history import AccessHistory
from gateway.services.insurance import InsuranceService
from gateway.services.library import LibraryService
from gateway.services.transit import TransitService
from gateway.tokens import CardTokens

__all__ = ["SERVICE_TABLE", "ServiceParts", "ServiceRow", "descriptor"]


@dataclass(frozen=True, slots=True)
class ServiceParts:
    """What a servicer may be built from."""

    pipeline: Pipeline
    ports: Ports
    tokens: CardTokens
    audit_log: AuditLog
    consents: ConsentParts | None = None  # the consent store, artefact signer and pseudonyms
    history_key: bytes = b""  # seals access-history page tokens (HMAC)


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """One service: its descriptor, ``add_..._to_server`` and the factory of its servicer."""

    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    build: Callable[[ServiceParts], object]


def descriptor(name: str) -> ServiceDescriptor:
    """The descriptor of the onecard.v1 service ``name`` in ``SERVICES``."""
    return next(service for service in SERVICES if service.name == name)


def _audit(parts: ServiceParts) -> AuditService:
    kept = parts.consents.store.justifications if parts.consents is not None else None
    return AuditService(parts.pipeline, parts.audit_log, kept)


def _card(parts: ServiceParts) -> CardService:
    return CardService(parts.pipeline, parts.tokens)


def _insurance(parts: ServiceParts) -> InsuranceService:
    backend = parts.ports.get(INSURANCE_BACKEND)
    return InsuranceService(parts.pipeline, backend.port, timeout=backend.timeout_s)


def _consent(parts: ServiceParts) -> ConsentService:
    if parts.consents is None:
        raise ValueError("ConsentService needs ServiceParts.consents")
    history = AccessHistory(parts.pipeline, parts.audit_log, page_key=parts.history_key)
    return ConsentService(parts.pipeline, parts.consents, history)


def _library(parts: ServiceParts) -> LibraryService:
    backend = parts.ports.get(LIBRARY_BACKEND)
    return LibraryService(parts.pipeline, backend.port, timeout=backend.timeout_s)


def _health(parts: ServiceParts) -> HealthRecordService:
    backend = parts.ports.get(HEALTH_RECORDS)
    return HealthRecordService(parts.pipeline, backend.port, timeout=backend.timeout_s)


def _transit(parts: ServiceParts) -> TransitService:
    backend = parts.ports.get(ELIGIBILITY_BACKEND)
    return TransitService(parts.pipeline, backend.port, timeout=backend.timeout_s)


SERVICE_TABLE: tuple[ServiceRow, ...] = (
    ServiceRow(
        descriptor("AuditService"), audit_pb2_grpc.add_AuditServiceServicer_to_server, _audit
    ),
    ServiceRow(descriptor("CardService"), card_pb2_grpc.add_CardServiceServicer_to_server, _card),
    ServiceRow(
        descriptor("InsuranceService"),
        insurance_pb2_grpc.add_InsuranceServiceServicer_to_server,
        _insurance,
    ),
    ServiceRow(
        descriptor("ConsentService"),
        consent_pb2_grpc.add_ConsentServiceServicer_to_server,
        _consent,
    ),
    ServiceRow(
        descriptor("LibraryService"),
        library_pb2_grpc.add_LibraryServiceServicer_to_server,
        _library,
    ),
    ServiceRow(
        descriptor("HealthRecordService"),
        health_pb2_grpc.add_HealthRecordServiceServicer_to_server,
        _health,
    ),
    ServiceRow(
        descriptor("TransitService"),
        transit_pb2_grpc.add_TransitServiceServicer_to_server,
        _transit,
    ),
)
