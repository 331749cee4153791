"""The gateway's one error tree.

Every refusal or failure is a ``GatewayError`` subclass that carries its gRPC status code, a
short machine-readable ``reason`` (for metrics, logs and the ``onecard-reason`` trailer) and a
message that is safe to show the caller: it never contains a card number, an ID number, a name,
or a back end's raw error text. Only the interceptor turns these into gRPC statuses.
"""

from __future__ import annotations

import grpc


class SetupError(Exception):
    """The gateway cannot start, or a command cannot run, as configured.

    Not a gRPC error: it is shown to the operator, and its message says what to fix.
    """


class GatewayError(Exception):
    """Root of every error the gateway reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidRequest(GatewayError):
    """The request is malformed: a field is missing, too long, or of the wrong form."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_request"


class MalformedCardNumber(InvalidRequest):
    """The card number fails the format or check-digit test."""

    reason = "malformed_card_number"


class Unauthenticated(GatewayError):
    """The caller's certificate does not name an organisation the gateway knows."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthenticated"


class PermissionDenied(GatewayError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class OrgSuspended(PermissionDenied):
    """The caller's organisation is registered but not active."""

    reason = "org_suspended"


class BasisRefused(PermissionDenied):
    """The lawful basis (token, consent, emergency) is missing or does not hold.

    When the refused basis is bound to a citizen (their consent, their own authentic token for
    the card the request names) or claims break-glass access to the request's card, the
    refusal says whom it concerns, for the audit entry only, so that the attempt shows in
    that citizen's access history: ``subject`` (the holder's pseudonym, known from a consent)
    or ``card_bound`` (the holder of the request's card). ``reference`` names the basis in the
    entry (``consent:<id>``). A caller never sees any of them: its answer is the same.
    """

    reason = "basis_refused"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        subject: str = "",
        card_bound: bool = False,
        reference: str = "",
    ) -> None:
        super().__init__(message, reason=reason)
        self.subject, self.card_bound, self.reference = subject, card_bound, reference


class PolicyDenied(PermissionDenied):
    """The access policy denies this request."""

    reason = "policy_denied"


class CardNotFound(GatewayError):
    """The card registry has no holder for this card number."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "card_not_found"


class RecordNotFound(GatewayError):
    """No record of this card holder has the id asked for (in the category asked for)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "record_not_found"


class CardNotUsable(GatewayError):
    """The card exists but its status is not normal (lost, locked, cancelled, ...)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "card_not_normal"


class ConsentEnded(GatewayError):
    """The consent has already ended (revoked or expired): there is nothing left to revoke."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "consent_ended"


class ConsentNotFound(GatewayError):
    """The card holder has no consent with this id."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "consent_unknown"


class BackendUnavailable(GatewayError):
    """A back end could not be reached or answered with an error."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "backend_unavailable"


class BackendTimeout(GatewayError):
    """A back end did not answer within the deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "backend_timeout"


class StoreUnavailable(GatewayError):
    """The gateway's own durable store could not be written: fail closed."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "store_unavailable"


class RateLimitUnavailable(GatewayError):
    """The rate limits shared between gateway processes cannot be read: fail closed (a call
    is never admitted without its organisation's limit)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "rate_limit_unavailable"


class NotSupported(GatewayError):
    """The request asks for something this gateway does not offer (yet)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "not_supported"


class RequestBudgetExceeded(GatewayError):
    """The request used up its budget (the caller's deadline or the configured limit)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "request_budget_exceeded"


class Shed(GatewayError):
    """Admission control refused the call before any work: the caller should retry later.

    ``retry_after_ms`` is the earliest time a retry can succeed, as far as the gateway knows.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "shed"

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Overloaded(Shed):
    """The gateway already has as many calls in flight as it is configured to take."""

    reason = "overloaded"


class OrgBusy(Shed):
    """The caller's organisation already has as many calls in flight as one org may have."""

    reason = "org_busy"


class RateLimited(Shed):
    """The caller's organisation has used up its rate limit (token bucket) for now."""

    reason = "rate_limited"


class CutOff(GatewayError):
    """The gateway shut down while the call was in flight."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "shutdown"


class CallerDeadline(GatewayError):
    """The caller's deadline passed while the call was in flight."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "caller_deadline"


class CallerCancelled(GatewayError):
    """The caller cancelled the call while it was in flight."""

    code = grpc.StatusCode.CANCELLED
    reason = "caller_cancelled"
