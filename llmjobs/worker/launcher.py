"""The worker launcher: one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES.

The launcher itself never imports torch. It sets each child's CUDA_VISIBLE_DEVICES before
the child starts, so the child's CUDA runtime sees exactly one GPU, as cuda:0. A child that
the watchdog ended, or that crashed, is started again after a pause; SIGTERM and SIGINT are
passed on to every child, which finishes its current micro-batch and releases the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from llmjobs.embedded import process_exists
from llmjobs.errors import WorkerError

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 2.0
# A child that exits this many times within RESTART_WINDOW_S is not started again.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300.0
STOP_TIMEOUT_S = 600.0
KEEPALIVE_S = 2.0


@dataclass
class WorkerSpec:
    """The GPU (None for the CPU) and the kinds of one worker process."""

    gpu_index: int | None
    kinds: list[str]
    device: str

    @property
    def label(self) -> str:
        return f"gpu{self.gpu_index}" if self.gpu_index is not None else "cpu"


@dataclass
class _Child:
    spec: WorkerSpec
    process: subprocess.Popen[bytes]
    exits: list[float] = field(default_factory=list)
    done: bool = False


def parse_gpus(text: str) -> list[int]:
    """Parse --gpus: "0,1", "2" or "all"."""
    if text.strip() == "all":
        count = count_gpus()
        if count == 0:
            raise WorkerError("--gpus all: no GPU found (nvidia-smi lists none); use --device cpu")
        return list(range(count))
    try:
        indexes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise WorkerError(f"--gpus {text!r} is invalid: expected indexes like 0,1 or 'all'") from None
    if not indexes or any(index < 0 for index in indexes) or len(set(indexes)) != len(indexes):
        raise WorkerError(f"--gpus {text!r} is invalid: expected distinct indexes like 0,1")
    return indexes


def count_gpus() -> int:
    """Count GPUs with nvidia-smi, which does not create a CUDA context in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([part for part in visible.split(",") if part.strip() and part.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def plan_workers(gpus: Sequence[int] | None, device: str, kinds: list[str]) -> list[WorkerSpec]:
    """Return one spec per GPU, or a single CPU spec with no GPU or with --device cpu."""
    if device == "cpu":
        return [WorkerSpec(None, kinds, "cpu")]
    if gpus is None:
        gpus = list(range(count_gpus()))
    if not gpus:
        if device.startswith("cuda"):
            raise WorkerError("--device cuda requested but no GPU is visible; use --device cpu")
        return [WorkerSpec(None, kinds, "cpu")]
    return [WorkerSpec(index, kinds, "cuda") for index in gpus]


class Launcher:
    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        broker_url: str,
        loglevel: str = "INFO",
        config_file: Path | None = None,
        restart: bool = True,
        keepalive: Callable[[], object] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.broker_url = broker_url
        self.loglevel = loglevel
        self.config_file = config_file
        self.restart = restart
        # Called every KEEPALIVE_S while workers run, e.g. to restart a private redis-server.
        self.keepalive = keepalive
        self._last_keepalive = time.monotonic()
        # A worker started for one command (`llmjobs run`) stops when that command is gone,
        # even if it was killed with SIGKILL and could not stop the worker itself.
        owner = os.environ.get("LLMJOBS_EXIT_WITH_PID", "")
        self.owner_pid = int(owner) if owner.isdigit() else None
        self.children: list[_Child] = []
        self._stopping = False

    def _start(self, spec: WorkerSpec) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        # Set before the child imports torch: the CUDA runtime reads it once, at init.
        env["CUDA_VISIBLE_DEVICES"] = str(spec.gpu_index) if spec.gpu_index is not None else ""
        env["LLMJOBS_BROKER_URL"] = self.broker_url
        options = {
            "broker_url": self.broker_url,
            "kinds": spec.kinds,
            "device": "cuda" if spec.gpu_index is not None else spec.device,
            "gpu_index": spec.gpu_index,
            "loglevel": self.loglevel,
            "config_file": str(self.config_file) if self.config_file else None,
            "launcher_pid": os.getpid(),
        }
        command = [sys.executable, "-m", "llmjobs.worker.app", json.dumps(options)]
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        log.info("Started worker process %d on %s for %s.", process.pid, spec.label,
                 ",".join(spec.kinds))
        return process

    def run(self) -> int:
        """Start every worker and supervise them until they all exit; return an exit status."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.children = [_Child(spec, self._start(spec)) for spec in self.specs]
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("Received %s; asking %d worker processes to finish their micro-batch.",
                 signal.Signals(signum).name, len(self.children))
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    def _supervise(self) -> int:
        status = 0
        stop_deadline: float | None = None
        while True:
            time.sleep(0.2)
            alive = False
            for child in self.children:
                code = child.process.poll()
                if code is None:
                    alive = True
                    continue
                if child.done:
                    continue
                if code != 0:
                    status = status or (code if code > 0 else 1)
                if self._stopping or not self._may_restart(child):
                    child.done = True
                    continue
                log.warning("Worker process %d on %s exited with %s; starting it again in %.0f s.",
                            child.process.pid, child.spec.label, code, RESTART_PAUSE_S)
                time.sleep(RESTART_PAUSE_S)
                child.process = self._start(child.spec)
                alive = True
            if not alive:
                break
            self._run_keepalive()
            if self._stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_TIMEOUT_S
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                log.error("Worker processes did not stop within %.0f s; killing them.",
                          STOP_TIMEOUT_S)
                for child in self.children:
                    if child.process.poll() is None:
                        child.process.kill()
        return 0 if self._stopping else status

    def _run_keepalive(self) -> None:
        if self._stopping:
            return
        if self.owner_pid is not None and not process_exists(self.owner_pid):
            log.warning("Process %d that started these workers is gone; stopping.",
                        self.owner_pid)
            self._on_signal(signal.SIGTERM, None)
            return
        if self.keepalive is None:
            return
        if time.monotonic() - self._last_keepalive < KEEPALIVE_S:
            return
        self._last_keepalive = time.monotonic()
        # A worker started for one command (`llmjobs run`) stops when that command is gone,
        # even if it was killed with SIGKILL and could not stop the worker itself.
        owner = os.environ.get("LLMJOBS_EXIT_WITH_PID", "")
        self.owner_pid = int(owner) if owner.isdigit() else None
        try:
            self.keepalive()
        except Exception as error:
            log.warning("Keep-alive check failed: %s", error)

    def _may_restart(self, child: _Child) -> bool:
        if not self.restart:
            return False
        now = time.monotonic()
        child.exits = [moment for moment in child.exits if now - moment < RESTART_WINDOW_S]
        child.exits.append(now)
        if len(child.exits) > MAX_RESTARTS:
            log.error("Worker process on %s exited %d times in %.0f s; not starting it again.",
                      child.spec.label, len(child.exits), RESTART_WINDOW_S)
            return False
        return True


def exit_with_launcher(launcher_pid: int, interval_s: float = 1.0,
                       grace_s: float = STOP_TIMEOUT_S) -> threading.Thread:
    """Stop this worker process when its launcher is gone, even after a SIGKILL of the launcher.

    A daemon thread compares the parent pid with the launcher's. Once they differ, it sends
    SIGTERM to this process (finish the micro-batch, release the rest of the chunk), and
    exits by force if the process still runs grace_s later.
    """
    def watch() -> None:
        while os.getppid() == launcher_pid:
            time.sleep(interval_s)
        log.warning("The launcher (pid %d) is gone; stopping worker process %d.",
                    launcher_pid, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        log.error("Worker process %d did not stop within %.0f s of losing its launcher; exiting.",
                  os.getpid(), grace_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="launcher-watch", daemon=True)
    thread.start()
    return thread
