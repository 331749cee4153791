"""Review of issue 17: two ``onecard serve --workers`` supervisors on one port.

A supervisor reserves its port with a socket bound with SO_REUSEPORT that never listens, and
refuses a port where something already answers. Between its reservation and its first worker's
listen (a start-up of several seconds), or while all its workers are being restarted, nothing
answers: a second supervisor started then reserved the same port too, and both ran their
workers on it (seen: two supervisors started together, four workers on 127.0.0.1:47171).
"""

from __future__ import annotations

import pytest

from gateway.errors import SetupError
from gateway.workers import reserve_port


def test_a_port_another_supervisor_reserved_is_refused_before_its_workers_listen() -> None:
    with reserve_port("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        with pytest.raises(SetupError) as info:
            reserve_port("127.0.0.1", port).close()
    assert str(info.value).startswith(f"cannot listen on 127.0.0.1:{port}: "), info.value
    with reserve_port("127.0.0.1", port) as again:  # free once the first supervisor ends
        assert again.getsockname()[1] == port
