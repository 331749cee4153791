"""Social insurance and card registry back end: JSON over HTTP shaped like "1101 person info".

``SocialInsuranceClient`` implements ``gateway.ports.CardRegistry`` and ``InsuranceBackend``;
``start_reference_server`` runs the reference back end on loopback with the synthetic
population of ``seed``. The wire format, including OneCard's ``CR01`` card registry extension,
is described in ``wire``. ``wire_social_insurance`` is the back end's wiring function (its row
in ``gateway.backends.BACKENDS``).
"""

from adapters.social_insurance.client import SocialInsuranceClient
from adapters.social_insurance.reference import (
    ReferenceServer,
    build_app,
    start_reference_server,
)
from adapters.social_insurance.seed import Person, Population
from adapters.social_insurance.wiring import wire_backend as wire_social_insurance

__all__ = [
    "Person",
    "Population",
    "ReferenceServer",
    "SocialInsuranceClient",
    "build_app",
    "start_reference_server",
    "wire_social_insurance",
]
