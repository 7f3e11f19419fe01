"""A worker started for the length of one command (`pipeline run --with-worker`)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 120.0


class LocalWorker:
    """`llmjobs worker` in its own process group, pointed at this command's broker."""

    def __init__(self, broker_url: str, kinds: Sequence[str], device: str,
                 config_file: Path | None, log_path: Path | None = None) -> None:
        env = dict(os.environ)
        env["LLMJOBS_BROKER_URL"] = broker_url
        env["LLMJOBS_EXIT_WITH_PID"] = str(os.getpid())
        if config_file is not None:
            env["LLMJOBS_CONFIG"] = str(config_file)
        command = [sys.executable, "-m", "llmjobs.cli.main", "worker", "--device", device,
                   "--kinds", ",".join(kinds), "--no-restart"]
        # The worker's banner and per-chunk lines go to a log file, not over the run's output.
        self.log_path = log_path
        output = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            output = log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                        stdout=output, stderr=subprocess.STDOUT if output else None,
                                        start_new_session=True)
        if output is not None:
            output.close()
        log.info("Started worker process %d for %s on %s (log: %s).", self.process.pid,
                 ",".join(kinds), device, log_path or "this terminal")

    def stop_reason(self) -> str | None:
        """Return why runs cannot progress (the worker exited), or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        where = self.log_path or "its output above"
        return f"the worker started by --with-worker exited with code {code}; see {where}"

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGTERM lets each worker finish its micro-batch and release the rest of its chunk.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("Worker process %d did not stop within %.0f s; killing it.",
                            self.process.pid, STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        log.info("Worker process %d stopped with code %s.", self.process.pid, self.process.returncode)


@contextlib.contextmanager
def local_worker(broker_url: str, kinds: Sequence[str], device: str,
                 config_file: Path | None, log_path: Path | None = None) -> Iterator[LocalWorker]:
    worker = LocalWorker(broker_url, kinds, device, config_file, log_path)
    try:
        yield worker
    finally:
        worker.stop()
