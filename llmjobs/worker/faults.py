"""Faults injected from the environment, so CPU tests can reproduce GPU and process failures.

Each variable is unset in production. They act at the point where the model would run:
- LLMJOBS_FAULT_OOM_ABOVE_TOKENS=N: a micro-batch holding an item of more than N tokens
  raises OutOfMemory, as CUDA would for a batch that does not fit.
- LLMJOBS_FAULT_CRASH_MARKER=S: a micro-batch holding an item whose text contains S kills
  the worker process with SIGKILL, as a segfault or the kernel's OOM killer would.
- LLMJOBS_FAULT_STALL_MARKER=S: a micro-batch holding such an item sleeps
  LLMJOBS_FAULT_STALL_S seconds (default 3600), as a hung kernel would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmjobs.errors import OutOfMemory


@dataclass(frozen=True)
class Faults:
    oom_above_tokens: int | None = None
    crash_marker: str | None = None
    stall_marker: str | None = None
    stall_s: float = 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Faults:
        env = os.environ if environ is None else environ
        oom = env.get("LLMJOBS_FAULT_OOM_ABOVE_TOKENS")
        return cls(
            oom_above_tokens=int(oom) if oom else None,
            crash_marker=env.get("LLMJOBS_FAULT_CRASH_MARKER") or None,
            stall_marker=env.get("LLMJOBS_FAULT_STALL_MARKER") or None,
            stall_s=float(env.get("LLMJOBS_FAULT_STALL_S", "3600")),
        )

    @property
    def active(self) -> bool:
        return any((self.oom_above_tokens, self.crash_marker, self.stall_marker))

    def before_forward(self, texts: Sequence[str], token_counts: Sequence[int]) -> None:
        """Raise, stall or crash as configured, given the micro-batch about to run."""
        if self.crash_marker and any(self.crash_marker in text for text in texts):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.stall_marker and any(self.stall_marker in text for text in texts):
            time.sleep(self.stall_s)
        if self.oom_above_tokens is not None and max(token_counts, default=0) > self.oom_above_tokens:
            raise OutOfMemory(
                f"injected out-of-memory error: an item of {max(token_counts)} tokens is over "
                f"LLMJOBS_FAULT_OOM_ABOVE_TOKENS={self.oom_above_tokens}"
            )
