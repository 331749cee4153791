"""The shared table from back-end failures to gateway errors."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
import structlog
from structlog.testing import capture_logs

from adapters.errors import Failure, backend_error, map_transport_errors
from gateway.errors import BackendTimeout, BackendUnavailable, CardNotFound, InvalidRequest

BACKEND = "FHIR server"


@pytest.mark.parametrize(
    ("failure", "kind", "code", "why"),
    [
        (Failure.TIMEOUT, BackendTimeout, "DEADLINE_EXCEEDED", "backend_timeout"),
        (Failure.UNREACHABLE, BackendUnavailable, "UNAVAILABLE", "backend_unavailable"),
        (Failure.HTTP_STATUS, BackendUnavailable, "UNAVAILABLE", "backend_unavailable"),
        (Failure.REFUSED, BackendUnavailable, "UNAVAILABLE", "backend_unavailable"),
        (Failure.MALFORMED, BackendUnavailable, "UNAVAILABLE", "backend_malformed"),
        (Failure.WRONG_PERSON, BackendUnavailable, "UNAVAILABLE", "backend_malformed"),
        (Failure.NOT_FOUND, CardNotFound, "NOT_FOUND", "card_not_found"),
        (Failure.UNVERIFIED, BackendUnavailable, "UNAVAILABLE", "backend_unverified"),
    ],
)
def test_every_failure_has_one_error_status_and_reason(
    failure: Failure, kind: type, code: str, why: str
) -> None:
    error = backend_error(failure, BACKEND, timeout=0.25, status=502)

    assert type(error) is kind
    assert (error.code, error.reason) == (getattr(grpc.StatusCode, code), why)
    assert "{" not in error.message


def test_messages_name_the_back_end_and_the_numbers_only() -> None:
    assert backend_error(Failure.TIMEOUT, BACKEND, timeout=0.25).message == (
        "FHIR server did not answer within 0.25s"
    )
    assert backend_error(Failure.HTTP_STATUS, BACKEND, status=503).message == (
        "FHIR server answered HTTP 503"
    )


@pytest.mark.parametrize(
    ("raised", "kind", "event"),
    [
        (TimeoutError(), BackendTimeout, "fhir_timeout"),
        (aiohttp.ServerTimeoutError("read timeout"), BackendTimeout, "fhir_timeout"),
        (ConnectionRefusedError(111, "secret text"), BackendUnavailable, "fhir_unreachable"),
        (aiohttp.ClientPayloadError("secret text"), BackendUnavailable, "fhir_unreachable"),
        (asyncio.IncompleteReadError(b"secret text", 99), BackendUnavailable, "fhir_unreachable"),
    ],
)
def test_transport_exceptions_become_gateway_errors_without_their_text(
    raised: Exception, kind: type, event: str
) -> None:
    log = structlog.get_logger("test")
    with (
        capture_logs() as logs,
        pytest.raises(kind) as info,
        map_transport_errors(BACKEND, timeout=1, log=log, prefix="fhir"),
    ):
        raise raised

    assert "secret" not in info.value.message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert [entry["event"] for entry in logs] == [event]
    assert "secret" not in str(logs)


@pytest.mark.parametrize("raised", [InvalidRequest("ours"), ValueError("a bug")])
def test_gateway_errors_and_bugs_pass_through_unchanged(raised: Exception) -> None:
    log = structlog.get_logger("test")
    with (
        pytest.raises(type(raised)) as info,
        map_transport_errors(BACKEND, timeout=1, log=log, prefix="fhir"),
    ):
        raise raised

    assert info.value is raised


class _LoginRefused(Exception):
    pass


@pytest.mark.parametrize(
    ("raised", "kind", "reason"),
    [
        (_LoginRefused("secret text"), BackendUnavailable, "backend_unavailable"),
        (
            UnicodeDecodeError("utf-8", b"secret", 0, 1, "bad"),
            BackendUnavailable,
            "backend_malformed",
        ),
    ],
)
def test_an_adapters_protocol_exceptions_are_named_in_the_same_table(
    raised: Exception, kind: type, reason: str
) -> None:
    protocol = ((_LoginRefused, Failure.REFUSED), (ValueError, Failure.MALFORMED))
    log = structlog.get_logger("test")
    with (
        capture_logs() as logs,
        pytest.raises(kind) as info,
        map_transport_errors(BACKEND, timeout=1, log=log, prefix="sip2", protocol=protocol),
    ):
        raise raised

    assert info.value.reason == reason and "secret" not in info.value.message
    assert "secret" not in str(logs) and len(logs) == 1
