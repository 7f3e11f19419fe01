"""Lease renewal while a chunk runs, so a long micro-batch is not mistaken for a dead worker."""

from __future__ import annotations

import logging
import threading

from llmjobs.models.session import Store
from llmjobs.worker import claims

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the leases of the current claim token every lease_s / 3 seconds."""

    def __init__(self, store: Store, lease_s: int) -> None:
        self.store = store
        self.lease_s = lease_s
        self.token: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmjobs-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            token = self.token
            if token is None:
                continue
            try:
                with self.store.write() as session:
                    claims.renew_leases(session, token, self.lease_s)
            except Exception as error:
                # The next beat tries again; a lease lasts three beats.
                log.warning("Renewing leases of %s failed: %s", token, error)
