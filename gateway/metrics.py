"""Prometheus metrics, served on their own loopback port.

Each server owns its registry (tests run several gateways in one process). Labels never carry
personal data: only RPC names, status codes, decisions, refusal reasons and org ids (an
organisation, never a person; as many as the registry holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


@dataclass(frozen=True)
class Metrics:
    """The gateway's counters and histograms."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    decisions: Counter
    shed: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "onecard_requests",
                "RPCs handled, by method, gRPC status code and reason.",
                ["rpc", "code", "reason"],
                registry=registry,
            ),
            latency=Histogram(
                "onecard_request_seconds",
                "RPC latency inside the gateway, by method.",
                ["rpc"],
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                registry=registry,
            ),
            decisions=Counter(
                "onecard_policy_decisions",
                "Access-policy decisions, by action and outcome.",
                ["action", "decision"],
                registry=registry,
            ),
            shed=Counter(
                "onecard_shed_calls",
                "onecard.v1 calls refused by admission control before any work, by caller org "
                "and reason (overloaded, rate_limited).",
                ["org", "reason"],
                registry=registry,
            ),
        )

    def serve(self, host: str, port: int) -> WSGIServer:
        """Serve /metrics on host:port (port 0 picks one) in a thread; ``.shutdown()`` stops it."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
