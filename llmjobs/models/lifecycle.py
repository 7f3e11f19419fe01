"""Batch status transitions, decided by counting job rows in the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import BatchStatus, JobStatus, rowcount, utcnow
from llmjobs.models.queries import decision_counts, job_counts
from llmjobs.models.tables import Batch, Job

log = logging.getLogger(__name__)

OPEN_BATCH_STATUSES = (BatchStatus.QUEUED, BatchStatus.RUNNING)


def failed_job_values(error_code: str, message: str, now: datetime) -> dict[str, Any]:
    """Return the column values of a job that fails outside a model run (poison, watchdog)."""
    return {"status": JobStatus.FAILED, "error_code": error_code, "error_message": message,
            "finished_at": now, "lease_owner": None, "lease_expires_at": None}


def cancelled_job_values(now: datetime) -> dict[str, Any]:
    """Return the column values of a job that `cancel` stops before it runs."""
    return {"status": JobStatus.CANCELLED, "finished_at": now, "not_before": None,
            "lease_owner": None, "lease_expires_at": None}


def cancelled_events(actor: str, jobs: Iterable[tuple[str, int]]) -> list[NewEvent]:
    """Return one job.cancelled event per (batch id, job id) that a cancel stopped late."""
    return [NewEvent(actor, "job.cancelled", batch_id, job_id, {"reason": "batch cancelled"})
            for batch_id, job_id in jobs]


def poison_message(max_attempts: int) -> str:
    return f"the worker was lost {max_attempts} times while running this job"


def mark_batch_running(session: Session, batch_id: str) -> None:
    """Move a queued batch to running; a no-op for any other status."""
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.QUEUED)
        .values(status=BatchStatus.RUNNING, started_at=utcnow())
    )


def terminal_status(counts: dict[str, int]) -> BatchStatus:
    """Return the batch status that final job counts imply.

    Only `llmjobs cancel` makes cancelled jobs, so any of them means the user stopped the
    batch, whatever else happened to it.
    """
    done = counts["succeeded"] + counts["skipped"]
    if counts["cancelled"]:
        return BatchStatus.CANCELLED
    if counts["failed"] == 0:
        return BatchStatus.COMPLETED
    if done == 0:
        return BatchStatus.FAILED
    return BatchStatus.COMPLETED_WITH_ERRORS


def finalise_batch(session: Session, batch_id: str, actor: str) -> BatchStatus | None:
    """Give the batch its terminal status if no job is queued or running; return it, else None.

    The conditional UPDATE (status still open) makes the transition happen exactly once
    even when several workers finish the batch's last jobs at the same time.
    """
    open_job = session.scalar(
        select(Job.id)
        .where(Job.batch_id == batch_id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .limit(1)
    )
    if open_job is not None:
        return None
    counts = job_counts(session, batch_id)
    status = terminal_status(counts)
    # Stored so that `status` on a finished batch reads one row instead of every result.
    kind = session.scalar(select(Batch.kind).where(Batch.id == batch_id))
    decisions = decision_counts(session, batch_id) if kind == "moderate" else None
    changed = rowcount(session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_(OPEN_BATCH_STATUSES))
        .values(status=status, counts=counts, decisions=decisions, finished_at=utcnow())
    ))
    if not changed:
        return None
    append_events(
        session,
        [NewEvent(actor, "batch.finished", batch_id=batch_id,
                  details={"status": status.value, "counts": counts})],
    )
    log.info("Batch %s finished as %s: %s.", batch_id, status.value, counts)
    return status
