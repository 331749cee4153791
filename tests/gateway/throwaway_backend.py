"""A throw-away back end, "forecast", added through the seam as a real one would be.

A port (``Forecast`` and its key), a fake adapter, and the wiring function of its row:
``BackendRow("forecast", ForecastBackend())``. Its settings group is ``[backends.forecast]``;
nothing of the gateway is edited for it.
"""

from __future__ import annotations

from typing import Protocol

from gateway.config import BackendSettings
from gateway.ports import PortKey, Provided, WiredBackend


class Forecast(Protocol):
    async def tomorrow(self, district: str, *, timeout: float) -> str: ...


FORECAST: PortKey[Forecast] = PortKey("forecast")


class FakeForecast:
    """The adapter: remembers what it was wired with and whether it was closed."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self.closed = 0

    async def tomorrow(self, district: str, *, timeout: float) -> str:
        return "sunny"

    async def close(self) -> None:
        self.closed += 1


class ForecastBackend:
    """The row's wiring function, keeping each adapter it built so that tests can look."""

    def __init__(self) -> None:
        self.built: list[FakeForecast] = []

    async def __call__(self, settings: BackendSettings) -> WiredBackend:
        fake = FakeForecast(settings)
        self.built.append(fake)
        return WiredBackend((Provided(FORECAST, fake),), fake.close, settings.url or "fake:")
