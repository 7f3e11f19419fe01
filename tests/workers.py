"""Real worker processes for integration tests, started the way users start them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

LLMJOBS = [sys.executable, "-m", "llmjobs.cli.main"]


def worker_env(home: Path, database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """Environment for a worker with short leases, so recovery happens within seconds."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLMJOBS_")}
    env.update({
        "LLMJOBS_HOME": str(home),
        "LLMJOBS_DATABASE_URL": database_url,
        "LLMJOBS_BROKER_URL": broker_url,
        "LLMJOBS_LEASE_S": "6",
        "LLMJOBS_REAPER_INTERVAL_S": "1",
        # Several workers and the tests share two cores; more threads only contend.
        "LLMJOBS_TORCH_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class LlmjobsProcess:
    """An `llmjobs` command in its own process group, with its output in a log file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        command = [*LLMJOBS, *args]
        self.process = subprocess.Popen(
            command, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the launcher and its worker processes at once, as a host failure would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM the group and wait; SIGKILL it after timeout_s. Return the exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode


class WorkerProcess(LlmjobsProcess):
    """`llmjobs worker --device cpu` with extra arguments."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str) -> None:
        super().__init__(env, log_path, "worker", "--device", "cpu", *args)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
