"""Transit concessions: the Cal-ITP Eligibility Verification API (signed, encrypted JWTs).

``EligibilityClient`` implements ``gateway.ports.EligibilityBackend`` (``client``), speaking the
tokens of ``tokens`` with the keys of ``keys``; ``start_reference_server`` runs the reference
eligibility server on loopback, built on the ``eligibility-api`` package's server helpers and
deciding from the registers of ``registers`` (drawn from the social insurance population).
``wire_eligibility`` is the back end's wiring function (its row in
``gateway.backends.BACKENDS``).
"""

from adapters.eligibility.client import EligibilityClient
from adapters.eligibility.keys import PartyKeys, reference_pair
from adapters.eligibility.reference import ReferenceServer, build_app, start_reference_server
from adapters.eligibility.registers import Registers
from adapters.eligibility.tokens import Profile
from adapters.eligibility.wiring import wire_backend as wire_eligibility

__all__ = [
    "EligibilityClient",
    "PartyKeys",
    "Profile",
    "ReferenceServer",
    "Registers",
    "build_app",
    "reference_pair",
    "start_reference_server",
    "wire_eligibility",
]
