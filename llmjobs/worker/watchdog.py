"""A watchdog thread that ends a worker whose micro-batch hangs past its time limit.

Generation stops itself at the deadline through a stopping criterion, but a hung kernel,
a deadlock or a stuck data loader never reaches the next step. Python cannot stop a
running thread, so the watchdog fails the hung jobs with `timeout` in the store and exits
the process; the worker launcher starts a fresh one, and the chunk's other jobs come back
through the lease reaper.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import update

from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import JobStatus, utcnow
from llmjobs.models.lifecycle import failed_job_values, finalise_batch
from llmjobs.models.session import Store
from llmjobs.models.tables import Job

log = logging.getLogger(__name__)

# Exit status that tells the launcher the watchdog ended the process on purpose.
EXIT_WATCHDOG = 75


class Watchdog:
    """Guards one micro-batch at a time; fires timeout_s + grace_s after the guard opens."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        timeout_s: float,
        grace_s: float = 30.0,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.exit_process = exit_process
        self._lock = threading.Lock()
        self._current: tuple[float, str, list[int]] | None = None
        self._thread = threading.Thread(target=self._watch, name="llmjobs-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @contextmanager
    def guard(self, batch_id: str, job_ids: Sequence[int]) -> Iterator[None]:
        with self._lock:
            self._current = (time.monotonic() + self.timeout_s + self.grace_s, batch_id,
                             list(job_ids))
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout_s / 4))
            with self._lock:
                current = self._current
            if current is None or time.monotonic() < current[0]:
                continue
            self.fire(current[1], current[2])
            return

    def fire(self, batch_id: str, job_ids: list[int]) -> None:
        """Fail the guarded jobs with `timeout`, then end the process."""
        log.error(
            "Batch %s: a micro-batch of %d jobs ran past %.0f s (generation timeout plus "
            "%.0f s grace); failing them with timeout and restarting the worker process.",
            batch_id, len(job_ids), self.timeout_s + self.grace_s, self.grace_s,
        )
        try:
            with self.store.write() as session:
                failed = session.scalars(
                    update(Job)
                    .where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING,
                           Job.lease_owner.startswith(f"{self.worker_id}/", autoescape=True))
                    .values(failed_job_values(
                        "timeout", f"the micro-batch ran past {self.timeout_s:.0f} s and the "
                        "watchdog stopped the worker", utcnow()))
                    .returning(Job.id)
                ).all()
                append_events(session, [
                    NewEvent(self.worker_id, "job.failed", batch_id, job_id,
                             {"error_code": "timeout", "by": "watchdog"})
                    for job_id in failed
                ])
                finalise_batch(session, batch_id, self.worker_id)
        except Exception:
            log.exception("Batch %s: the watchdog could not record the timeout.", batch_id)
        logging.shutdown()
        self.exit_process(EXIT_WATCHDOG)
