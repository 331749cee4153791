"""Gateway benchmark: the request path against a bare grpcio mutual-TLS server, in one run.

    .venv/bin/python bench/gateway_bench.py                 # about 4 minutes
    .venv/bin/python bench/gateway_bench.py --quick         # a few seconds; CI runs it

Every server runs in a process of its own on 127.0.0.1, as deployed:

- the **bare** server: grpc.aio with the same mutual TLS (the development PKI's server
  certificate, client certificates required), one unary method that answers a message of the
  size the gateway answers, doing nothing else: the ceiling;
- the **gateway**: ``onecard serve`` on its embedded defaults (SQLite, the development PKI),
  with rate limits out of reach (they are a policy, not a cost) and the reference back ends in
  **their own process** (``onecard backends``): a back end is another machine;
- the **load generator**: this file with ``--role load``, in a process of its own, the same
  grpc.aio client for every scenario, several channels (one TCP connection each).

Scenarios (each repeated ``--repeat`` times, interleaved with the bare server, medians):

- ``visit``: the hospital visit: the citizen app issues a card-present token, the hospital asks
  GetInsuranceStatus with it (two calls);
- ``library``: the citizen app issues a token, a library asks VerifyCard with it (two calls);
- ``consent``: the hospital asks GetInsuranceStatus on a standing consent the citizen granted
  once before the run (one call, the citizen not present; each answer takes a use of it in
  the audit entry's transaction);
- ``refusal``: a library asks GetInsuranceStatus with a valid token: refused by policy, audited
  (one call; a refusal redeems nothing, so each worker's token serves until it expires).

For each: calls/s with ``--in-flight`` calls in flight over ``--channels`` channels (closed
loop, after ``--warmup-s``, over ``--window-s``); p50/p99/p99.9 latency of every call at a fixed
offered load of ``--offered`` calls/s (open loop); the p50 of the scenario's main call with one
call in flight (GetInsuranceStatus for ``visit``); the server's CPU (user + system, from
/proc) per call in the throughput window; the gateway's RSS at start and end. Ratios are to
the bare server measured in the same repetition.

Soak (``--soak-s``, after the repetitions, on the same gateway): the ``visit`` scenario in an
open loop at ``--soak-load`` times the visit capacity measured above, for ``--soak-s`` seconds,
the gateway's RSS sampled every ``--soak-every-s``: its start, end and maximum, and the change
from start to end (the target: within 10% over 10 minutes at 0.8).

    .venv/bin/python bench/gateway_bench.py --scenarios visit --soak-s 600 --soak-load 0.8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.social_insurance.seed import Population  # noqa: E402
from gateway.api.onecard.v1 import (  # noqa: E402
    card_pb2,
    card_pb2_grpc,
    common_pb2,
    consent_pb2,
    consent_pb2_grpc,
    insurance_pb2,
    insurance_pb2_grpc,
)
from gateway.pki import PkiLayout, init_pki  # noqa: E402
from gateway.ports import CardStatus  # noqa: E402

HOSPITAL, LIBRARY, APP = "hosp-bj-001", "lib-bj-001", "app-ecard-001"
BARE_METHOD = "/bench.Bare/Echo"
SCENARIOS = ("visit", "library", "consent", "refusal")
TICK = os.sysconf("SC_CLK_TCK")
SUPPRESS = argparse.SUPPRESS


# ---------------------------------------------------------------- the bare server (--role bare)


async def serve_bare(pki: PkiLayout, port: int, answer_bytes: int) -> None:
    """One unary method answering ``answer_bytes`` bytes, over the gateway's mutual TLS."""
    answer = b"x" * answer_bytes

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        "bench.Bare", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(0)


# ----------------------------------------------------------- the load generator (--role load)


def _channel(target: str, pki: PkiLayout, org_id: str) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key(org_id).read_bytes(),
        certificate_chain=pki.client_cert(org_id).read_bytes(),
    )
    # A local subchannel pool: each channel is a TCP connection of its own.
    return grpc.aio.secure_channel(
        target, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )


def _basis(token: str) -> common_pb2.LawfulBasis:
    return common_pb2.LawfulBasis(card_present=common_pb2.CardPresent(token=token))


@dataclass
class Clients:
    """The stubs one worker uses, over one channel per organisation."""

    app: card_pb2_grpc.CardServiceStub
    hospital: insurance_pb2_grpc.InsuranceServiceStub
    library_cards: card_pb2_grpc.CardServiceStub
    library_insurance: insurance_pb2_grpc.InsuranceServiceStub
    bare: Callable[[bytes], Awaitable[bytes]]


class Load:
    """The scenario's operation, as a sequence of timed calls."""

    def __init__(
        self, scenario: str, clients: Clients, card: str, request_bytes: int, consent: str
    ) -> None:
        self.scenario, self.c, self.card, self.consent = scenario, clients, card, consent
        self._ask = b"y" * request_bytes
        self._token, self._token_at = "", 0.0

    async def token(self) -> str:
        response = await self.c.app.IssueCardToken(
            card_pb2.IssueCardTokenRequest(
                card=common_pb2.CardRef(card_number=self.card), purpose=common_pb2.PURPOSE_PATRQT
            )
        )
        return str(response.token)

    async def main_call(self, token: str) -> None:
        """The scenario's data call (with ``token``); a refusal is what ``refusal`` expects."""
        card = common_pb2.CardRef(card_number=self.card)
        if self.scenario == "visit":
            await self.c.hospital.GetInsuranceStatus(
                insurance_pb2.GetInsuranceStatusRequest(
                    card=card, purpose=common_pb2.PURPOSE_COVERAGE, basis=_basis(token)
                )
            )
        elif self.scenario == "consent":
            await self.c.hospital.GetInsuranceStatus(
                insurance_pb2.GetInsuranceStatusRequest(
                    card=card,
                    purpose=common_pb2.PURPOSE_COVERAGE,
                    basis=common_pb2.LawfulBasis(consent_id=self.consent),
                )
            )
        elif self.scenario == "library":
            await self.c.library_cards.VerifyCard(
                card_pb2.VerifyCardRequest(
                    card=card, purpose=common_pb2.PURPOSE_LIBRARY_SERVICE, basis=_basis(token)
                )
            )
        else:
            try:
                await self.c.library_insurance.GetInsuranceStatus(
                    insurance_pb2.GetInsuranceStatusRequest(
                        card=card, purpose=common_pb2.PURPOSE_LIBRARY_SERVICE, basis=_basis(token)
                    )
                )
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.PERMISSION_DENIED:
                    raise
            else:
                raise RuntimeError("the refusal scenario's call was answered, not refused")

    async def op(self, timings: list[float]) -> int:
        """One operation; appends each call's latency to ``timings``; returns calls made."""
        if self.scenario == "bare":
            t0 = time.perf_counter()
            await self.c.bare(self._ask)
            timings.append(time.perf_counter() - t0)
            return 1
        if self.scenario == "consent":
            t0 = time.perf_counter()
            await self.main_call("")
            timings.append(time.perf_counter() - t0)
            return 1
        if self.scenario == "refusal":
            if time.monotonic() - self._token_at > 30:  # tokens live 60 s; refusals keep them
                self._token, self._token_at = await self.token(), time.monotonic()
            t0 = time.perf_counter()
            await self.main_call(self._token)
            timings.append(time.perf_counter() - t0)
            return 1
        t0 = time.perf_counter()
        token = await self.token()
        t1 = time.perf_counter()
        await self.main_call(token)
        t2 = time.perf_counter()
        timings += (t1 - t0, t2 - t1)
        return 2

    async def single(self) -> float:
        """The latency of the scenario's main call alone (its token fetched untimed)."""
        if self.scenario == "bare":
            t0 = time.perf_counter()
            await self.c.bare(self._ask)
            return time.perf_counter() - t0
        if self.scenario == "consent":
            t0 = time.perf_counter()
            await self.main_call("")
            return time.perf_counter() - t0
        token = self._token if self.scenario == "refusal" else await self.token()
        if not token:
            token = self._token = await self.token()
            self._token_at = time.monotonic()
        t0 = time.perf_counter()
        await self.main_call(token)
        return time.perf_counter() - t0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _loads(args: argparse.Namespace) -> tuple[list[dict[str, grpc.aio.Channel]], list[Load]]:
    """One channel per organisation per ``--channels``, and ``--in-flight`` workers over them."""
    pki = PkiLayout(Path(args.pki))
    channels = [
        {org: _channel(args.target, pki, org) for org in (APP, HOSPITAL, LIBRARY)}
        for _ in range(args.channels)
    ]
    loads = []
    for i in range(args.in_flight):
        ch = channels[i % len(channels)]
        bare = ch[APP].unary_unary(BARE_METHOD)
        clients = Clients(
            card_pb2_grpc.CardServiceStub(ch[APP]),
            insurance_pb2_grpc.InsuranceServiceStub(ch[HOSPITAL]),
            card_pb2_grpc.CardServiceStub(ch[LIBRARY]),
            insurance_pb2_grpc.InsuranceServiceStub(ch[LIBRARY]),
            bare,
        )
        loads.append(Load(args.scenario, clients, args.card, args.request_bytes, args.consent))
    return channels, loads


async def _open_loop(
    loads: list[Load], rate: float, seconds: float, timings: list[float]
) -> list[BaseException]:
    """Start an operation every 1/``rate`` s for ``seconds``, whatever is late; the failures."""
    every = 1 / rate
    pending: set[asyncio.Task[int]] = set()
    start = time.monotonic()
    for n in range(int(seconds * rate)):
        await asyncio.sleep(max(0.0, start + n * every - time.monotonic()))
        task = asyncio.create_task(loads[n % len(loads)].op(timings))
        pending.add(task)
        task.add_done_callback(pending.discard)
    done = await asyncio.gather(*pending, return_exceptions=True)
    return [outcome for outcome in done if isinstance(outcome, BaseException)]


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    channels, loads = _loads(args)

    async def closed(seconds: float, timings: list[float]) -> int:
        deadline = time.monotonic() + seconds
        counts = [0] * len(loads)

        async def worker(n: int) -> None:
            while time.monotonic() < deadline:
                counts[n] += await loads[n].op(timings)

        await asyncio.gather(*(worker(n) for n in range(len(loads))))
        return sum(counts)

    await closed(args.warmup_s, [])
    cpu0, t0 = _cpu_s(args.server_pid), time.monotonic()
    calls = await closed(args.window_s, [])
    elapsed, cpu = time.monotonic() - t0, _cpu_s(args.server_pid) - cpu0

    # Open loop at a fixed offered load: an operation starts every 1/rate s, whatever is late.
    calls_per_op = 1 if args.scenario in ("bare", "consent", "refusal") else 2
    offered: list[float] = []
    failures = await _open_loop(loads, args.offered / calls_per_op, args.window_s, offered)
    if failures:
        raise failures[0]

    singles = [await loads[0].single() for _ in range(args.singles)]
    for ch in channels:
        for channel in ch.values():
            await channel.close()
    q = statistics.quantiles(offered, n=1000) if len(offered) > 1 else [0.0] * 999
    return {
        "calls_per_s": calls / elapsed,
        "cpu_ms_per_call": cpu * 1000 / max(calls, 1),
        "p50_ms": statistics.median(offered) * 1000,
        "p99_ms": q[989] * 1000,
        "p999_ms": q[998] * 1000,
        "single_p50_ms": statistics.median(singles) * 1000,
    }


async def run_soak_load(args: argparse.Namespace) -> dict[str, Any]:
    """Visits in an open loop at ``--offered`` calls/s for ``--window-s`` seconds."""
    channels, loads = _loads(args)
    timings: list[float] = []
    failed = await _open_loop(loads, args.offered / 2, args.window_s, timings)
    for ch in channels:
        for channel in ch.values():
            await channel.close()
    q = statistics.quantiles(timings, n=100) if len(timings) > 1 else [0.0] * 99
    return {
        "calls": len(timings),
        "failed_ops": len(failed),
        "p50_ms": statistics.median(timings) * 1000 if timings else 0.0,
        "p99_ms": q[98] * 1000,
    }


# ----------------------------------------------------------------------- orchestration (parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def _process(
    argv: list[str], ready: Callable[[], bool], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; its stderr goes to a file (a pipe nobody reads would
    fill and stall it), shown if it dies before ``ready``."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while not ready():
                if proc.poll() is not None:
                    errors.seek(0)
                    said = errors.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"{what} exited with {proc.returncode}: {said}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start within 60 s")
                time.sleep(0.05)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _listening(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    return check


def _gateway_config(root: Path, pki: PkiLayout, port: int, backend_port: int) -> Path:
    limits = "\n".join(
        f"[rate_limits.{kind}]\nper_s = 1000000\nburst = 1000000\n"
        for kind in ("hospital", "library", "transit", "regulator", "citizen_app")
    )
    config = root / "gateway.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\npki_dir = "{pki.directory}"\n'
        f"listen_port = {port}\nmetrics_port = 0\n"
        f'log_level = "warning"\nmax_in_flight = 10000\nmax_in_flight_per_org = 10000\n'
        f'[backends.social_insurance]\nurl = "http://127.0.0.1:{backend_port}"\n{limits}'
    )
    return config


def _prepare(target: str, pki: PkiLayout, card: str) -> tuple[int, int, str]:
    """(request, response) bytes of a GetInsuranceStatus call, what the bare server trades, and
    the consent the ``consent`` scenario reads on (granted by the citizen app, no use limit)."""

    async def ask() -> tuple[int, int, str]:
        async with (
            _channel(target, pki, APP) as app,
            _channel(target, pki, HOSPITAL) as hospital,
        ):
            ref = common_pb2.CardRef(card_number=card)
            token = (
                await card_pb2_grpc.CardServiceStub(app).IssueCardToken(
                    card_pb2.IssueCardTokenRequest(card=ref, purpose=common_pb2.PURPOSE_PATRQT)
                )
            ).token
            request = insurance_pb2.GetInsuranceStatusRequest(
                card=ref, purpose=common_pb2.PURPOSE_COVERAGE, basis=_basis(token)
            )
            response = await insurance_pb2_grpc.InsuranceServiceStub(hospital).GetInsuranceStatus(
                request
            )
            grant = consent_pb2.GrantConsentRequest(
                card=ref,
                purpose=common_pb2.PURPOSE_PATRQT,
                grantee=consent_pb2.Grantee(org_id=HOSPITAL),
                categories=[consent_pb2.DATA_CATEGORY_INSURANCE],
                purposes=[common_pb2.PURPOSE_COVERAGE],
            )
            grant.valid_until.FromSeconds(int(time.time()) + 86_400)
            granted = await consent_pb2_grpc.ConsentServiceStub(app).GrantConsent(grant)
            return request.ByteSize(), response.ByteSize(), granted.consent.consent_id

    return asyncio.run(ask())


def _load(
    args: argparse.Namespace,
    scenario: str,
    port: int,
    pid: int,
    card: str,
    pki: Path,
    request_bytes: int,
) -> dict[str, Any]:
    out = subprocess.run(
        _load_argv(args, "load", scenario, port, pid, card, pki, request_bytes),
        check=False,  # a failure is reported below, with what it said
        capture_output=True,
        cwd=ROOT,
    )
    if out.returncode != 0:  # say why: its stderr is the only account of the failure
        said = out.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"the {scenario} load generator exited with {out.returncode}: {said}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _soak(
    args: argparse.Namespace, port: int, pid: int, card: str, pki: Path, capacity: float
) -> dict[str, Any]:
    """Visits at ``--soak-load`` x ``capacity`` calls/s for ``--soak-s``; RSS sampled meanwhile."""
    rate = args.soak_load * capacity
    soak = argparse.Namespace(**{**vars(args), "window_s": args.soak_s, "offered": rate})
    argv = _load_argv(soak, "soak", "visit", port, pid, card, pki, 0)
    rss = [_rss_mb(pid)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(args.soak_every_s)
            rss.append(_rss_mb(pid))
        if proc.returncode != 0:
            raise RuntimeError(f"the soak's load generator exited with {proc.returncode}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read())
    return {
        **result,
        "offered_calls_per_s": rate,
        "seconds": args.soak_s,
        "rss_mb": rss,
        "rss_change_pct": (rss[-1] - rss[0]) / rss[0] * 100,
    }


def _load_argv(
    args: argparse.Namespace,
    role: str,
    scenario: str,
    port: int,
    pid: int,
    card: str,
    pki: Path,
    request_bytes: int,
) -> list[str]:
    return [
        sys.executable, __file__, "--role", role, "--scenario", scenario,
        "--target", f"127.0.0.1:{port}", "--server-pid", str(pid), "--card", card,
        "--pki", str(pki), "--request-bytes", str(request_bytes),
        "--channels", str(args.channels), "--in-flight", str(args.in_flight),
        "--warmup-s", str(args.warmup_s), "--window-s", str(args.window_s),
        "--offered", str(args.offered), "--singles", str(args.singles),
        "--consent", args.consent,
    ]  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    card = Population.default().first(card_status=CardStatus.NORMAL).id_number
    with tempfile.TemporaryDirectory(prefix="onecard-bench-") as tmp:
        root = Path(tmp)
        pki = init_pki(root / "pki")
        backend_port, gateway_port, bare_port = _free_port(), _free_port(), _free_port()
        onecard = [sys.executable, "-m", "gateway.cli"]
        config = _gateway_config(root, pki, gateway_port, backend_port)
        with (
            _process(
                [
                    *onecard,
                    "backends",
                    "--port",
                    str(backend_port),
                    "--sip2-port",
                    "0",
                    "--fhir-port",
                    str(_free_port()),
                    "--eligibility-port",
                    str(_free_port()),
                    "--keys-dir",
                    str(root / "keys"),
                ],
                _listening(backend_port),
                "onecard backends",
            ),
            _process(
                [*onecard, "serve", "--config", str(config)],
                _listening(gateway_port),
                "onecard serve",
            ) as gateway,
        ):
            target = f"127.0.0.1:{gateway_port}"
            request_bytes, response_bytes, args.consent = _prepare(target, pki, card)
            rss_start = _rss_mb(gateway.pid)
            bare_argv = [
                sys.executable, __file__, "--role", "bare", "--pki", str(pki.directory),
                "--port", str(bare_port), "--answer-bytes", str(response_bytes),
            ]  # fmt: skip
            rows: dict[str, list[dict[str, Any]]] = {"bare": [], **{s: [] for s in args.scenarios}}
            with _process(bare_argv, _listening(bare_port), "bare server") as bare:
                for rep in range(args.repeat):
                    rows["bare"].append(
                        _load(args, "bare", bare_port, bare.pid, card, pki.directory, request_bytes)
                    )
                    for scenario in args.scenarios:
                        rows[scenario].append(
                            _load(args, scenario, gateway_port, gateway.pid, card,
                                  pki.directory, request_bytes)
                        )  # fmt: skip
                    print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
            rss_end = _rss_mb(gateway.pid)
            soak = None
            if args.soak_s > 0:
                capacity = statistics.median(r["calls_per_s"] for r in rows["visit"])
                soak = _soak(args, gateway_port, gateway.pid, card, pki.directory, capacity)
    return {
        "rows": rows,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "soak": soak,
    }


METRICS = (
    ("calls_per_s", "calls/s", "{:,.0f}"),
    ("p50_ms", "p50 ms at offered load", "{:.2f}"),
    ("p99_ms", "p99 ms at offered load", "{:.2f}"),
    ("p999_ms", "p99.9 ms at offered load", "{:.2f}"),
    ("single_p50_ms", "p50 ms, one call in flight", "{:.2f}"),
    ("cpu_ms_per_call", "server CPU ms per call", "{:.3f}"),
)


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = result["rows"]
    med = {
        name: {key: statistics.median(r[key] for r in runs) for key, _, _ in METRICS}
        for name, runs in rows.items()
    }
    names = list(rows)
    lines = [
        f"| median of {args.repeat} | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label, fmt in METRICS:
        lines.append(f"| {label} | " + " | ".join(fmt.format(med[n][key]) for n in names) + " |")
    bare = med["bare"]
    lines.append(
        "| throughput / bare | " + " | ".join(
            f"{med[n]['calls_per_s'] / bare['calls_per_s']:.2f}x" for n in names
        ) + " |"
    )  # fmt: skip
    lines.append(
        "| CPU per call / bare | " + " | ".join(
            f"{med[n]['cpu_ms_per_call'] / bare['cpu_ms_per_call']:.2f}x" for n in names
        ) + " |"
    )  # fmt: skip
    lines.append("")
    lines.append(
        f"gateway RSS {result['rss_start_mb']:.0f} MB at start, {result['rss_end_mb']:.0f} MB at "
        f"end; messages {result['request_bytes']} B asked, {result['response_bytes']} B answered; "
        f"{args.in_flight} in flight over {args.channels} channels, windows of {args.window_s} s "
        f"after {args.warmup_s} s warm-up, offered load {args.offered} calls/s"
    )
    soak = result.get("soak")
    if soak:
        rss = soak["rss_mb"]
        lines += [
            "",
            f"soak: visits at {soak['offered_calls_per_s']:,.0f} calls/s ({args.soak_load:g}x the "
            f"visit capacity) for {soak['seconds']:g} s: {soak['calls']:,} calls, "
            f"{soak['failed_ops']} failed, p50 {soak['p50_ms']:.2f} ms, "
            f"p99 {soak['p99_ms']:.2f} ms; "
            f"gateway RSS {rss[0]:.1f} MB at start, {rss[-1]:.1f} MB at end, {max(rss):.1f} MB at "
            f"most ({len(rss)} samples, every {args.soak_every_s:g} s): "
            f"{soak['rss_change_pct']:+.1f}%",
        ]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny windows: proves the harness runs")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--window-s", type=float, default=8.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--offered", type=float, default=200.0, help="open-loop calls/s")
    p.add_argument("--singles", type=int, default=300, help="calls timed one at a time")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    p.add_argument("--soak-s", type=float, default=0.0, help="then visits for this long (RSS)")
    p.add_argument("--soak-load", type=float, default=0.8, help="soak load / visit capacity")
    p.add_argument("--soak-every-s", type=float, default=5.0, help="RSS sampling interval")
    # internal: the child processes
    p.add_argument(
        "--role", choices=("main", "bare", "load", "soak"), default="main", help=SUPPRESS
    )
    for name in ("--pki", "--target", "--card", "--scenario", "--consent"):
        p.add_argument(name, help=SUPPRESS)
    for name in ("--port", "--answer-bytes", "--server-pid", "--request-bytes"):
        p.add_argument(name, type=int, help=SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.window_s, args.warmup_s, args.singles = 1, 1.0, 0.3, 20
        args.offered, args.in_flight = 50.0, 8
        args.soak_s, args.soak_every_s = 1.0, 0.25
    if args.soak_s > 0 and "visit" not in args.scenarios:
        p.error("--soak-s needs the visit scenario (its capacity sets the soak's load)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.role == "bare":
        asyncio.run(serve_bare(PkiLayout(Path(args.pki)), args.port, args.answer_bytes))
        return 0
    if args.role == "load":
        print(json.dumps(asyncio.run(run_load(args))))
        return 0
    if args.role == "soak":
        print(json.dumps(asyncio.run(run_soak_load(args))))
        return 0
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
    print(report(result, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
