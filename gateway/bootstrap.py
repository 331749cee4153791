"""Wiring: build every component from explicit settings and start the gateway.

Back ends come from a table (``gateway.backends.BACKENDS``: which adapter implements which
port) and services from another (``gateway.services.table.SERVICE_TABLE``); both are arguments
of ``start_gateway``, so adding a back end or a service is a row, not an edit here. Nothing is
built at import time; ``start_gateway`` returns a running ``Gateway`` that ``stop()`` shuts
down in reverse order (stop accepting, drain in-flight calls, close back ends, close the store).
``prepare_once`` makes what a first start makes, for a supervisor of several workers
(``gateway.workers``), which start with ``start_gateway(..., worker=True)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import errno
import json
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.admission import Admission, ShedAudit
from gateway.audit.record import Pseudonymizer
from gateway.audit.signer import Ed25519FileSigner, Signer, load_or_generate
from gateway.audit.stage import AuditStage
from gateway.backends import BACKENDS, BackendRow, Ports, wire_backends
from gateway.basis import BasisStage, default_verifiers
from gateway.cards import CardStage
from gateway.config import Settings
from gateway.consent_artefact import ArtefactSigner
from gateway.errors import SetupError
from gateway.interceptor import GatewayInterceptor
from gateway.keys import load_or_create_secret
from gateway.metrics import Metrics
from gateway.orgs import OrgRegistry
from gateway.pipeline import Pipeline
from gateway.pki import PkiLayout, ensure_pki
from gateway.policy import PolicyEngine
from gateway.ports import CARD_REGISTRY
from gateway.services import response_types
from gateway.services.consent import ConsentParts
from gateway.services.table import SERVICE_TABLE, ServiceParts, ServiceRow
from gateway.shared_buckets import SharedBuckets
from gateway.store import (
    SignerFor,
    Store,
    StoredLog,
    database_path,
    describe_store,
    open_store,
)
from gateway.store.lock import DataDirLock, is_served
from gateway.store.sqlite_keys import add_key, check_identity, recorded_keys
from gateway.tokens import CardTokens

_log = structlog.get_logger(__name__)
# The data directory's secrets (keys/), each made on the first start (gateway.keys).
_SECRETS = ("audit-pseudonym.key", "token.key", "request-id.key", "history-page.key")
# grpc-stubs does not describe grpc_health's asyncio servicer.
HealthServicer = health.aio.HealthServicer  # type: ignore[attr-defined]


class StartupError(SetupError):
    """The gateway cannot start with this configuration; the message says why."""


class ShutdownIncomplete(SetupError):
    """The gateway stopped serving, but a closing step (a final checkpoint, say) failed."""


@dataclass
class Gateway:
    """A running gateway."""

    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    ports: Ports  # the wired back ends' ports, and where each back end is reached
    pki: PkiLayout
    store: Store
    audit_log: StoredLog
    _interceptor: GatewayInterceptor
    admission: Admission
    metrics: Metrics
    _health: Any
    _shutdown_grace_s: float
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stopped: bool = False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds, then close."""
        if self._stopped:
            return
        self._stopped = True
        self._interceptor.stopping()
        await self._health.enter_graceful_shutdown()
        await self.server.stop(self._shutdown_grace_s if grace is None else grace)
        await self._interceptor.drain()  # calls cut off by the stop write their entries first
        failed = []
        for close in reversed(self._closers):
            try:
                await close()
            except Exception as exc:  # every step still runs: the store must close
                _log.error("gateway_close_failed", step=close.__qualname__, error=str(exc))
                failed.append(close.__qualname__.rsplit(".", 1)[-1])
        if failed:
            raise ShutdownIncomplete(
                f"stopped, but {', '.join(failed)} failed (see the gateway_close_failed log "
                f"lines; a full disk?); the next start checks the log and signs what is missing"
            )
        _log.info("gateway_stopped")

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _pki(settings: Settings) -> PkiLayout:
    if settings.pki_dir is None:
        return ensure_pki(settings.data_dir / "pki")
    layout = PkiLayout(settings.pki_dir)
    for path in (layout.ca_cert, layout.server_cert, layout.server_key):
        if not path.is_file():
            raise StartupError(f"{path}: missing (run: onecard pki init --dir {settings.pki_dir})")
    return layout


def _audit_signer(path: Path, origin: str, where: Path | str) -> SignerFor:
    """The log's signing key; a new log's is created, a missing one of an existing log is not."""

    def signer_for(keys: list[tuple[str, str]]) -> Signer:
        if path.exists():
            return Ed25519FileSigner(path, origin)
        if keys:
            raise StartupError(
                f"{path}: missing, but the audit log in {where} is signed with key "
                f"{keys[-1][1].rsplit('+', 1)[0]}: restore that key file (a new key would fork "
                f"the log's signatures; change keys deliberately with `onecard audit rotate-key`)"
            )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Ed25519FileSigner.generate(path, origin)

    return signer_for


def publish_verifier_keys(path: Path, keys: list[str]) -> None:
    """Write the log's published key set: one C2SP verifier key per line, oldest first."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # workers publish it at once
    tmp.write_text("".join(key + "\n" for key in keys))
    tmp.replace(path)


@dataclass(frozen=True)
class Rotation:
    """What ``rotate_audit_key`` did."""

    old_key: str
    new_key: str
    retired_file: Path
    published: Path


def rotate_audit_key(settings: Settings) -> Rotation:
    """Give the stopped log in ``settings.data_dir`` a new Ed25519 signing key, same origin.

    The old key file is kept, renamed ``audit-log.key.retired-<key id>``; the database records
    the new key as current (from the log's present size on); ``audit-log.pub`` lists every key,
    oldest first, so that the old checkpoints keep verifying. Refused while a gateway serves
    the directory, and for a key or origin that is not the log's current one.
    """
    data_dir = settings.data_dir
    key_file = data_dir / "keys" / "audit-log.key"
    db: Path | str
    if settings.store == "postgres":  # the database checks its schema; add_key takes its lock
        from gateway.store import pg_audit  # noqa: PLC0415 - only when chosen

        url = settings.database_url
        db = describe_store(settings.store, data_dir, url)
        keys_of: Callable[[], list[tuple[str, str]]] = lambda: pg_audit.recorded_keys(url)  # noqa: E731
        record: Callable[[Signer], list[str]] = lambda signer: pg_audit.add_key(url, signer)  # noqa: E731
    else:
        path = db = database_path(settings.store, data_dir)
        if not path.is_file():
            raise StartupError(f"{data_dir}: no audit log here (no {path.name}); nothing to rotate")
        keys_of = lambda: recorded_keys(path)  # noqa: E731
        record = lambda signer: add_key(path, signer)  # noqa: E731
    if is_served(data_dir):
        raise StartupError(
            f"{data_dir}: a gateway is serving this data directory; stop it first (a key is "
            f"rotated only while the log is stopped)"
        )
    lock = DataDirLock.acquire(data_dir)  # and no gateway starts while the key changes
    try:
        keys = keys_of()
        if not keys:
            raise StartupError(f"{db}: the log has no recorded key yet; start the gateway once")
        old = Ed25519FileSigner(key_file, settings.audit_origin)
        check_identity(db, old, keys)
        _self_check(settings)  # a new key never takes over a log that does not check
        retired = key_file.with_name(f"audit-log.key.retired-{old.key_id.hex()}")
        fresh = key_file.with_name("audit-log.key.new")
        new = Ed25519FileSigner.generate(fresh, settings.audit_origin)
        published = record(new)
        key_file.rename(retired)
        fresh.rename(key_file)
        pub = data_dir / "audit-log.pub"
        publish_verifier_keys(pub, published)
    finally:
        lock.release()
    return Rotation(old.verifier_key(), new.verifier_key(), retired, pub)


def _self_check(settings: Settings) -> None:
    """Open the log as start-up does (identity, self-check) and close it, signing nothing.

    Run on a thread of its own, so that it works whether or not an event loop is running here.
    """

    async def check() -> None:
        await (await _open_store(settings, checkpoint_interval_s=3600.0)).close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, check()).result()


def consent_artefacts(settings: Settings, *, create: bool = True) -> ArtefactSigner:
    """The consent artefact signer: ``keys/consent-artefact.key``, created on the first start
    (``create``); the issuer is the log's origin."""
    path = settings.data_dir / "keys" / "consent-artefact.key"
    if not create and not path.exists():
        raise StartupError(f"{path}: no consent key yet; start the gateway once to create it")
    key = load_or_generate(path, settings.audit_origin)
    return ArtefactSigner(key, settings.audit_origin)


def _consent_parts(settings: Settings, store: Store, pseudonymize: Pseudonymizer) -> ConsentParts:
    """The consent store, artefact signer (its key set published as ``consent-keys.json``)
    and the consent's pseudonyms: the holder's audit pseudonym, and a keyed binding of the
    card number (with the same key, in a namespace of its own)."""
    artefacts = consent_artefacts(settings)
    published = settings.data_dir / "consent-keys.json"
    tmp = published.with_name(f"{published.name}.{os.getpid()}.tmp")  # workers: at once
    tmp.write_text(json.dumps(artefacts.jwks(), indent=2) + "\n")
    tmp.replace(published)
    return ConsentParts(
        store.consents, artefacts, pseudonymize, lambda number: pseudonymize("card:" + number)
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StartupError(f"{path}: cannot read ({exc.strerror})") from None


async def prepare_once(settings: Settings, *, backends: Sequence[BackendRow] = BACKENDS) -> None:
    """Make, once, everything a gateway makes on its first start, for ``onecard serve
    --workers``: workers starting at once would each make a different key.

    The development PKI, the data directory's secrets, the consent artefacts' key, the audit
    log's signing key (refused, as at start, when the log is signed with a key that is missing
    here), and whatever a back end makes on its first start (its reference keys: every back end
    is wired once and closed again). With PostgreSQL, the schema is checked first.
    """
    _pki(settings)
    keys = settings.data_dir / "keys"
    for name in _SECRETS:
        load_or_create_secret(keys / name)
    consent_artefacts(settings)
    _prepare_audit_key(settings)
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        await wire_backends(settings, backends, closers)
    finally:
        for close in reversed(closers):
            await close()


def _prepare_audit_key(settings: Settings) -> None:
    path = settings.data_dir / "keys" / "audit-log.key"
    where = describe_store(settings.store, settings.data_dir, settings.database_url)
    keys: list[tuple[str, str]] = []
    if settings.store == "postgres":  # checks the schema's version too
        from gateway.store import pg_audit  # noqa: PLC0415 - only when chosen

        keys = pg_audit.recorded_keys(settings.database_url)
    elif (db := database_path(settings.store, settings.data_dir)).is_file():
        keys = recorded_keys(db)
    if not path.exists():
        _audit_signer(path, settings.audit_origin, where)(keys)


def claim_data_dir(settings: Settings) -> DataDirLock:
    """A serving process's claim of the data directory: alone on SQLite, shared by the gateways
    of one PostgreSQL log (``store.lock``)."""
    return DataDirLock.acquire(settings.data_dir, shared=settings.store == "postgres")


async def start_gateway(
    settings: Settings,
    *,
    backends: Sequence[BackendRow] = BACKENDS,
    services: Sequence[ServiceRow] = SERVICE_TABLE,
    worker: bool = False,
) -> Gateway:
    """Build and start everything ``settings`` describes, with these back ends and services.

    The data directory is claimed first (one gateway process per directory on SQLite, shared by
    the gateways of one PostgreSQL log); if start-up fails after that, whatever was already
    started is closed again, the claim included. A ``worker`` of ``onecard serve --workers``
    claims nothing (its supervisor holds the claim, and refuses SQLite with more than one
    worker) and listens with SO_REUSEPORT beside the other workers.
    """
    for old, new in settings.deprecations():
        _log.warning("setting_deprecated", setting=old, use=new)
    if worker and not is_served(settings.data_dir):
        raise StartupError(
            f"{settings.data_dir}: a worker starts under `onecard serve --workers N`, which "
            f"holds the data directory; it holds none here"
        )
    lock = None if worker else claim_data_dir(settings)

    async def release_lock() -> None:
        if lock is not None:
            lock.release()

    closers: list[Callable[[], Awaitable[None]]] = [release_lock]
    try:
        return await _start(settings, closers, backends, services, reuse_port=worker)
    except BaseException as exc:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                await close()
        if isinstance(exc, sqlite3.Error):
            raise StartupError(
                f"{settings.data_dir}: the gateway's database cannot be opened or written "
                f"({exc}); if the disk is full, free space and start again"
            ) from None
        if "gateway.store.postgres" in sys.modules:  # a PostgreSQL store was opened
            from gateway.store.postgres import database_error  # noqa: PLC0415

            why = database_error(exc)
            if why is not None:
                raise StartupError(
                    f"{describe_store(settings.store, settings.data_dir, settings.database_url)}"
                    f": the gateway's database failed ({why}); check database_url and the "
                    f"server, and start again"
                ) from None
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise StartupError(
                f"{exc.filename or settings.data_dir}: no space left on the device; free space "
                f"and start again"
            ) from None
        raise


async def _open_store(settings: Settings, checkpoint_interval_s: float) -> Store:
    """The store ``settings.store`` names, opened: identity bound, log self-checked."""
    where = describe_store(settings.store, settings.data_dir, settings.database_url)
    signer = _audit_signer(
        settings.data_dir / "keys" / "audit-log.key", settings.audit_origin, where
    )
    return await open_store(
        settings.store,
        settings.data_dir,
        signer,
        checkpoint_interval_s=checkpoint_interval_s,
        database_url=settings.database_url,
    )


async def _open_log(
    settings: Settings, closers: list[Callable[[], Awaitable[None]]]
) -> tuple[Store, StoredLog]:
    """The store ``settings.store`` names and its audit log, checked; on stop, a final
    checkpoint, then the store closes.

    The log refuses another origin or key and a damaged log. A log that failed its self-check
    signs nothing, so its final checkpoint fails, and ``Gateway.stop`` reports that in one line.
    """
    store = await _open_store(settings, settings.audit_checkpoint_interval_s)
    closers.append(store.close)
    audit_log = store.audit_log
    publish_verifier_keys(settings.data_dir / "audit-log.pub", audit_log.verifier_keys)
    closers.append(audit_log.checkpoint_now)
    return store, audit_log


async def _shared_rate_limits(
    settings: Settings, closers: list[Callable[[], Awaitable[None]]]
) -> SharedBuckets | None:
    """The organisations' token buckets shared by every process on the same PostgreSQL (None
    with SQLite: one process, buckets in memory)."""
    if settings.store != "postgres":
        return None
    from gateway.store.pg_rate_limits import PgTokenSource  # noqa: PLC0415 - only when chosen

    shared = SharedBuckets(await PgTokenSource.open(settings.database_url))
    closers.append(shared.close)
    return shared


async def _start(
    settings: Settings,
    closers: list[Callable[[], Awaitable[None]]],
    backends: Sequence[BackendRow],
    services: Sequence[ServiceRow],
    *,
    reuse_port: bool,
) -> Gateway:
    pki = _pki(settings)
    orgs = OrgRegistry.load(settings.orgs_file or pki.orgs_file)
    served = tuple(row.descriptor for row in services)
    service_names = tuple(service.full_name for service in served)
    policy = PolicyEngine.load(settings.policies_dir, responses=response_types(served))

    store, audit_log = await _open_log(settings, closers)
    keys = settings.data_dir / "keys"
    pseudonymize = Pseudonymizer(load_or_create_secret(keys / "audit-pseudonym.key"))
    tokens = CardTokens(
        load_or_create_secret(keys / "token.key"),
        store,
        ttl=dt.timedelta(seconds=settings.token_ttl_s),
    )

    consents = _consent_parts(settings, store, pseudonymize)

    ports = await wire_backends(settings, backends, closers)
    card_registry = ports.get(CARD_REGISTRY)

    metrics = Metrics.create()
    pipeline = Pipeline(
        CardStage(card_registry.port, timeout=card_registry.timeout_s),
        BasisStage(default_verifiers(tokens, consents.store, consents.bind_card)),
        policy,
        metrics,
        pseudonymize,
        tz=dt.timezone(dt.timedelta(hours=settings.utc_offset_hours)),
    )

    admission = Admission(
        shared=await _shared_rate_limits(settings, closers),
        max_in_flight=settings.max_in_flight,
        max_in_flight_per_org=settings.max_in_flight_per_org,
        rate_limits={org_type: given.limit() for org_type, given in settings.rate_limits.items()},
        metrics=metrics,
    )
    # Under a flood, calls wait inside gRPC before any handler runs: first in the core's queue
    # of calls the asyncio server has not taken yet, whose defaults (1,000 soft, 3,000 hard)
    # cancel waiting calls at random (CANCELLED, never seen by the gateway), then as tasks not
    # yet run. The limits below let them wait for admission control, which answers each at
    # once (measured: docs/operations.md). gRPC's own bound on handler tasks stays as a
    # backstop far above ours; what it sheds (RESOURCE_EXHAUSTED "Concurrent RPC limit
    # exceeded!", no onecard-reason) never reaches the interceptor, so only a client counts it.
    interceptor = GatewayInterceptor(
        orgs,
        metrics,
        AuditStage(audit_log),
        admission,
        audited_services=service_names,
        request_budget_s=settings.request_budget_s,
        request_id_key=load_or_create_secret(keys / "request-id.key"),
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # A port taken is an error, unless workers share it (their supervisor holds it).
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            ("grpc.server.max_pending_requests", 10_000),
            ("grpc.server.max_pending_requests_hard_limit", 20_000),
        ],
        maximum_concurrent_rpcs=8 * settings.max_in_flight + 1024,
    )
    parts = ServiceParts(
        pipeline,
        ports,
        tokens,
        audit_log,
        consents,
        history_key=load_or_create_secret(keys / "history-page.key"),
    )
    for row in services:
        row.add_to_server(row.build(parts), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    credentials = grpc.ssl_server_credentials(
        [(_read(pki.server_key), _read(pki.server_cert))],
        root_certificates=_read(pki.ca_cert),
        require_client_auth=True,
    )
    address = f"{settings.listen_host}:{settings.listen_port}"
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {address}: {exc}") from None
    shed_audit = ShedAudit(admission, audit_log, settings.shed_audit_interval_s)
    shed_audit.start()
    closers.append(shed_audit.stop)  # after the server stopped, before the log is closed
    await server.start()
    for name in (*service_names, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    metrics_port = None
    if settings.metrics_port is not None:
        http = metrics.serve(settings.metrics_host, settings.metrics_port)
        metrics_port = int(http.server_port)

        async def stop_metrics() -> None:
            http.shutdown()
            http.server_close()

        closers.append(stop_metrics)

    _log.info(
        "gateway_started",
        address=f"{settings.listen_host}:{port}",
        metrics_port=metrics_port,
        policy_set_sha256=policy.sha256,
        orgs=len(orgs),
    )
    return Gateway(
        server=server,
        port=port,
        metrics_port=metrics_port,
        ports=ports,
        pki=pki,
        store=store,
        audit_log=audit_log,
        _interceptor=interceptor,
        admission=admission,
        metrics=metrics,
        _health=health_servicer,
        _shutdown_grace_s=settings.shutdown_grace_s,
        _closers=closers,
    )
