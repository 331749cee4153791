"""Who is calling and which call this is: values bound once by the interceptor.

The interceptor authenticates the caller from its mutual-TLS certificate and binds a ``Call``
to a context variable for the duration of the RPC; services read it with ``current_call()``.
``Call.report`` is how the pipeline hands the call's final ``Findings`` back, once.

``Call.record`` writes the call's audit entry early, before its response is built, for a call
whose response must contain its own entry (a citizen's access history). The rule (see the
interceptor): the early entry says the call was answered (outcome OK, nothing hashed as
released, since the answer holds the entry); the interceptor attaches its receipt instead of
appending another entry; if the call then fails after all, the interceptor appends a second
entry with the same request id that records the failure, so no entry claims an answer alone
when none was released.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.audit.log import Receipt
from gateway.errors import NotSupported
from gateway.findings import Findings
from gateway.orgs import Org


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated organisation and the certificate it presented."""

    org: Org
    cert_sha256: str


@dataclass(frozen=True, slots=True)
class Call:
    """One RPC as the gateway received it."""

    request_id: str
    rpc: str
    caller: Caller
    received_at: dt.datetime
    report: Callable[[Findings], None] = field(default=lambda findings: None)
    record: Callable[[Findings], Awaitable[Receipt]] = field(default=lambda findings: _unaudited())


async def _unaudited() -> Receipt:
    raise NotSupported("this call is not audited: it cannot write its entry early")


_current: contextvars.ContextVar[Call] = contextvars.ContextVar("onecard_call")


def bind_call(call: Call) -> contextvars.Token[Call]:
    """Bind ``call`` for the running RPC (interceptor only)."""
    return _current.set(call)


def reset_call(token: contextvars.Token[Call]) -> None:
    """Undo ``bind_call``."""
    _current.reset(token)


def current_call() -> Call:
    """The RPC being served. Raises LookupError outside the interceptor's scope."""
    return _current.get()
