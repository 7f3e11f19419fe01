"""Whether a pipeline run's owner still runs: by pid on this host and by heartbeat age."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from llmjobs.pipelines.store import STALE_AFTER_S, owner_alive

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=timezone.utc)
FRESH = NOW - timedelta(seconds=30)
STALE = NOW - timedelta(seconds=STALE_AFTER_S + 1)


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


@pytest.mark.parametrize(("pid_kind", "heartbeat", "alive"), [
    pytest.param("live", FRESH, True, id="live-pid-fresh-heartbeat"),
    pytest.param("live", STALE, False, id="reused-pid-stale-heartbeat"),
    pytest.param("live", None, False, id="live-pid-no-heartbeat"),
    pytest.param("dead", FRESH, False, id="dead-pid"),
])
def test_owner_on_this_host(pid_kind: str, heartbeat: datetime | None, alive: bool) -> None:
    pid = os.getpid() if pid_kind == "live" else _dead_pid()
    owner = f"{socket.gethostname()}:{pid}:abcd1234"

    assert owner_alive(owner, heartbeat, NOW) is alive


@pytest.mark.parametrize(("heartbeat", "alive"), [(FRESH, True), (STALE, False), (None, False)])
def test_owner_on_other_host(heartbeat: datetime | None, alive: bool) -> None:
    assert owner_alive("elsewhere.example:1:abcd1234", heartbeat, NOW) is alive


def test_no_owner() -> None:
    assert owner_alive(None, FRESH, NOW) is False
