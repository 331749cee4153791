"""A flood of onecard.v1 calls from one organisation, run in a process of its own.

    python -m tests.integration.flood TARGET PKI_DIR ORG_ID [--concurrency 1000]
        [--duration-s 3] [--max-calls 20000] [--channels 8]

Keeps ``--concurrency`` VerifyCard calls in flight (each with a made-up card-present token, as a
careless or hostile client would send) over ``--channels`` mutual-TLS connections to TARGET, for
``--duration-s`` seconds or ``--max-calls`` calls, or until a second line on stdin, whichever
comes first. Once its channels are open it prints "ready" and waits for a line on stdin before
it starts; at the end it prints one JSON line: how many calls ended with each gRPC status and
``onecard-reason`` (when the status carried none, it came from gRPC, not from the gateway: its
details in parentheses instead). Loopback only: it refuses any target but 127.0.0.1.

``start_flood`` starts it from a test or the bench; ``timed_visits`` measures another
organisation meanwhile: a hospital's GetInsuranceStatus calls, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from gateway.api.onecard.v1 import (
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    insurance_pb2,
    insurance_pb2_grpc,
)
from gateway.client import org_channel, refusal_reason
from gateway.pki import PkiLayout

CARD = "110101199003074477"  # well formed; the flood is refused or shed before the card matters


def _request() -> card_pb2.VerifyCardRequest:
    return card_pb2.VerifyCardRequest(
        card=common_pb2.CardRef(card_number=CARD),
        purpose=common_pb2.PURPOSE_LIBRARY_SERVICE,
        basis=common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token="x" * 40)),
    )


async def flood(
    target: str,
    pki: PkiLayout,
    org_id: str,
    *,
    concurrency: int,
    duration_s: float,
    max_calls: int,
    channels: int,
    go: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, int]:
    """Run the flood; the count of calls per ``"<STATUS>/<reason>"``."""
    opened = [org_channel(target, pki, org_id) for _ in range(channels)]
    try:
        for channel in opened:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        stubs = [card_pb2_grpc.CardServiceStub(channel) for channel in opened]
        if go is not None:
            print("ready", flush=True)
            await go.wait()
        request = _request()
        outcomes: Counter[str] = Counter()
        started = time.monotonic()
        issued = 0

        async def worker(n: int) -> None:
            nonlocal issued
            stub = stubs[n % len(stubs)]
            while (
                issued < max_calls
                and time.monotonic() - started < duration_s
                and not (stop is not None and stop.is_set())
            ):
                issued += 1
                try:
                    await stub.VerifyCard(request, timeout=30)
                    key = "OK/"
                except grpc.aio.AioRpcError as err:
                    reason = refusal_reason(err) or f"({err.details()})"  # gRPC's, not ours
                    key = f"{err.code().name}/{reason}"
                outcomes[key] += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        return dict(outcomes)
    finally:
        for channel in opened:
            await channel.close()


@dataclass
class Flood:
    """A running flood process: ``go()`` starts the calls, ``result()`` waits for the counts."""

    process: asyncio.subprocess.Process

    async def go(self) -> None:
        """Wait until its channels are open, then start the calls."""
        assert self.process.stdin is not None and self.process.stdout is not None
        ready = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if ready != b"ready\n":
            raise RuntimeError(f"the flood process did not start: {ready!r}")
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()

    async def result(self, timeout: float = 120) -> dict[str, int]:
        """Stop the calls (if still going) and wait for the counts."""
        stdout, _ = await asyncio.wait_for(self.process.communicate(b"stop\n"), timeout)
        if self.process.returncode != 0:
            raise RuntimeError(f"the flood process exited with {self.process.returncode}")
        counts: dict[str, int] = json.loads(stdout)
        return counts

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def start_flood(target: str, pki_dir: Path, org_id: str, **options: float | int) -> Flood:
    """Start ``python -m tests.integration.flood`` with ``options`` (``duration_s=3``, ...)."""
    args = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    root = Path(__file__).resolve().parents[2]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.flood",
        target,
        str(pki_dir),
        org_id,
        *args,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    return Flood(process)


async def issue_tokens(app: grpc.aio.Channel, card_number: str, n: int) -> list[str]:
    """``n`` card-present tokens for ``card_number``, from the citizen app."""
    stub = card_pb2_grpc.CardServiceStub(app)
    request = card_pb2.IssueCardTokenRequest(
        card=common_pb2.CardRef(card_number=card_number), purpose=common_pb2.PURPOSE_PATRQT
    )
    return [str((await stub.IssueCardToken(request)).token) for _ in range(n)]


async def timed_visits(
    hospital: grpc.aio.Channel,
    card_number: str,
    tokens: list[str],
    *,
    until: Callable[[], bool] = lambda: False,
    every_s: float = 0.0,
) -> tuple[list[float], Counter[str]]:
    """GetInsuranceStatus once per token, one at a time, starting one every ``every_s`` seconds
    (or at once when the previous ends, if later), until ``until()`` or no tokens are left: the
    latency of each (seconds) and the count of calls per status."""
    stub = insurance_pb2_grpc.InsuranceServiceStub(hospital)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    next_at = time.monotonic()
    for token in tokens:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at + every_s, time.monotonic())
        if until():
            break
        request = insurance_pb2.GetInsuranceStatusRequest(
            card=common_pb2.CardRef(card_number=card_number),
            purpose=common_pb2.PURPOSE_COVERAGE,
            basis=common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token=token)),
        )
        started = time.perf_counter()
        try:
            await stub.GetInsuranceStatus(request, timeout=30)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as err:
            codes[f"{err.code().name}/{refusal_reason(err)}"] += 1
        latencies.append(time.perf_counter() - started)
    return latencies, codes


async def _main(args: argparse.Namespace) -> None:
    go, stop = asyncio.Event(), asyncio.Event()

    def line() -> None:  # the first line starts the flood, the next (or the end) stops it
        if not sys.stdin.readline() or go.is_set():
            stop.set()
        go.set()

    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), line)
    outcomes = await flood(
        args.target,
        PkiLayout(Path(args.pki_dir)),
        args.org_id,
        concurrency=args.concurrency,
        duration_s=args.duration_s,
        max_calls=args.max_calls,
        channels=args.channels,
        go=go,
        stop=stop,
    )
    print(json.dumps(outcomes, sort_keys=True), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target")
    parser.add_argument("pki_dir")
    parser.add_argument("org_id")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--max-calls", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    if not args.target.startswith("127.0.0.1:"):
        parser.error("the flood goes to 127.0.0.1 only")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
