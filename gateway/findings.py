"""What the stages of one call established: a frozen value, handed to the audit stage once.

The pipeline builds ``Findings`` from the frozen results of its stages (the basis, the resolved
card, the policy decision) as far as the call got, and reports the final value once, when the
call ends, whether it answered or refused. The interceptor hands that value to the audit stage.
No stage writes into an object that a later stage reads.

Never personal data: the citizen appears only as the keyed pseudonym ``subject``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit.log import Spend


@dataclass(frozen=True, slots=True)
class Findings:
    """The audit-relevant facts of one call; empty fields: the stage was not reached."""

    purpose: str = ""
    category: str = ""  # the data category the call reads ("insurance", ...), "" for none
    basis: str = ""  # the basis kind, as policies see it
    basis_ref: str = ""  # identifies the basis without personal data (token:<id>, ...)
    emergency: bool = False
    subject: str = ""  # the card holder's pseudonym
    decision: str = ""  # allow / deny
    policies: tuple[str, ...] = ()
    policy_set: str = ""
    backend: str = ""
    spend: Spend | None = None  # what an answer uses up or changes (token, consent use, grant)


NOTHING = Findings()
