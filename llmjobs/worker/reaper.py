"""The lease reaper: brings back jobs of dead workers and publishes delayed retries when due.

Every worker runs one in a thread. All its updates are conditional, so several reapers on
several hosts never requeue or publish the same job twice in one pass. A message that is
still published twice is harmless because consumers skip jobs they cannot claim.

Bound: a job whose worker died is queued again at most lease_s + reaper_interval_s after
its last lease renewal (renewals happen at the start of each micro-batch and every
lease_s / 3 seconds during one), far below Redis's visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from llmjobs.config import Settings
from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import BatchStatus, JobStatus, Priority, utcnow
from llmjobs.models.lifecycle import (
    OPEN_BATCH_STATUSES,
    cancelled_events,
    cancelled_job_values,
    failed_job_values,
    finalise_batch,
    poison_message,
)
from llmjobs.models.session import Store
from llmjobs.models.tables import Batch, Job

log = logging.getLogger(__name__)

# Publishes (kind, batch_id, job_ids, priority); raises on a broker failure.
Publisher = Callable[[str, str, Sequence[int], Priority], None]

MAX_PUBLISH_PER_PASS = 20_000
PUBLISH_RETRY_S = 5


@dataclass
class ReapReport:
    requeued: int = 0
    cancelled: int = 0
    poisoned: int = 0
    published: int = 0
    finalised: int = 0


class Reaper:
    def __init__(self, store: Store, settings: Settings, publish: Publisher, actor: str) -> None:
        self.store = store
        self.settings = settings
        self.publish = publish
        self.actor = actor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llmjobs-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reap_once()
            except Exception:
                log.exception("Reaper pass failed; trying again in %d s.",
                              self.settings.reaper_interval_s)
            self._stop.wait(self.settings.reaper_interval_s)

    def reap_once(self) -> ReapReport:
        report = ReapReport()
        touched: set[str] = set()
        with self.store.write() as session:
            now = utcnow()
            expired = (Job.status == JobStatus.RUNNING) & (Job.lease_expires_at < now)
            # Jobs of a cancelled batch that went back to the queue or lost their worker
            # after the cancel: cancelled, never run again.
            cancelling = select(Batch.id).where(Batch.cancel_requested_at.is_not(None),
                                                Batch.status.in_(OPEN_BATCH_STATUSES))
            cancelled = session.execute(
                update(Job)
                .where(Job.batch_id.in_(cancelling.scalar_subquery()),
                       expired | (Job.status == JobStatus.QUEUED))
                .values(cancelled_job_values(now))
                .returning(Job.id, Job.batch_id)
            ).all()
            poisoned = session.execute(
                update(Job)
                .where(expired, Job.attempts >= self.settings.max_attempts)
                .values(failed_job_values("poison", poison_message(self.settings.max_attempts), now))
                .returning(Job.id, Job.batch_id)
            ).all()
            requeued = session.execute(
                update(Job)
                .where(expired)
                .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                        not_before=now)
                .returning(Job.id, Job.batch_id)
            ).all()
            # Reservations of messages that a dead worker had received but not started.
            session.execute(
                update(Job)
                .where(Job.status == JobStatus.QUEUED, Job.lease_expires_at < now)
                .values(lease_owner=None, lease_expires_at=None, not_before=now)
            )
            append_events(session, cancelled_events(
                self.actor, [(row.batch_id, row.id) for row in cancelled]
            ) + [
                NewEvent(self.actor, "job.failed", row.batch_id, row.id, {"error_code": "poison"})
                for row in poisoned
            ] + [
                NewEvent(self.actor, "job.requeued", row.batch_id, row.id,
                         {"reason": "lease expired"})
                for row in requeued
            ])
            report.poisoned, report.requeued = len(poisoned), len(requeued)
            report.cancelled = len(cancelled)
            touched.update(row.batch_id for row in [*poisoned, *cancelled])
        if report.poisoned or report.requeued:
            log.warning("Reaper: %d jobs with expired leases requeued, %d failed as poison.",
                        report.requeued, report.poisoned)
        if report.cancelled:
            log.info("Reaper: %d jobs of cancelled batches cancelled.", report.cancelled)

        report.published = self._publish_due()
        report.finalised = self._finalise(touched)
        return report

    def _publish_due(self) -> int:
        with self.store.write() as session:
            now = utcnow()
            due = select(Job.id).where(
                Job.status == JobStatus.QUEUED, Job.not_before <= now
            ).limit(MAX_PUBLISH_PER_PASS)
            rows = session.execute(
                update(Job)
                .where(Job.id.in_(due.scalar_subquery()), Job.not_before.is_not(None))
                .values(not_before=None)
                .returning(Job.id, Job.batch_id)
            ).all()
            by_batch: dict[str, list[int]] = defaultdict(list)
            for row in rows:
                by_batch[row.batch_id].append(row.id)
            batches = {
                batch.id: batch
                for batch in session.scalars(select(Batch).where(Batch.id.in_(list(by_batch))))
            }

        published = 0
        for batch_id, ids in by_batch.items():
            batch = batches[batch_id]
            try:
                self.publish(batch.kind, batch_id, sorted(ids), batch.priority)
                published += len(ids)
            except Exception as error:
                log.warning("Reaper: publishing %d due jobs of batch %s failed (%s); "
                            "trying again in %d s.", len(ids), batch_id, error, PUBLISH_RETRY_S)
                with self.store.write() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
                        .values(not_before=utcnow() + timedelta(seconds=PUBLISH_RETRY_S))
                    )
        if published:
            log.info("Reaper: published %d due jobs.", published)
        return published

    def _finalise(self, batch_ids: set[str]) -> int:
        with self.store.read() as session:
            open_batches = session.scalars(
                select(Batch.id).where(Batch.status.in_((BatchStatus.QUEUED, BatchStatus.RUNNING)))
                .limit(1000)
            ).all()
        finalised = 0
        for batch_id in set(open_batches) | batch_ids:
            with self.store.write() as session:
                if finalise_batch(session, batch_id, self.actor) is not None:
                    finalised += 1
        return finalised
