"""Library patrons over SIP2 2.00: the libraries of the city's network behind the one card.

``codec`` is our SIP2 codec (messages, ``AY``/``AZ`` error detection); ``connection`` one
logged-in connection; ``client.Sip2Libraries`` implements ``gateway.ports.LibraryBackend`` with
a pool per library; ``settings`` reads ``[backends.library]``; ``reference`` runs the reference
network on ``pysip2`` with the patrons of ``seed``. ``wire_library`` is the back end's wiring
function (its row in ``gateway.backends.BACKENDS``).
"""

from adapters.sip2.client import Sip2Libraries
from adapters.sip2.reference import ReferenceNetwork, start_reference_network
from adapters.sip2.wiring import wire_backend as wire_library

__all__ = ["ReferenceNetwork", "Sip2Libraries", "start_reference_network", "wire_library"]
