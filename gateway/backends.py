"""The back-end table: which back ends the gateway wires, and the ports they provide.

A row per back end: its name (which is also its settings group, ``[backends.NAME]``) and its
wiring function. ``wire_backends`` calls each row's function with its group, registers the
closer it returns, and collects the ports into ``Ports``, where services and the pipeline look
them up by ``PortKey``. Adding a back end is a row here, not an edit of ``gateway.bootstrap``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from adapters.eligibility import wire_eligibility
from adapters.fhir import wire_fhir
from adapters.sip2 import wire_library
from adapters.social_insurance import wire_social_insurance
from gateway.config import BackendSettings, Settings
from gateway.errors import SetupError
from gateway.ports import P, PortKey, WiredBackend

__all__ = ["BACKENDS", "BackendRow", "Bound", "Ports", "WiringError", "wire_backends"]

Closer = Callable[[], Awaitable[None]]


class WiringError(SetupError):
    """The back-end table and the settings do not fit together; the message says how."""


@dataclass(frozen=True, slots=True)
class BackendRow:
    """One back end: ``name`` (its settings group) and the function that wires it."""

    name: str
    wire: Callable[[BackendSettings], Awaitable[WiredBackend]]


BACKENDS: tuple[BackendRow, ...] = (
    BackendRow("social_insurance", wire_social_insurance),
    BackendRow("library", wire_library),
    BackendRow("fhir", wire_fhir),
    BackendRow("eligibility", wire_eligibility),
)


@dataclass(frozen=True, slots=True)
class Bound(Generic[P]):
    """A wired port: its implementation, the back end providing it and that one's call cap."""

    port: P
    backend: str
    timeout_s: float


class Ports:
    """The ports the wired back ends provide, by key, and where each back end is reached."""

    def __init__(self, bound: Mapping[PortKey[Any], Bound[Any]], urls: Mapping[str, str]) -> None:
        self._bound = dict(bound)
        self.urls: Mapping[str, str] = dict(urls)

    def get(self, key: PortKey[P]) -> Bound[P]:
        """The back end's implementation of ``key``; ``WiringError`` when no back end has one."""
        try:
            bound: Bound[P] = self._bound[key]
        except KeyError:
            raise WiringError(
                f"no back end provides the {key.name} port (wired: "
                f"{', '.join(self.urls) or 'none'}); add a row to gateway.backends.BACKENDS"
            ) from None
        return bound


async def wire_backends(
    settings: Settings, rows: Sequence[BackendRow], closers: list[Closer]
) -> Ports:
    """Wire every row with its settings group; each closer goes into ``closers`` as it starts."""
    names = [row.name for row in rows]
    if duplicate := next((name for name in names if names.count(name) > 1), None):
        raise WiringError(f"back end {duplicate!r} has two rows in the back-end table")
    if unknown := sorted(set(settings.backends) - set(names)):
        raise WiringError(
            f"backends.{unknown[0]}: no such back end (known: {', '.join(names) or 'none'})"
        )
    bound: dict[PortKey[Any], Bound[Any]] = {}
    urls: dict[str, str] = {}
    for row in rows:
        group = settings.backend(row.name)
        if group.keys_dir is None:
            group = group.model_copy(update={"keys_dir": settings.data_dir / "keys"})
        wired = await row.wire(group)
        closers.append(_named(f"close_{row.name}", wired.close))
        urls[row.name] = wired.url
        for provided in wired.provides:
            if provided.key in bound:
                raise WiringError(
                    f"back ends {bound[provided.key].backend} and {row.name} both provide the "
                    f"{provided.key.name} port; one port, one back end"
                )
            bound[provided.key] = Bound(provided.implementation, row.name, group.timeout_s)
    return Ports(bound, urls)


def _named(name: str, close: Closer) -> Closer:
    """``close`` under a name ``Gateway.stop`` can report if it fails."""

    async def closer() -> None:
        await close()

    closer.__qualname__ = closer.__name__ = name
    return closer
