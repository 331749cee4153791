"""The ``onecard`` command line.

onecard serve [--config FILE]       run the gateway (embedded defaults: SQLite under var/,
                                    reference back ends in-process, a development PKI)
onecard serve --workers N           N gateway processes on one port (SO_REUSEPORT) under a
                                    supervisor that restarts them; N > 1 needs PostgreSQL;
                                    worker i serves metrics on metrics_port + i
onecard demo                        everything on loopback plus a scripted tour
onecard backends [--port N]         run the reference back ends on their own (1101 on --port,
                                    FHIR R4 on --fhir-port, SIP2 libraries from --sip2-port,
                                    eligibility on --eligibility-port, keys in --keys-dir)
onecard pki init --dir DIR          make a development CA and certificates
onecard policy test [--dir DIR]     run the policy tests (policies/tests/*.toml)
onecard policy check [--dir DIR]    validate the policy set against its schema
onecard audit export --out DIR      the audit log's entries and signed checkpoints, to files
onecard audit verify DIR --key F    verify an export offline (--trusted-checkpoint FILE: against
                                    one kept from earlier; one receipt: --receipt I:HASH)
onecard audit rotate-key            a new signing key for a stopped log (old keys stay published)
onecard audit report --since T      the regulator's report (break-glass accesses, refusals,
                                    consents) from the log's entries, as a table or --format csv
onecard consent keys                the consent artefacts' public key set (JWKS, JSON)
onecard db upgrade [--config FILE]  create or migrate the PostgreSQL schema (store = "postgres")
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import sqlite3
import string
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import logs
from gateway.config import Settings, default_policies_dir, load_settings
from gateway.errors import SetupError

if TYPE_CHECKING:
    from gateway.audit.checkpoint import Checkpoint
    from gateway.audit.note import VerifierSet

_HEX = frozenset(string.hexdigits.lower())


def _serve(args: argparse.Namespace) -> int:
    from gateway.bootstrap import start_gateway

    settings = load_settings(args.config)
    if args.workers is not None:
        _check_workers(settings, args.workers)  # before anything is configured or made
    logs.configure(settings.log_level, settings.log_format)
    if args.workers is not None:
        return _supervise(args, settings)
    worker = args.worker_index is not None
    if worker and (args.worker_port is None or args.ready_fd is None):
        raise SetupError("--worker-index needs --worker-port and --ready-fd (the supervisor's)")
    if worker:
        from gateway.workers import worker_settings

        settings = worker_settings(settings, args.worker_index, args.worker_port)

    async def run() -> None:
        gateway = await start_gateway(settings, worker=worker)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if worker:
            from gateway.workers import announce_ready, stop_when_orphaned

            orphaned = asyncio.ensure_future(stop_when_orphaned(stopping))
            announce_ready(args.ready_fd, gateway.metrics_port)
        else:
            print(
                f"onecard gateway listening on {settings.listen_host}:{gateway.port} (mutual "
                f"TLS); metrics on {settings.metrics_host}:{gateway.metrics_port}; "
                f"PKI in {gateway.pki.directory}; Ctrl-C or SIGTERM stops it",
                file=sys.stderr,
            )
        await stopping.wait()
        if worker:
            orphaned.cancel()
        await gateway.stop()

    asyncio.run(run())
    return 0


def _check_workers(settings: Settings, workers: int) -> None:
    """``serve --workers N`` refused: more than one on SQLite, metrics ports past 65535."""
    from gateway.workers import refuse_sqlite

    refuse_sqlite(settings, workers)
    last_metrics = (settings.metrics_port or 0) + workers - 1
    if settings.metrics_port and last_metrics > 65535:
        raise SetupError(
            f"metrics_port {settings.metrics_port}: worker {workers - 1} would serve its "
            f"metrics on {last_metrics}, past 65535; choose a lower metrics_port (or 0)"
        )


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``serve --workers N``: prepare once, reserve the port, run the workers (gateway.workers)."""
    from gateway.bootstrap import claim_data_dir, prepare_once
    from gateway.workers import Supervisor, reserve_port

    lock = claim_data_dir(settings)  # held by this process for the workers
    try:
        asyncio.run(prepare_once(settings))
        with reserve_port(settings.listen_host, settings.listen_port) as reserved:
            port = int(reserved.getsockname()[1])
            supervisor = Supervisor(settings, args.config, args.workers, port)
            return asyncio.run(supervisor.run())
    finally:
        lock.release()


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    logs.configure("warning", "console")
    asyncio.run(run_demo(data_dir=args.data_dir))
    return 0


def _backends(args: argparse.Namespace) -> int:
    from adapters.eligibility import reference_pair
    from adapters.eligibility import start_reference_server as start_eligibility
    from adapters.eligibility.keys import GATEWAY_KEY_FILE, SERVER_KEY_FILE
    from adapters.fhir import start_reference_fhir_server
    from adapters.sip2 import start_reference_network
    from adapters.sip2.seed import LIBRARIES
    from adapters.social_insurance import start_reference_server

    logs.configure("info", "json")
    _gateway_keys, server_keys = reference_pair(args.keys_dir)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as running:  # each started one closes, in reverse
            server = await start_reference_server(port=args.port)
            running.push_async_callback(server.close)
            print(f"reference social insurance back end (1101 person info) on {server.url}")
            eligibility = await start_eligibility(server_keys, port=args.eligibility_port)
            running.push_async_callback(eligibility.close)
            print(
                f"reference eligibility server (Cal-ITP) on {eligibility.verify_url}; the "
                f"gateway signs with {args.keys_dir / GATEWAY_KEY_FILE} and encrypts to "
                f"{(args.keys_dir / SERVER_KEY_FILE).with_suffix('.pub.pem')}"
            )
            fhir = await start_reference_fhir_server(port=args.fhir_port)
            running.push_async_callback(fhir.close)
            print(f"reference FHIR R4 server (health records) on {fhir.url}")
            sip2_ports = {lib.network_id: args.sip2_port + i for i, lib in enumerate(LIBRARIES)}
            libraries = await start_reference_network(ports=sip2_ports if args.sip2_port else None)
            running.push_async_callback(libraries.close)
            for library in libraries.libraries():
                site = library.settings
                print(
                    f"reference library {site.network_id} (SIP2, {site.encoding}, "
                    f"institution {site.institution_id}) on sip2://{site.host}:{site.port}"
                )
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping.set)
            await stopping.wait()

    asyncio.run(run())
    return 0


def _pki_init(args: argparse.Namespace) -> int:
    from gateway.pki import init_pki

    layout = init_pki(args.dir, overwrite=args.force)
    print(f"development PKI written to {layout.directory}:")
    print(f"  CA              {layout.ca_cert}")
    print(f"  gateway server  {layout.server_cert}")
    print(f"  org registry    {layout.orgs_file}")
    print(f"  client certs    {layout.directory / 'clients'}/<org id>.pem")
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    from gateway.policytest import run_all

    results = run_all(args.dir)
    failed = [r for r in results if r.problems]
    for r in results:
        mark = "FAIL" if r.problems else "ok  "
        print(f"{mark} {r.source:<18} {r.case.name}")
        for problem in r.problems:
            print(f"       {problem}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or not results else 0


def _policy_check(args: argparse.Namespace) -> int:
    from gateway.policy import PolicyEngine
    from gateway.services import response_types

    engine = PolicyEngine.load(args.dir, responses=response_types())
    print(f"policy set valid: {len(engine.policy_ids)} policies, sha256 {engine.sha256}")
    return 0


@contextlib.contextmanager
def _file_errors() -> Iterator[None]:
    """A file that cannot be read or written is a setup error: one line, exit status 2."""
    try:
        yield
    except OSError as e:
        raise SetupError(f"{e.filename or 'a file'}: {e.strerror or e}") from None


def _audit_export(args: argparse.Namespace) -> int:
    with _file_errors():
        return _audit_export_files(args)


def _audit_export_files(args: argparse.Namespace) -> int:
    from gateway.audit.export import export_log
    from gateway.store import database_path

    settings = load_settings(args.config)
    postgres = settings.store == "postgres"
    summary = export_log(
        settings.data_dir / "onecard.db"
        if postgres
        else database_path(settings.store, settings.data_dir),
        args.out,
        origin=settings.audit_origin,
        fhir_file=args.fhir,
        database_url=settings.database_url if postgres else "",
    )
    print(
        f"exported {summary.entries} entries and {summary.checkpoints} signed checkpoints "
        f"to {summary.directory}"
    )
    if summary.signed_here:
        print(f"signed a checkpoint of all {summary.entries} entries with the log's key here")
    if summary.left_out:
        print(
            f"{summary.left_out} newer entries are not in a signed checkpoint yet and were left "
            "out (a running gateway signs one within audit_checkpoint_interval_s; without the "
            "key, export stops at the newest checkpoint)"
        )
    if args.fhir:
        print(f"FHIR R4 AuditEvent resources (JSON lines) in {args.fhir}")
    print(f"verifier key: {settings.data_dir / 'audit-log.pub'}")
    if summary.problem:
        print(
            f"onecard: the exported log does NOT verify ({summary.problem}); it is evidence of "
            f"damage, not a log to trust: see onecard audit verify",
            file=sys.stderr,
        )
        return 1
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    with _file_errors():
        return _audit_verify_files(args)


def _audit_verify_files(args: argparse.Namespace) -> int:
    from gateway.audit.verify import ExportError, load_key_files, open_trusted, verify_export

    verifiers = load_key_files(args.key)
    if not args.export.is_dir():
        raise SetupError(f"{args.export}: no such export directory")
    try:
        trusted = [open_trusted(p, verifiers, args.origin) for p in args.trusted_checkpoint]
    except ExportError as e:
        raise SetupError(f"--trusted-checkpoint {e.problem.message}") from None
    if args.receipt is not None:
        return _audit_verify_receipt(args, verifiers, trusted)

    quiet_until = time.monotonic() + 1.0  # progress only on runs longer than a second

    def progress(done: int, total: int) -> None:
        if time.monotonic() >= quiet_until:
            of = f" of the {total} signed" if done <= total else f" ({total} signed)"
            print(f"  verified {done}{of} entries...", file=sys.stderr)

    report = verify_export(
        args.export,
        verifiers,
        origin=args.origin,
        trusted=trusted,
        progress=progress,
        workers=args.workers,
    )
    if report.problem is not None:
        print(f"FAILED: {report.problem}")
        return 1
    rate = report.entries / report.elapsed_s if report.elapsed_s else 0.0
    print(
        f"OK: {report.entries} entries, {report.checkpoints} signed checkpoints verified"
        + (f", consistent with {len(trusted)} trusted" if trusted else "")
        + f" ({rate:,.0f} entries/s)"
    )
    if report.latest is not None:
        latest = report.latest
        print(
            f"latest checkpoint: {latest.origin} size {latest.size} root {latest.root_hash.hex()}"
        )
    return 0


def _audit_verify_receipt(
    args: argparse.Namespace, verifiers: VerifierSet, trusted: list[Checkpoint]
) -> int:
    from gateway.audit.proof import ProofError
    from gateway.audit.verify import ExportError, prove_receipt

    index, leaf_hash = args.receipt
    against = max(trusted, key=lambda c: c.size) if trusted else None
    try:
        checkpoint, proof, export_matches = prove_receipt(
            args.export, verifiers, index, leaf_hash, origin=args.origin, against=against
        )
    except ExportError as e:
        print(f"FAILED: {e.problem.message}")
        return 1
    except ProofError as e:
        print(f"FAILED: receipt {index} is not in the signed log: {e}")
        return 1
    signed = "the trusted checkpoint" if against is not None else "the export's newest checkpoint"
    print(
        f"OK: receipt {index} (leaf hash {leaf_hash.hex()[:16]}...) is in the tree of "
        f"{checkpoint.size} entries of {signed}, signed as {checkpoint.origin} (root "
        f"{checkpoint.root_hash.hex()[:16]}...): {len(proof)} proof hashes"
    )
    if not export_matches:
        print(f"FAILED: the export's entry {index} is not the signed one: the export was changed")
        return 1
    return 0


def _audit_rotate_key(args: argparse.Namespace) -> int:
    from gateway.bootstrap import rotate_audit_key

    rotation = rotate_audit_key(load_settings(args.config))
    print(f"new audit signing key: {rotation.new_key}")
    print(f"old key kept as {rotation.retired_file} (its checkpoints keep verifying)")
    print(f"published key set (oldest first): {rotation.published}")
    return 0


def _audit_report(args: argparse.Namespace) -> int:
    import json

    from gateway.audit.record import rfc3339
    from gateway.audit.report import build_report, csv_text, table
    from gateway.store import database_path, read_log
    from gateway.store.lock import is_served
    from gateway.store.sqlite_consents import read_justifications

    settings = load_settings(args.config)
    until = args.until or dt.datetime.now(dt.UTC)
    if until <= args.since:
        raise SetupError("--until must be after --since")
    with read_log(
        settings.store,
        settings.data_dir,
        served=is_served(settings.data_dir),
        database_url=settings.database_url,
    ) as log:
        size = log.size()
        entries = [
            (i, json.loads(leaf)["r"])
            for start in range(0, size, 10_000)
            for i, leaf in enumerate(log.leaves(start, min(start + 10_000, size)), start)
        ]
    if settings.store == "postgres":
        from gateway.store.pg_audit import read_justifications as pg_justifications

        kept = pg_justifications(settings.database_url)
    else:
        kept = read_justifications(database_path(settings.store, settings.data_dir))
    report = build_report(entries, rfc3339(args.since), rfc3339(until), kept)
    sys.stdout.write(csv_text(report) if args.format == "csv" else table(report))
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    import contextlib

    from gateway.store import pg_schema
    from gateway.store.postgres import connect, describe

    settings = load_settings(args.config)
    if settings.store != "postgres":
        raise SetupError(
            f"store = {settings.store!r} migrates itself on start; `onecard db upgrade` is for "
            f'store = "postgres" (set it and database_url)'
        )
    with contextlib.closing(connect(settings.database_url)) as conn:
        before, applied = pg_schema.upgrade(conn)
        now = pg_schema.current_version(conn)  # another upgrade may have applied the rest
    where = describe(settings.database_url)
    if not applied:
        print(f"{where}: schema version {now} is current; nothing to do")
    for migration in applied:
        print(f"{where}: applied {migration.version:04d}_{migration.name}")
    if applied:
        print(f"{where}: schema version {before} -> {now}")
    return 0


def _consent_keys(args: argparse.Namespace) -> int:
    import json

    from gateway.bootstrap import consent_artefacts

    artefacts = consent_artefacts(load_settings(args.config), create=False)
    print(json.dumps(artefacts.jwks(), indent=2))
    return 0


def _moment(text: str) -> dt.datetime:
    """A date (2026-11-25, midnight UTC) or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time, e.g. 2026-11-25 or 2026-11-25T08:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _receipt(text: str) -> tuple[int, bytes]:
    """``INDEX:LEAF_HASH`` (the leaf hash in hex, as in the onecard-audit-leaf-hash trailer)."""
    index, _, digest = text.partition(":")
    if index.isdigit() and len(digest) == 64 and all(c in _HEX for c in digest.lower()):
        return int(index), bytes.fromhex(digest)
    raise argparse.ArgumentTypeError(
        "a receipt is INDEX:LEAF_HASH, e.g. 1:2c9f...e4 (the leaf hash as 64 hex digits)"
    )


def _workers(text: str) -> int:
    """1 to 4 processes per CPU: more only adds start-up and memory."""
    most = 4 * (os.cpu_count() or 1)
    if text.isdigit() and 0 < int(text) <= most:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes from 1 to {most}")


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="TOML configuration file")
    serve.add_argument(
        "--workers",
        type=_workers,
        help="run N gateway processes on one port (SO_REUSEPORT) under a supervisor that "
        "restarts them; more than 1 needs store = postgres; worker i serves metrics on "
        "metrics_port + i",
    )
    # A worker of `serve --workers` (gateway.workers): started by the supervisor only.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-port", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)


def _backends_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backends = sub.add_parser("backends", help="run the reference back ends")
    backends.add_argument("--port", type=int, default=8101, help="port on 127.0.0.1")
    backends.add_argument(
        "--sip2-port",
        type=int,
        default=6001,
        help="first SIP2 port on 127.0.0.1 (one library each, counting up; 0 picks free ones)",
    )
    backends.add_argument(
        "--fhir-port", type=int, default=8102, help="the FHIR server's port on 127.0.0.1"
    )
    backends.add_argument(
        "--eligibility-port", type=int, default=8103, help="eligibility server's port"
    )
    backends.add_argument(
        "--keys-dir",
        type=Path,
        default=Path("var/keys"),
        help="where the eligibility key pairs are (made at first start)",
    )
    backends.set_defaults(func=_backends)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onecard", description="OneCard data-sharing gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    _serve_parser(sub)

    demo = sub.add_parser("demo", help="start everything on loopback and run a tour")
    demo.add_argument("--data-dir", type=Path, help="keep the database and keys here")
    demo.set_defaults(func=_demo)

    _backends_parser(sub)

    pki = sub.add_parser("pki", help="development PKI").add_subparsers(dest="pki", required=True)
    init = pki.add_parser("init", help="create a CA, server and org client certificates")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(func=_pki_init)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit", required=True
    )
    export = audit.add_parser("export", help="write entries and checkpoints for offline checks")
    export.add_argument("--config", type=Path, help="the gateway's configuration file")
    export.add_argument("--out", type=Path, required=True, help="directory to write")
    export.add_argument("--fhir", type=Path, help="also write FHIR AuditEvents to this file")
    export.set_defaults(func=_audit_export)
    verify = audit.add_parser("verify", help="verify an export offline with the log's public key")
    verify.add_argument("export", type=Path, help="directory written by onecard audit export")
    verify.add_argument(
        "--key", type=Path, action="append", required=True,
        help="file with verifier keys (one per line); repeat for rotated keys",
    )  # fmt: skip
    verify.add_argument("--origin", help="the log's origin (default: the checkpoints' own)")
    verify.add_argument(
        "--workers",
        type=_workers,
        default=os.cpu_count() or 1,
        help="processes to hash with (default: one per CPU)",
    )
    verify.add_argument(
        "--trusted-checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint note kept from earlier (repeatable): the export must extend it",
    )
    verify.add_argument(
        "--receipt",
        type=_receipt,
        metavar="INDEX:LEAF_HASH",
        help="only prove this receipt against the newest --trusted-checkpoint, or else the "
        "export's newest signed checkpoint (inclusion)",
    )
    verify.set_defaults(func=_audit_verify)
    rotate = audit.add_parser("rotate-key", help="give a stopped log a new signing key")
    rotate.add_argument("--config", type=Path, help="the gateway's configuration file")
    rotate.set_defaults(func=_audit_rotate_key)
    report = audit.add_parser("report", help="break-glass accesses, refusals and consents")
    report.add_argument("--config", type=Path, help="the gateway's configuration file")
    report.add_argument("--since", type=_moment, required=True, help="from (date or time)")
    report.add_argument("--until", type=_moment, help="before (date or time; default: now)")
    report.add_argument("--format", choices=("table", "csv"), default="table")
    report.set_defaults(func=_audit_report)

    db = sub.add_parser("db", help="the PostgreSQL store's schema").add_subparsers(
        dest="db", required=True
    )
    upgrade = db.add_parser("upgrade", help="create or migrate the schema (store = postgres)")
    upgrade.add_argument("--config", type=Path, help="the gateway's configuration file")
    upgrade.set_defaults(func=_db_upgrade)

    consent = sub.add_parser("consent", help="standing consents").add_subparsers(
        dest="consent", required=True
    )
    keys = consent.add_parser("keys", help="print the consent artefacts' public keys (JWKS)")
    keys.add_argument("--config", type=Path, help="the gateway's configuration file")
    keys.set_defaults(func=_consent_keys)

    policy = sub.add_parser("policy", help="access policies").add_subparsers(
        dest="policy", required=True
    )
    for name, func, text in (
        ("test", _policy_test, "run the policy tests"),
        ("check", _policy_check, "validate the policies against the schema"),
    ):
        p = policy.add_parser(name, help=text)
        p.add_argument("--dir", type=Path, default=default_policies_dir())
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``onecard`` command."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SetupError as exc:
        print(f"onecard: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # a damaged or foreign database file: one line
        print(
            f"onecard: the database cannot be read ({exc}): is it damaged, or not a gateway's?",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if "gateway.store.postgres" not in sys.modules:  # no PostgreSQL store was used
            raise
        from gateway.store.postgres import database_error

        why = database_error(exc)
        if why is None:
            raise
        print(
            f"onecard: the PostgreSQL database failed ({why}); check database_url", file=sys.stderr
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
