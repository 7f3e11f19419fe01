"""Lease renewal while a chunk runs, so a long micro-batch is not mistaken for a dead worker."""

from __future__ import annotations

import logging
import threading

from llmjobs.models.session import Store
from llmjobs.worker import claims

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews, every lease_s / 3 seconds, the leases of the current claim token and the
    reservations this worker holds for messages it has received but not started."""

    def __init__(self, store: Store, lease_s: int, worker_id: str) -> None:
        self.store = store
        self.lease_s = lease_s
        self.worker_id = worker_id
        self.token: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmjobs-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            owners = [self.worker_id] + ([self.token] if self.token else [])
            try:
                with self.store.write() as session:
                    claims.renew_leases(session, owners, self.lease_s)
            except Exception as error:
                # The next beat tries again; a lease lasts three beats.
                log.warning("Renewing leases of %s failed: %s", self.worker_id, error)
