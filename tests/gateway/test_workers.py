"""``onecard serve --workers``: what is refused before any worker starts (SQLite with more than one
worker, a bad number, metrics ports past 65535, a port that is taken or already served, a worker
started without its supervisor), where each worker's metrics listen, and a supervisor whose worker
cannot start. The workers running on PostgreSQL: tests/integration/test_workers.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from gateway.cli import main
from gateway.errors import SetupError
from gateway.workers import metrics_port_of, reserve_port


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("ONECARD_DATA_DIR", str(data))
    return data


def test_more_than_one_worker_on_sqlite_is_refused_in_one_line_before_anything_is_made(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: the refusals come before the command configures logging for the process.
    assert main(["serve", "--workers", "2"]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1
    assert '--workers 2 needs store = "postgres"' in said
    assert "or use --workers 1" in said
    assert not data_dir.exists()


@pytest.mark.parametrize("given", ["0", "-1", "two", str(4 * (os.cpu_count() or 1) + 1)])
def test_a_number_of_workers_out_of_range_is_a_usage_error(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--workers", given])
    assert info.value.code == 2
    assert "is not a number of processes from 1 to" in capsys.readouterr().err


def test_metrics_ports_past_65535_are_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONECARD_STORE", "postgres")
    monkeypatch.setenv("ONECARD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("ONECARD_METRICS_PORT", "65535")
    assert main(["serve", "--workers", "2"]) == 2
    said = capsys.readouterr().err
    assert "worker 1 would serve its metrics on 65536" in said
    assert not data_dir.exists()


def test_each_worker_serves_metrics_on_its_own_port() -> None:
    assert [metrics_port_of(9464, i) for i in range(3)] == [9464, 9465, 9466]
    assert metrics_port_of(0, 2) == 0  # ephemeral stays ephemeral
    assert metrics_port_of(None, 2) is None  # disabled stays disabled


def test_a_reserved_port_takes_workers_with_so_reuseport_and_no_one_else() -> None:
    with reserve_port("127.0.0.1", 0) as reserved:
        port = reserved.getsockname()[1]
        assert port != 0
        with socket.socket() as plain, pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
        worker = grpc.server(None, options=[("grpc.so_reuseport", 1)])  # type: ignore[arg-type]
        try:
            assert worker.add_insecure_port(f"127.0.0.1:{port}") == port
        finally:
            worker.stop(None)


def test_a_port_another_program_holds_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SetupError) as info:
            reserve_port("127.0.0.1", port)
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"


def test_a_port_another_supervisors_workers_serve_is_refused() -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(SetupError) as info:
            reserve_port("127.0.0.1", port)
    assert "a server already listens there" in str(info.value)


def _serve(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``onecard serve ARGS`` in a process of its own (it configures logging, for the process)."""
    env = dict(
        os.environ,
        ONECARD_DATA_DIR=str(tmp_path / "data"),
        ONECARD_LISTEN_PORT="0",
        ONECARD_METRICS_PORT="0",
        ONECARD_LOG_LEVEL="warning",
    )
    env.update({f"ONECARD_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_worker_started_without_its_supervisor_is_refused(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--worker-index", "0", "--worker-port", "7443", "--ready-fd", "9")
    assert done.returncode == 2
    assert "a worker starts under `onecard serve --workers N`" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_reason(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "bad.cedar").write_text("permit(principal, action, resource) when { nonsense };")
    done = _serve(tmp_path, "--workers", "1", policies_dir=str(broken))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (
        "onecard: worker 0 exited (exit status 2) before it listened; its reason is above"
    )
    assert any("bad.cedar" in line or "polic" in line for line in lines[:-1]), done.stderr
    assert "listening on" not in done.stderr
    keys = tmp_path / "data" / "keys"  # made once by the supervisor, before the worker failed
    assert {"token.key", "audit-log.key", "consent-artefact.key"} <= {
        p.name for p in keys.iterdir()
    }
