"""One table from back-end failures to the gateway's errors, shared by every adapter.

An adapter says what went wrong (a ``Failure``) and which back end it was; this module decides
the gateway error, its ``reason`` and its message, so that every adapter reports a failure the
same way and none puts a back end's own text into a message:

=================  ======================  ======================  =========================
failure            error                   reason                  when
=================  ======================  ======================  =========================
``TIMEOUT``        ``BackendTimeout``      ``backend_timeout``     no answer within the time
``UNREACHABLE``    ``BackendUnavailable``  ``backend_unavailable`` refused, reset, DNS, TLS
``HTTP_STATUS``    ``BackendUnavailable``  ``backend_unavailable`` an HTTP error status
``REFUSED``        ``BackendUnavailable``  ``backend_unavailable`` the protocol's own error
``MALFORMED``      ``BackendUnavailable``  ``backend_malformed``   not parseable, schema or
                                                                   field format mismatch,
                                                                   oversized
``WRONG_PERSON``   ``BackendUnavailable``  ``backend_malformed``   about another person
``NOT_FOUND``      ``CardNotFound``        ``card_not_found``      no such person
``NO_RECORD``      ``RecordNotFound``      ``record_not_found``    no such record of the person
``UNVERIFIED``     ``BackendUnavailable``  ``backend_unverified``  a signed answer failed its
                                                                   checks (signature, request
                                                                   id, freshness)
=================  ======================  ======================  =========================

``map_transport_errors`` (after httpx's ``map_exceptions``) turns the exceptions of a transport
(timeouts, ``OSError``, aiohttp's ``ClientError``, a stream's ``EOFError``), and the protocol
exceptions an adapter names with their failure, into those errors and logs one event,
``<prefix>_<failure>``, with the exception's type only.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any, Protocol

import aiohttp

from gateway.errors import (
    BackendTimeout,
    BackendUnavailable,
    CardNotFound,
    GatewayError,
    RecordNotFound,
)

__all__ = ["Failure", "backend_error", "map_transport_errors"]


class Failure(enum.Enum):
    """What went wrong with one back-end exchange."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    HTTP_STATUS = "http_error"
    REFUSED = "refused"
    MALFORMED = "malformed_answer"
    WRONG_PERSON = "wrong_person"
    NOT_FOUND = "person_not_found"
    NO_RECORD = "record_not_found"
    UNVERIFIED = "unverified_answer"


_DOWN, _MALFORMED = "backend_unavailable", "backend_malformed"
_TABLE: dict[Failure, tuple[type[GatewayError], str, str]] = {
    Failure.TIMEOUT: (
        BackendTimeout, "backend_timeout", "{backend} did not answer within {timeout:g}s"
    ),
    Failure.UNREACHABLE: (BackendUnavailable, _DOWN, "{backend} is unreachable"),
    Failure.HTTP_STATUS: (BackendUnavailable, _DOWN, "{backend} answered HTTP {status}"),
    Failure.REFUSED: (BackendUnavailable, _DOWN, "{backend} refused the request"),
    Failure.MALFORMED: (BackendUnavailable, _MALFORMED, "{backend} sent a malformed answer"),
    Failure.WRONG_PERSON: (
        BackendUnavailable, _MALFORMED, "{backend} answered for a different person"
    ),
    Failure.NOT_FOUND: (
        CardNotFound, "card_not_found", "no card holder is registered for this card number"
    ),
    Failure.NO_RECORD: (
        RecordNotFound, "record_not_found",
        "{backend} has no such record of this card holder in this category; "
        "use a record_id that ListHealthRecords returned",
    ),
    Failure.UNVERIFIED: (
        BackendUnavailable, "backend_unverified",
        "{backend} sent an answer that failed verification (signature, request id or freshness)",
    ),
}  # fmt: skip

# Checked in order: aiohttp's timeouts are ClientErrors and TimeoutErrors at once.
_TRANSPORT: tuple[tuple[type[BaseException], Failure], ...] = (
    (TimeoutError, Failure.TIMEOUT),
    (aiohttp.ClientError, Failure.UNREACHABLE),
    (OSError, Failure.UNREACHABLE),
    (EOFError, Failure.UNREACHABLE),  # a stream closed mid-answer (asyncio.IncompleteReadError)
)

ProtocolFailures = tuple[tuple[type[BaseException], Failure], ...]


def backend_error(
    failure: Failure, backend: str, *, timeout: float = 0.0, status: int = 0
) -> GatewayError:
    """The gateway error for ``failure`` of ``backend`` (a display name, e.g. "FHIR server")."""
    error_type, reason, template = _TABLE[failure]
    message = template.format(backend=backend, timeout=timeout, status=status)
    return error_type(message, reason=reason)


class WarningLog(Protocol):
    """What the shared failure handling needs of a logger: a structlog logger, or an
    adapter's own that binds its context only when it logs."""

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...


@contextlib.contextmanager
def map_transport_errors(
    backend: str,
    *,
    timeout: float,
    log: WarningLog,
    prefix: str,
    protocol: ProtocolFailures = (),
) -> Iterator[None]:
    """Turn the transport's exceptions inside the block into gateway errors (others pass).

    ``protocol``: the adapter's own exceptions and what each means (a refused login, a line
    that does not parse), checked before the transport's.
    """
    try:
        yield
    except GatewayError:
        raise
    except Exception as exc:
        rows = (*protocol, *_TRANSPORT)
        failure = next((f for kind, f in rows if isinstance(exc, kind)), None)
        if failure is None:
            raise
        if failure is Failure.TIMEOUT:
            log.warning(f"{prefix}_{failure.value}", timeout_s=timeout)
        else:
            log.warning(f"{prefix}_{failure.value}", error=type(exc).__name__)
        raise backend_error(failure, backend, timeout=timeout) from None
