"""gRPC services: translate protobuf requests into pipeline asks and results into responses.

Services never turn errors into statuses (the interceptor does) and never skip a stage (the
pipeline runs them all). ``SERVICES`` names the onecard.v1 services this gateway serves.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from gateway.api.onecard.v1 import (
    audit_pb2,
    card_pb2,
    consent_pb2,
    health_pb2,
    insurance_pb2,
    library_pb2,
    transit_pb2,
)

SERVICES: tuple[ServiceDescriptor, ...] = (
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    card_pb2.DESCRIPTOR.services_by_name["CardService"],
    insurance_pb2.DESCRIPTOR.services_by_name["InsuranceService"],
    consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
    library_pb2.DESCRIPTOR.services_by_name["LibraryService"],
    health_pb2.DESCRIPTOR.services_by_name["HealthRecordService"],
    transit_pb2.DESCRIPTOR.services_by_name["TransitService"],
)


def response_types(services: tuple[ServiceDescriptor, ...] = SERVICES) -> dict[str, Descriptor]:
    """Each RPC's name (a policy's action) and its response message."""
    return {m.name: m.output_type for service in services for m in service.methods}
