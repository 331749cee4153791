"""Health records back end: HL7 FHIR R4 REST, from one or more FHIR servers.

``FhirClient`` implements ``gateway.ports.HealthRecords``; ``start_reference_fhir_server`` runs
the reference FHIR server on loopback with the synthetic records of ``seed`` (lab panels,
imaging studies, discharge summaries for the synthetic population). ``wire_fhir`` is the back
end's wiring function (its row in ``gateway.backends.BACKENDS``).
"""

from adapters.fhir.client import FhirClient, Source
from adapters.fhir.reference import ReferenceFhirServer, start_reference_fhir_server
from adapters.fhir.wiring import wire_backend as wire_fhir

__all__ = [
    "FhirClient",
    "ReferenceFhirServer",
    "Source",
    "start_reference_fhir_server",
    "wire_fhir",
]
