"""Client side helpers: a mutual-TLS channel as one of the registered organisations.

Used by the demo, the tests and the benchmarks; any gRPC client with the org's certificate
works the same way (see the README for ``buf curl``).
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.pki import PkiLayout


def org_credentials(pki: PkiLayout, org_id: str) -> grpc.ChannelCredentials:
    """Channel credentials presenting ``org_id``'s client certificate and trusting the CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key(org_id).read_bytes(),
        certificate_chain=pki.client_cert(org_id).read_bytes(),
    )


def org_channel(target: str, pki: PkiLayout, org_id: str) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` authenticated as ``org_id``."""
    return grpc.aio.secure_channel(target, org_credentials(pki, org_id))


def refusal_reason(err: grpc.aio.AioRpcError) -> str:
    """The gateway's machine-readable reason for a refusal (its ``onecard-reason`` trailer)."""
    trailers: Any = err.trailing_metadata() or ()
    return next((str(value) for key, value in trailers if key == "onecard-reason"), "")
