"""``sekmet-fhir``, a FHIR R4 server none of our code is inside, started on loopback for tests.

``sekmet serve --host 127.0.0.1 --port N`` in a directory of its own (its database goes there);
seeded through its own REST API: each person's ``seed.transaction`` Bundle is POSTed to the base
URL, and the server assigns its own ids. Its Bundle links name ``http://localhost:8090/fhir``
whatever port it serves on, which the adapter must rebase.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from adapters.fhir import seed
from adapters.social_insurance.seed import Person
from tests.integration.served import free_port

_START_ATTEMPTS = 300  # x 0.1 s


def sekmet_command() -> str:
    found = shutil.which("sekmet", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("sekmet is not installed: it is in the [dev] extra (./dev test)")
    return found


@contextmanager
def sekmet_server(directory: Path, people: Sequence[Person]) -> Iterator[str]:
    """A running sekmet holding ``people``'s records; yields its base URL (``.../fhir``)."""
    port = free_port()
    env = dict(os.environ, SEKMET_DB=str(directory / "sekmet.db"))
    env.pop("SEKMET_BASE_URL", None)
    log = (directory / "sekmet.log").open("wb")
    proc = subprocess.Popen(
        [sekmet_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=directory,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        _wait_until_up(proc, base, directory)
        for person in people:
            _post(base, seed.transaction(person))
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_until_up(proc: subprocess.Popen[bytes], base: str, directory: Path) -> None:
    for _ in range(_START_ATTEMPTS):
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{base}/metadata", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    log = (directory / "sekmet.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"sekmet did not start on {base}; its log ends:\n{log}")


def _post(base: str, bundle: dict[str, object]) -> None:
    request = urllib.request.Request(
        base,
        data=json.dumps(bundle).encode(),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.loads(answer.read())
    failed = [
        e["response"]["status"]
        for e in body.get("entry", ())
        if not e["response"]["status"].startswith("201")
    ]
    if answer.status != 200 or failed:
        raise RuntimeError(f"sekmet refused the seed transaction: {answer.status} {failed[:3]}")
