"""The scheduler's stop deadline: a process that does not stop in time exits with code 70."""

from __future__ import annotations

import subprocess
import sys

from llmjobs.pipelines.scheduler import EXIT_STOP_DEADLINE

HUNG = """
import logging, time
from llmjobs.pipelines.scheduler import _start_exit_deadline
logging.basicConfig()
_start_exit_deadline(0.2)
time.sleep(30)
"""


def test_deadline_dumps_stacks_and_exits() -> None:
    finished = subprocess.run([sys.executable, "-c", HUNG], capture_output=True, text=True, timeout=60)

    assert finished.returncode == EXIT_STOP_DEADLINE
    assert "did not stop within 0 s" in finished.stderr
    assert "in <module>" in finished.stderr  # the main thread, stuck in time.sleep
