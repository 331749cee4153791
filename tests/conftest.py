"""Fixtures for every test: the audit log's per-entry loops, in C and in Python."""

from __future__ import annotations

import os

import pytest

from gateway.audit import _verify_fast as fast
from gateway.audit import compact, record, sequencer


def require_native() -> None:
    """Skip without the C extension, except in CI, which must build it (and fails instead)."""
    if fast.NATIVE:
        return
    message = "the C extension gateway.audit._native is not built (needs gcc and OpenSSL headers)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must test it")
    pytest.skip(message)


@pytest.fixture(params=["C", "Python"])
def loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the C loops, then with the Python ones (in worker processes too).

    Both the verifier's (``_verify_fast.LOOPS``) and the log writer's (``record_body``,
    ``chain_leaves`` as the sequencer imported it, ``compact.push_leaves``).
    """
    if request.param == "C":
        require_native()
    else:
        monkeypatch.setenv("ONECARD_AUDIT_NATIVE", "0")  # spawned workers import afresh
        for name in fast.LOOPS:
            monkeypatch.setattr(fast, name, getattr(fast, f"py_{name}"))
        monkeypatch.setattr(record, "record_body", record.py_record_body)
        monkeypatch.setattr(sequencer, "chain_leaves", record.py_chain_leaves)
        monkeypatch.setattr(compact, "push_leaves", compact.py_push_leaves)
    implementation: str = request.param
    return implementation
