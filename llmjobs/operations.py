"""Operator actions on stored batches: cancel, retry and requeue.

Each action changes the store first and commits, then publishes chunk messages. If
publishing fails, the jobs are already queued in the store, so `requeue` can publish
them later. A duplicate message is harmless because workers skip finished or leased jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from celery import Celery
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from llmjobs.broker import publish_chunks
from llmjobs.config import Settings
from llmjobs.errors import OperationError
from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import BatchStatus, JobStatus, utcnow
from llmjobs.models.lifecycle import cancelled_job_values, finalise_batch
from llmjobs.models.queries import get_batch
from llmjobs.models.session import Store
from llmjobs.models.tables import Batch, CategoryScore, Job, Result

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED, JobStatus.SUCCEEDED)
# Jobs selected and published per page, so neither memory nor one transaction grows with a batch.
REQUEUE_PAGE_SIZE = 10_000
AUDIT_PAGE_SIZE = 1_000


@dataclass(frozen=True)
class CancelReport:
    batch_id: str
    cancelled: int
    running: int
    # The batch's terminal status when cancel finalised it, else None (a worker will).
    final_status: BatchStatus | None
    already_finished: bool = False


@dataclass(frozen=True)
class RetryReport:
    batch_id: str
    retried: int
    messages: int
    statuses: tuple[str, ...]
    job_ids: list[int] = field(repr=False, default_factory=list)


@dataclass(frozen=True)
class RequeueReport:
    # Batch id to the number of queued jobs republished for it.
    republished: dict[str, int]
    messages: int

    @property
    def total(self) -> int:
        return sum(self.republished.values())


def cancel_batch(store: Store, batch_id: str, actor: str) -> CancelReport:
    """Cancel the batch's queued jobs at once, and let running micro-batches finish.

    Finished results are kept. The batch is finalised here when no job is running, else
    by the worker that finishes the last running job.
    """
    with store.write() as session:
        batch = get_batch(session, batch_id)
        batch_id = batch.id
        if BatchStatus(batch.status).terminal:
            return CancelReport(batch_id, 0, 0, None, already_finished=True)

        session.execute(update(Batch).where(Batch.id == batch_id).values(cancel_requested_at=utcnow()))
        # One UPDATE: a worker claims jobs with `status = 'queued'` too, so each job is
        # either claimed or cancelled, never both.
        update_result = session.execute(
            update(Job)
            .where(Job.batch_id == batch_id, Job.status == JobStatus.QUEUED)
            .values(cancelled_job_values(utcnow()))
        )
        cancelled = cast("CursorResult[Any]", update_result).rowcount
        running = _count_jobs(session, batch_id, JobStatus.RUNNING)
        append_events(session, [NewEvent(
            actor, "batch.cancelled", batch_id=batch_id,
            details={"cancelled": cancelled, "running": running},
        )])
    log.info("Batch %s: cancelled %d queued jobs, %d still running.", batch_id, cancelled, running)

    # A second transaction, after the cancel is visible to every worker. On PostgreSQL,
    # locking the running rows waits for a worker that is writing its last outcome, so
    # either that worker finds no queued job and finalises, or this transaction does.
    with store.write() as session:
        still_running = session.scalars(
            select(Job.id)
            .where(Job.batch_id == batch_id, Job.status == JobStatus.RUNNING)
            .with_for_update()
        ).all()
        final_status = None if still_running else finalise_batch(session, batch_id, actor)
    return CancelReport(batch_id, cancelled, len(still_running), final_status)


def retry_jobs(
    store: Store,
    app: Celery,
    settings: Settings,
    batch_id: str,
    actor: str,
    statuses: Sequence[str] = (JobStatus.FAILED.value,),
) -> RetryReport:
    """Give the batch's jobs in `statuses` a new attempt, and publish their ids.

    The jobs go back to queued with their error, lease and result cleared, but keep their
    attempts count. The batch reopens if it had finished. Succeeded jobs are retried only
    when `statuses` names "succeeded".
    """
    selected = _retry_statuses(statuses)
    with store.write() as session:
        batch = get_batch(session, batch_id)
        batch_id, kind, priority = batch.id, batch.kind, batch.priority
        if not BatchStatus(batch.status).terminal and JobStatus.SUCCEEDED in selected:
            raise OperationError(
                f"batch {batch_id} is still {batch.status.value}; retry succeeded jobs after it "
                "finishes, or cancel it first"
            )
        chosen = Job.batch_id == batch_id, Job.status.in_(selected)
        previous = session.execute(
            select(Job.id, Job.status, Job.error_code).where(*chosen).order_by(Job.seq)
            .with_for_update()
        ).all()
        job_ids = [row.id for row in previous]
        if not job_ids:
            return RetryReport(batch_id, 0, 0, tuple(status.value for status in selected))

        # Events first, while the results they record still exist; then the results, while
        # the jobs still have their old status to select them by.
        _append_in_pages(session, _retried_events(session, actor, batch_id, previous))
        chosen_ids = select(Job.id).where(*chosen).scalar_subquery()
        session.execute(delete(CategoryScore).where(CategoryScore.job_id.in_(chosen_ids)))
        session.execute(delete(Result).where(Result.job_id.in_(chosen_ids)))
        session.execute(
            update(Job).where(*chosen).values(
                status=JobStatus.QUEUED, error_code=None, error_message=None, lease_owner=None,
                lease_expires_at=None, not_before=None, started_at=None, finished_at=None,
            )
        )
        _reopen_batch(session, batch)
        status_names = tuple(status.value for status in selected)
        append_events(session, [NewEvent(
            actor, "batch.retried", batch_id=batch_id,
            details={"jobs": len(job_ids), "statuses": list(status_names)},
        )])

    messages = publish_chunks(
        app, kind, batch_id, job_ids, priority=priority, chunk_size=settings.chunk_size
    )
    log.info("Batch %s: retried %d jobs (%s) in %d messages.", batch_id, len(job_ids),
             ", ".join(status_names), messages)
    return RetryReport(batch_id, len(job_ids), messages, status_names, job_ids)


def requeue_jobs(
    store: Store,
    app: Celery,
    settings: Settings,
    actor: str,
    batch_id: str | None = None,
    older_than_s: float = 0.0,
) -> RequeueReport:
    """Publish again the ids of queued jobs whose messages may be lost.

    Selects the queued jobs of one batch, or of every queued or running batch, that were
    created or last finished more than `older_than_s` seconds ago. Jobs waiting for a
    delayed retry (`not_before` in the future) are left to the reaper, and jobs that a
    live worker has reserved (a queued job with an unexpired lease) to that worker.
    """
    if older_than_s < 0:
        raise OperationError(f"--older-than must be 0 or more seconds, got {older_than_s!r}")
    with store.read() as session:
        if batch_id is not None:
            batches = [get_batch(session, batch_id)]
        else:
            batches = list(session.scalars(
                select(Batch)
                .where(Batch.status.in_((BatchStatus.QUEUED, BatchStatus.RUNNING)))
                .order_by(Batch.created_at)
            ).all())

    republished: dict[str, int] = {}
    messages = 0
    for batch in batches:
        count = 0
        for page in _queued_job_pages(store, batch.id, older_than_s):
            messages += publish_chunks(
                app, batch.kind, batch.id, page, priority=batch.priority,
                chunk_size=settings.chunk_size,
            )
            count += len(page)
        if count:
            republished[batch.id] = count
            with store.write() as session:
                append_events(session, [NewEvent(
                    actor, "batch.requeued", batch_id=batch.id,
                    details={"jobs": count, "older_than_s": older_than_s},
                )])
            log.info("Batch %s: republished %d queued jobs.", batch.id, count)
    return RequeueReport(republished, messages)


def _queued_job_pages(store: Store, batch_id: str, older_than_s: float) -> Iterable[list[int]]:
    """Yield the ids of the batch's requeueable jobs in pages, by keyset on the job id."""
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    # Jobs have no update time, so the latest of created, started and finished stands in.
    last_change = func.coalesce(Job.finished_at, Job.started_at, Job.created_at)
    after = 0
    while True:
        with store.read() as session:
            page = list(session.scalars(
                select(Job.id)
                .where(
                    Job.batch_id == batch_id,
                    Job.status == JobStatus.QUEUED,
                    Job.id > after,
                    last_change <= cutoff,
                    (Job.not_before.is_(None)) | (Job.not_before <= now),
                    (Job.lease_expires_at.is_(None)) | (Job.lease_expires_at <= now),
                )
                .order_by(Job.id)
                .limit(REQUEUE_PAGE_SIZE)
            ).all())
        if not page:
            return
        yield page
        after = page[-1]


def _retry_statuses(statuses: Sequence[str]) -> list[JobStatus]:
    allowed = ", ".join(status.value for status in RETRYABLE_STATUSES)
    selected: list[JobStatus] = []
    for name in statuses or (JobStatus.FAILED.value,):
        try:
            status = JobStatus(name)
        except ValueError:
            raise OperationError(
                f"unknown job status {name!r} for retry; expected one of {allowed}"
            ) from None
        if status not in RETRYABLE_STATUSES:
            raise OperationError(
                f"jobs with status {name!r} cannot be retried; expected one of {allowed}"
            )
        if status not in selected:
            selected.append(status)
    return selected


def _reopen_batch(session: Session, batch: Batch) -> None:
    """Move a finished batch back to running (queued if it never started)."""
    if not BatchStatus(batch.status).terminal:
        return
    status = BatchStatus.RUNNING if batch.started_at is not None else BatchStatus.QUEUED
    session.execute(
        update(Batch)
        .where(Batch.id == batch.id)
        .values(status=status, finished_at=None, counts=None, decisions=None, cancel_requested_at=None)
    )


def _count_jobs(session: Session, batch_id: str, status: JobStatus) -> int:
    return session.scalar(
        select(func.count()).select_from(Job).where(Job.batch_id == batch_id, Job.status == status)
    ) or 0


def _retried_events(session: Session, actor: str, batch_id: str,
                    previous: Sequence[Any]) -> Iterator[NewEvent]:
    """Yield one job.retried event per job, with the result it had, if any, so none is lost."""
    for start in range(0, len(previous), AUDIT_PAGE_SIZE):
        page = previous[start:start + AUDIT_PAGE_SIZE]
        results = {row.job_id: row for row in session.execute(
            select(Result.job_id, Result.output, Result.decision, Result.checkpoint_id,
                   Result.checkpoint_revision, Result.created_at)
            .where(Result.job_id.in_([row.id for row in page]))
        )}
        for row in page:
            details: dict[str, Any] = {"previous_status": JobStatus(row.status).value,
                                       "previous_error_code": row.error_code}
            result = results.get(row.id)
            if result is not None:
                details["previous_result"] = {
                    "output": result.output, "decision": result.decision,
                    "checkpoint_id": result.checkpoint_id,
                    "checkpoint_revision": result.checkpoint_revision,
                    "created_at": result.created_at.isoformat() if result.created_at else None,
                }
            yield NewEvent(actor, "job.retried", batch_id=batch_id, job_id=row.id, details=details)


def _append_in_pages(session: Session, events: Iterable[NewEvent]) -> None:
    page: list[NewEvent] = []
    for event in events:
        page.append(event)
        if len(page) >= AUDIT_PAGE_SIZE:
            append_events(session, page)
            page = []
    append_events(session, page)
