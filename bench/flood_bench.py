"""Flood benchmark: another organisation's latency while one organisation floods the gateway.

    .venv/bin/python bench/flood_bench.py [--concurrency 1000] [--duration-s 6] [--repeat 1]

One gateway per scenario, started in this process on 127.0.0.1 with the reference back end, as
``onecard serve`` would run; a library floods it from a process of its own
(``tests/integration/flood.py``: ``--concurrency`` VerifyCard calls in flight with made-up
tokens) while a hospital makes GetInsuranceStatus calls one at a time with real tokens, one
every ``--every-s`` (within its rate limit), from 0.5 s into the flood for ``--duration-s`` less
1 s; then the flood is stopped. Scenarios, in this order, in one run:

- ``no flood``: the hospital alone (the same-run baseline);
- ``flood, no admission control``: ``max_in_flight`` and every rate limit set out of reach,
  which is the gateway before admission control;
- ``flood, defaults``: the default settings.

For each: the hospital's median and 90th percentile latency and its outcomes, the flood's
outcomes by status and reason (the calls shed among them), how many entries the audit log grew
by, the hospital's time inside the gateway (its own histogram) and the calls in handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.integration.flood

from adapters.social_insurance import start_reference_server
from adapters.social_insurance.seed import Population
from gateway.bootstrap import start_gateway
from gateway.client import org_channel
from gateway.config import load_settings
from gateway.logs import configure as configure_logs
from gateway.pki import PkiLayout, init_pki
from gateway.ports import CardStatus
from tests.integration.flood import issue_tokens, start_flood, timed_visits

HOSPITAL, LIBRARY, APP = "hosp-bj-001", "lib-bj-001", "app-ecard-001"
OFF: dict[str, Any] = {
    "max_in_flight": 100_000,
    "rate_limits": {
        kind: {"per_s": 1_000_000, "burst": 1_000_000}
        for kind in ("hospital", "library", "transit", "regulator", "citizen_app")
    },
}


async def scenario(
    name: str, pki: PkiLayout, root: Path, args: argparse.Namespace, **overrides: Any
) -> dict[str, Any]:
    reference = await start_reference_server()
    settings = load_settings(
        data_dir=root / name.replace(" ", "-").replace(",", ""),
        pki_dir=pki.directory,
        listen_port=0,
        metrics_port=None,
        backends={"social_insurance": {"url": reference.url}},
        log_level="warning",
        shed_audit_interval_s=1.0,
        **overrides,
    )
    gateway = await start_gateway(settings)
    card = Population.default().first(card_status=CardStatus.NORMAL).id_number
    try:
        async with (
            org_channel(gateway.target, pki, APP) as app,
            org_channel(gateway.target, pki, HOSPITAL) as hospital,
        ):
            tokens = await issue_tokens(app, card, args.visits + 5)
            await timed_visits(hospital, card, tokens[:5])  # warm the connection up
            size_before = await gateway.audit_log.size()
            inside_before = _inside(gateway)
            samples: list[int] = []
            sampler = asyncio.create_task(_sample_in_flight(gateway, samples))
            if name == "no flood":
                latencies, codes = await timed_visits(
                    hospital, card, tokens[5:], every_s=args.every_s
                )
                flood_counts: dict[str, int] = {}
            else:
                flood = await start_flood(
                    gateway.target,
                    pki.directory,
                    LIBRARY,
                    concurrency=args.concurrency,
                    duration_s=args.duration_s,
                    max_calls=args.max_calls,
                )
                try:
                    await flood.go()
                    await asyncio.sleep(0.5)  # let the flood build up first
                    started = time.monotonic()
                    latencies, codes = await timed_visits(
                        hospital,
                        card,
                        tokens[5:],
                        until=lambda: time.monotonic() - started > args.duration_s - 1,
                        every_s=args.every_s,
                    )
                    flood_counts = await flood.result()
                finally:
                    flood.kill()
            sampler.cancel()
            inside_after = _inside(gateway)
            await asyncio.sleep(1.5)  # the shed tally is written every second here
            grew = await gateway.audit_log.size() - size_before
    finally:
        await gateway.stop(0)
        await reference.close()
    shed = sum(n for key, n in flood_counts.items() if key.startswith("RESOURCE_EXHAUSTED/"))
    inside_s = (inside_after[0] - inside_before[0]) / max(1, inside_after[1] - inside_before[1])
    return {
        "name": name,
        "inside_ms": inside_s * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "in_flight_max": max(samples, default=0),
        "in_flight_p50": statistics.median(samples) if samples else 0,
        "p50_ms": statistics.median(latencies) * 1000,
        "p90_ms": statistics.quantiles(latencies, n=10)[-1] * 1000,
        "visits": len(latencies),
        "hospital": dict(codes),
        "flood": flood_counts,
        "flood_calls": sum(flood_counts.values()),
        "shed": shed,
        "log_grew": grew,
    }


RPC = "onecard.v1.InsuranceService/GetInsuranceStatus"


def _inside(gateway: Any) -> tuple[float, float]:
    """(seconds, calls) of the hospital's RPC inside the gateway so far (its own histogram)."""
    registry = gateway.metrics.registry
    total = registry.get_sample_value("onecard_request_seconds_sum", {"rpc": RPC}) or 0.0
    count = registry.get_sample_value("onecard_request_seconds_count", {"rpc": RPC}) or 0.0
    return total, count


async def _sample_in_flight(gateway: Any, samples: list[int]) -> None:
    """Calls inside handlers (admitted, not yet finished), every 5 ms."""
    while True:
        samples.append(gateway.admission.in_flight)
        await asyncio.sleep(0.005)


async def main(args: argparse.Namespace) -> None:
    configure_logs("warning", "json")
    with tempfile.TemporaryDirectory(prefix="flood-bench-") as tmp:
        root = Path(tmp)
        pki = init_pki(root / "pki")
        plan: list[tuple[str, dict[str, Any]]] = [
            ("no flood", {}),
            ("flood, no admission control", OFF),
            ("flood, defaults", {}),
        ]
        for round_ in range(args.repeat):
            for name, overrides in plan:
                result = await scenario(name, pki, root / f"r{round_}", args, **overrides)
                print(
                    f"{result['name']:<30} hospital p50 {result['p50_ms']:7.1f} ms  "
                    f"p90 {result['p90_ms']:7.1f} ms  ({result['visits']} calls: "
                    f"{result['hospital']})",
                    flush=True,
                )
                print(
                    f"{'':<30} hospital mean {result['mean_ms']:.1f} ms, of which inside the "
                    f"gateway {result['inside_ms']:.1f} ms; calls in handlers: median "
                    f"{result['in_flight_p50']}, max {result['in_flight_max']}",
                    flush=True,
                )
                if result["flood"]:
                    print(
                        f"{'':<30} flood {result['flood_calls']} calls: {result['flood']}; "
                        f"audit log +{result['log_grew']} entries",
                        flush=True,
                    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--duration-s", type=float, default=6.0)
    parser.add_argument("--max-calls", type=int, default=100_000)
    parser.add_argument("--visits", type=int, default=200)
    parser.add_argument("--every-s", type=float, default=0.025, help="the hospital's pace")
    parser.add_argument("--repeat", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
