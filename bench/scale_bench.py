"""Scaling out: the audit log's durable appends and hospital visits, on SQLite and on
PostgreSQL with one and with two gateway processes, in one run.

    .venv/bin/python bench/scale_bench.py            # about 5 minutes
    .venv/bin/python bench/scale_bench.py --quick    # under a minute: proves the harness runs

Two parts, each repeated ``--repeat`` times with the configurations interleaved (medians):

- **durable appends/s** (``store_bench``): 64 asyncio writers appending varied records through
  the store as a gateway does, on SQLite (one process: its only mode), and on PostgreSQL from 1
  and from 2 processes sharing one log (writers and appends shared out, rate from a common
  start);
- **hospital visits** (``gateway_bench``'s load generator, scenario ``visit``: the citizen app
  issues a token, the hospital asks GetInsuranceStatus with it): ``onecard serve`` on SQLite,
  ``onecard serve`` on PostgreSQL, and ``onecard serve --workers 2`` on PostgreSQL (two
  processes on one port, SO_REUSEPORT), each with the reference back ends in their own process
  (``onecard backends``) and rate limits out of reach, driven in turn by the same load
  generator in its own process: calls/s with ``--in-flight`` calls over ``--channels``
  connections (several, so that the kernel spreads them over the workers), p50 and p99 at a
  fixed offered load, and the p50 of GetInsuranceStatus with one call in flight.

PostgreSQL is the server of ``--database-url`` (each configuration in a fresh schema, migrated as
``onecard db upgrade`` does, dropped afterwards), on the same two cores as everything else here:
quote the ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb
from audit_bench import varied_records
from store_bench import Schema, appends, processes_appends

from adapters.social_insurance.seed import Population
from gateway.pki import init_pki
from gateway.ports import CardStatus

GATEWAYS = ("sqlite", "postgres", "postgres x2")
APPENDS = ("sqlite", "postgres, 1 process", "postgres, 2 processes")


def _config(base: Path, name: str, port: int, backend: int, dsn: str, pki: Any) -> Path:
    """gateway_bench's configuration (limits out of reach), on the store ``name`` asks for."""
    root = base / name.replace(" ", "-")
    root.mkdir()
    config = gb._gateway_config(root, pki, port, backend)
    if dsn:
        config.write_text(f'store = "postgres"\ndatabase_url = "{dsn}"\n' + config.read_text())
    return config


@contextlib.contextmanager
def _gateways(
    base: Path, pki: Any, backend: int, server: str
) -> Iterator[dict[str, tuple[int, int]]]:
    """The three gateways, started and left running; name -> (port, pid of the process
    started: the gateway, or the supervisor of the workers)."""
    onecard = [sys.executable, "-m", "gateway.cli"]
    with contextlib.ExitStack() as stack:
        ports: dict[str, tuple[int, int]] = {}
        for name in GATEWAYS:
            dsn = stack.enter_context(Schema(server)) if name != "sqlite" else ""
            port = gb._free_port()
            config = _config(base, name, port, backend, dsn, pki)
            workers = ["--workers", "2"] if name.endswith("x2") else []
            proc = stack.enter_context(
                gb._process(
                    [*onecard, "serve", "--config", str(config), *workers],
                    gb._listening(port),
                    f"onecard serve ({name})",
                )
            )
            ports[name] = (port, proc.pid)
        yield ports


def visits(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    card = Population.default().first(card_status=CardStatus.NORMAL).id_number
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in GATEWAYS}
    with tempfile.TemporaryDirectory(prefix="onecard-scale-") as tmp:
        base = Path(tmp)
        pki = init_pki(base / "pki")
        backend = gb._free_port()
        backends = [
            sys.executable, "-m", "gateway.cli", "backends", "--port", str(backend),
            "--sip2-port", "0", "--fhir-port", str(gb._free_port()),
            "--eligibility-port", str(gb._free_port()), "--keys-dir", str(base / "keys"),
        ]  # fmt: skip
        with (
            gb._process(backends, gb._listening(backend), "onecard backends"),
            _gateways(base, pki, backend, args.database_url) as ports,
        ):
            for port, _ in ports.values():
                request_bytes, _, args.consent = gb._prepare(f"127.0.0.1:{port}", pki, card)
            for rep in range(args.repeat):
                for name, (port, pid) in ports.items():  # the load's CPU figure is not used
                    rows[name].append(
                        gb._load(args, "visit", port, pid, card, pki.directory, request_bytes)
                    )
                print(f"visits: repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    return rows


def append_rates(args: argparse.Namespace) -> dict[str, list[float]]:
    recs = varied_records()
    rates: dict[str, list[float]] = {name: [] for name in APPENDS}
    with tempfile.TemporaryDirectory(prefix="onecard-scale-appends-") as tmp:
        for rep in range(args.repeat):
            rates["sqlite"].append(
                asyncio.run(appends("sqlite", Path(tmp), "", 64, args.appends, recs))
            )
            for processes, name in ((1, APPENDS[1]), (2, APPENDS[2])):
                with Schema(args.database_url) as dsn:
                    rates[name].append(
                        processes_appends(Path(tmp), dsn, processes, 64, args.appends)
                    )
            print(f"appends: repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    return rates


def report(rates: dict[str, list[float]], rows: dict[str, list[dict[str, Any]]]) -> str:
    med = {name: statistics.median(runs) for name, runs in rates.items()}
    lines = [
        "| durable appends/s, 64 writers | " + " | ".join(APPENDS) + " |",
        "|---|" + "---:|" * len(APPENDS),
        "| median | " + " | ".join(f"{med[n]:,.0f}" for n in APPENDS) + " |",
        "| / sqlite | " + " | ".join(f"{med[n] / med['sqlite']:.2f}x" for n in APPENDS) + " |",
        "",
        "| hospital visits | " + " | ".join(GATEWAYS) + " |",
        "|---|" + "---:|" * len(GATEWAYS),
    ]
    for key, label, fmt in (
        ("calls_per_s", "calls/s", "{:,.0f}"),
        ("p50_ms", "p50 ms at offered load", "{:.2f}"),
        ("p99_ms", "p99 ms at offered load", "{:.2f}"),
        ("single_p50_ms", "p50 ms, one call in flight", "{:.2f}"),
    ):
        values = {n: statistics.median(r[key] for r in rows[n]) for n in GATEWAYS}
        lines.append(f"| {label} | " + " | ".join(fmt.format(values[n]) for n in GATEWAYS) + " |")
        if key == "calls_per_s":
            ratio = " | ".join(f"{values[n] / values['sqlite']:.2f}x" for n in GATEWAYS)
            lines.append(f"| calls/s / sqlite | {ratio} |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny windows: proves the harness runs")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--appends", type=int, default=16_000, help="durable appends per run")
    p.add_argument("--window-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--offered", type=float, default=150.0, help="open-loop calls/s")
    p.add_argument("--singles", type=int, default=200, help="calls timed one at a time")
    p.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/test", help="server"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.appends, args.window_s, args.warmup_s = 1, 1_000, 1.0, 0.3
        args.singles, args.offered, args.in_flight = 10, 40.0, 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rates = append_rates(args)
    rows = visits(args)
    print(
        f"{args.repeat} repetitions; visits: {args.in_flight} in flight over {args.channels} "
        f"connections, windows of {args.window_s} s after {args.warmup_s} s, offered load "
        f"{args.offered} calls/s; appends: {args.appends} per run"
    )
    print(report(rates, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
