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
    insurance_pb2_grpc,
    transit_pb2_grpc,
)
from gateway.audit.log import AuditLog
from gateway.backends import Ports
from gateway.pipeline import Pipeline
from gateway.ports import ELIGIBILITY_BACKEND, INSURANCE_BACKEND
from gateway.services import SERVICES
from gateway.services.audit import AuditService
from gateway.services.card import CardService
from gateway.services.insurance import InsuranceService
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
    return AuditService(parts.pipeline, parts.audit_log)


def _card(parts: ServiceParts) -> CardService:
    return CardService(parts.pipeline, parts.tokens)


def _insurance(parts: ServiceParts) -> InsuranceService:
    backend = parts.ports.get(INSURANCE_BACKEND)
    return InsuranceService(parts.pipeline, backend.port, timeout=backend.timeout_s)


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
        descriptor("TransitService"),
        transit_pb2_grpc.add_TransitServiceServicer_to_server,
        _transit,
    ),
)
