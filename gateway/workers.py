"""``onecard serve --workers N``: N gateway processes on one address, and their supervisor.

Owns the supervisor (the parent process) and a worker's side of their agreement:

- before any worker starts, the supervisor claims the data directory (its lock, held until the
  end), refuses more than one worker on SQLite, makes everything that a first start makes
  (``bootstrap.prepare_once``: N workers racing would each make a different key), and reserves
  the port: a socket bound with SO_REUSEPORT that never listens (for ``listen_port = 0`` it
  is where the port is picked), kept open until the end. A port another program holds, or
  another gateway already serves, is refused in one line;
- each worker is ``onecard serve`` with hidden options: ``--worker-index I`` (its metrics
  listen on ``metrics_port + I``; 0 stays ephemeral, none stays none), ``--worker-port P``
  (it listens there with SO_REUSEPORT, beside the others) and ``--ready-fd FD``, where it writes
  one JSON line once it listens (pid, metrics port). Its standard input is a pipe from the
  supervisor: when that closes (the supervisor died, even by SIGKILL), the worker stops;
- the supervisor prints one line once every worker listens, forwards SIGTERM and SIGINT to
  every worker for a graceful stop and exits 0 when all stopped cleanly, restarts a worker that
  dies (``worker_exited`` and ``worker_restarting`` log lines; the delay doubles from
  ``RESTART_DELAY_S`` to ``RESTART_DELAY_MAX_S`` while it keeps dying young), and gives up
  (``WorkerFailed``: one line, exit status 2, every worker stopped) after ``MAX_FAILED_STARTS``
  starts in a row that never listened, or at once if a worker cannot start the first time (its
  own message is on stderr above). A worker that stops badly makes the exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from gateway.config import Settings
from gateway.errors import SetupError

__all__ = [
    "MAX_FAILED_STARTS",
    "RESTART_DELAY_MAX_S",
    "RESTART_DELAY_S",
    "Ready",
    "Supervisor",
    "announce_ready",
    "metrics_port_of",
    "refuse_sqlite",
    "reserve_port",
    "worker_settings",
]

_log = structlog.get_logger(__name__)
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 10.0
MAX_FAILED_STARTS = 5
_YOUNG_S = 10.0  # a worker that dies younger than this counts as one that keeps dying
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Ready:
    """What a worker reports once it listens."""

    pid: int
    metrics_port: int | None


def refuse_sqlite(settings: Settings, workers: int) -> None:
    """More than one worker needs PostgreSQL: one line saying so."""
    if workers > 1 and settings.store != "postgres":
        raise SetupError(
            f'--workers {workers} needs store = "postgres" (store = {settings.store!r} allows '
            f"one process per data directory): set store and database_url, or use --workers 1"
        )


def metrics_port_of(base: int | None, index: int) -> int | None:
    """Worker ``index``'s metrics port: ``base + index``; 0 stays ephemeral, None disabled."""
    return base + index if base else base


def worker_settings(settings: Settings, index: int, port: int) -> Settings:
    """``settings`` as worker ``index`` runs them: the reserved port, its own metrics port."""
    return settings.model_copy(
        update={"listen_port": port, "metrics_port": metrics_port_of(settings.metrics_port, index)}
    )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT that never listens: the workers'
    port (picked here when ``port`` is 0), held for as long as it stays open."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise SetupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = _Reserved(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise SetupError(f"cannot listen on {host}:{port}: {why}") from None
    if not sock.guard_port():
        sock.close()
        raise SetupError(
            f"cannot listen on {host}:{port}: another onecard serve --workers holds it (its "
            f"workers serve there, or are starting); stop it or choose another listen_port"
        )
    if port and _answers(host, port):
        sock.close()
        raise SetupError(
            f"cannot listen on {host}:{port}: a server already listens there (another "
            f"onecard serve --workers?); stop it or choose another listen_port"
        )
    return sock


class _Reserved(socket.socket):
    """The reserved port's socket, with the guard that keeps other supervisors off it: an
    abstract Unix socket named by the bound address (Linux: one binder at a time, released
    when the process ends, however it ends), closed with it."""

    __slots__ = ("_guard",)

    def guard_port(self) -> bool:
        """Bind the guard; False: another supervisor holds this address."""
        self._guard = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = self.getsockname()
        try:
            self._guard.bind(f"\0onecard-serve-workers {bound[0]}:{bound[1]}")
        except OSError:
            self._guard.close()
            return False
        return True

    def close(self) -> None:
        guard = getattr(self, "_guard", None)
        if guard is not None:
            guard.close()
        super().close()


def _answers(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port`` (a wildcard: on loopback)."""
    wildcards = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - to connect
    target = wildcards.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=1.0):
            return True
    except OSError:
        return False


def announce_ready(fd: int, metrics_port: int | None) -> None:
    """A worker's side: tell the supervisor it listens (one JSON line on ``fd``, then closed)."""
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({"pid": os.getpid(), "metrics_port": metrics_port}) + "\n")


async def stop_when_orphaned(stopping: asyncio.Event) -> None:
    """A worker's side: set ``stopping`` when standard input (the supervisor's pipe) closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        await reader.read()  # nothing is ever sent: this returns at EOF
    finally:
        transport.close()
    stopping.set()


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    started_at: float
    ready: Ready | None = None


class WorkerFailed(SetupError):
    """A worker could not start (the first time), or kept dying at start."""


@dataclass
class Supervisor:
    """Starts, watches, restarts and stops the workers on one reserved port."""

    settings: Settings
    config: Path | None
    workers: int
    port: int
    out: IO[str] = dataclasses.field(default_factory=lambda: sys.stderr)
    _running: dict[int, _Worker] = dataclasses.field(default_factory=dict)
    _stopping: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the exit status (0: every worker stopped cleanly)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._start_all()
            self._announce()
            watchers = [asyncio.ensure_future(self._watch(i)) for i in range(self.workers)]
            stop = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait([stop, *watchers], return_when=asyncio.FIRST_COMPLETED)
            gave_up = next((w.exception() for w in watchers if w in done), None)
            for task in (stop, *watchers):
                task.cancel()
            if gave_up is not None:
                raise gave_up
        finally:
            clean = await self._stop_all()
        return 0 if clean else 1

    async def _start_all(self) -> None:
        started = await asyncio.gather(
            *(self._start(i) for i in range(self.workers)), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _start(self, index: int) -> _Worker:
        """Start worker ``index``; return once it listens, or raise ``WorkerFailed``."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(index, write_fd),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,  # the terminal's Ctrl-C reaches the supervisor only
            )
        finally:
            os.close(write_fd)
        worker = self._running[index] = _Worker(index, proc, time.monotonic())
        line = await _read_line(read_fd, proc)
        if not line:
            code = await proc.wait()
            raise WorkerFailed(
                f"worker {index} exited ({_status(code)}) before it listened; its reason is above"
            )
        fields = json.loads(line)
        worker.ready = Ready(int(fields["pid"]), fields["metrics_port"])
        _log.info(
            "worker_started",
            worker=index,
            pid=proc.pid,
            metrics_port=worker.ready.metrics_port,
        )
        return worker

    def _command(self, index: int, ready_fd: int) -> Sequence[str]:
        config = ["--config", str(self.config)] if self.config is not None else []
        return [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            *config,
            "--worker-index",
            str(index),
            "--worker-port",
            str(self.port),
            "--ready-fd",
            str(ready_fd),
        ]

    def _announce(self) -> None:
        ready = [self._running[i].ready for i in range(self.workers)]
        pids = ", ".join(str(r.pid) for r in ready if r is not None)
        ports = [r.metrics_port for r in ready if r is not None]
        metrics = (
            f"metrics on {self.settings.metrics_host}:{', '.join(str(p) for p in ports)}"
            if ports and ports[0] is not None
            else "metrics off"
        )
        print(
            f"onecard gateway listening on {self.settings.listen_host}:{self.port} (mutual TLS); "
            f"{self.workers} worker{'s' if self.workers > 1 else ''}, pids {pids}; {metrics}; "
            f"PKI in {self.settings.effective_pki_dir}; Ctrl-C or SIGTERM stops it",
            file=self.out,
            flush=True,
        )

    async def _watch(self, index: int) -> None:
        """Restart worker ``index`` whenever it dies; raise ``WorkerFailed`` when it keeps
        dying at start."""
        failed_starts = 0
        delay = RESTART_DELAY_S
        while True:
            worker = self._running[index]
            code = await worker.proc.wait()
            if self._stopping.is_set():
                return
            young = time.monotonic() - worker.started_at < _YOUNG_S
            delay = min(RESTART_DELAY_MAX_S, delay * 2) if young else RESTART_DELAY_S
            _log.warning("worker_exited", worker=index, pid=worker.proc.pid, status=_status(code))
            while True:
                _log.info("worker_restarting", worker=index, delay_s=delay)
                await asyncio.sleep(delay)
                try:
                    await self._start(index)
                except WorkerFailed:
                    failed_starts += 1
                    if failed_starts >= MAX_FAILED_STARTS:
                        raise WorkerFailed(
                            f"worker {index} failed to start {failed_starts} times in a row; "
                            f"stopping every worker"
                        ) from None
                    delay = min(RESTART_DELAY_MAX_S, delay * 2)
                    continue
                failed_starts = 0
                break

    async def _stop_all(self) -> bool:
        """SIGTERM to every worker, SIGKILL to any still running after the grace; whether
        every one stopped cleanly (exit status 0)."""
        self._stopping.set()
        workers = list(self._running.values())
        for worker in workers:
            if worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_grace_s + self.settings.request_budget_s + 10.0
        clean = True
        for worker in workers:
            try:
                code = await asyncio.wait_for(worker.proc.wait(), timeout=grace)
            except TimeoutError:
                _log.error("worker_stop_timed_out", worker=worker.index, pid=worker.proc.pid)
                worker.proc.kill()
                code = await worker.proc.wait()
            if code != 0 and worker.ready is not None:
                clean = False
                _log.error("worker_stopped_badly", worker=worker.index, status=_status(code))
        return clean


async def _read_line(fd: int, proc: asyncio.subprocess.Process) -> bytes:
    """The worker's ready line, or b"" if it ended first (or took too long: then it is killed)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await asyncio.wait_for(reader.readline(), timeout=_START_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        return b""
    finally:
        transport.close()


def _status(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"
