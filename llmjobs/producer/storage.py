"""Writing a submission to the store: the batch row with its audit event, then its jobs.

Jobs and rejected rows are inserted with executemany in transactions of ROWS_PER_TRANSACTION
rows, in input order. Because transactions commit in order, what a crashed submission
leaves behind is always a prefix of its rows, and `resume_line` finds where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import BatchStatus, JobStatus, utcnow
from llmjobs.models.session import Store
from llmjobs.models.tables import AuditEvent, Batch, Job, RejectedRow
from llmjobs.producer.options import ProgressCallback
from llmjobs.producer.records import Rejection
from llmjobs.producer.validation import JobRow

log = logging.getLogger(__name__)

# Small enough to keep SQLite's write lock briefly and the row dicts in memory small,
# large enough that the per-transaction cost is negligible.
ROWS_PER_TRANSACTION = 5000
PROGRESS_EVERY = 50_000

SUBMITTED = "batch.submitted"
PUBLISHED = "batch.published"
ABORTED = "batch.submit_aborted"


def create_batch(session: Session, batch: Batch, event_details: dict[str, Any]) -> None:
    """Add the batch row and its "batch.submitted" audit event in the caller's transaction."""
    session.add(batch)
    session.flush()
    append_events(
        session,
        [NewEvent(batch.submitted_by or "unknown", SUBMITTED, batch_id=batch.id,
                  details=event_details)],
    )


def store_entries(
    store: Store,
    batch_id: str,
    priority: int,
    entries: Iterable[JobRow | Rejection],
    *,
    after_line: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[int, int]:
    """Insert jobs and rejected rows in transactions of ROWS_PER_TRANSACTION; return counts.

    Entries on lines up to `after_line` are skipped: a resumed submission stored them already.
    """
    jobs = 0
    rejected = 0
    for job_rows, rejected_rows in _transactions(entries, after_line):
        created_at = utcnow()
        with store.write() as session:
            if job_rows:
                session.execute(insert(Job), [
                    _job_values(batch_id, priority, row, created_at) for row in job_rows
                ])
            if rejected_rows:
                session.execute(insert(RejectedRow), [
                    {"batch_id": batch_id, "line": row.line, "field": row.field,
                     "reason": row.reason}
                    for row in rejected_rows
                ])
        done_before = jobs + rejected
        jobs += len(job_rows)
        rejected += len(rejected_rows)
        if progress is not None and (jobs + rejected) // PROGRESS_EVERY > done_before // PROGRESS_EVERY:
            progress("store", jobs + rejected)
    return jobs, rejected


def _transactions(
    entries: Iterable[JobRow | Rejection], after_line: int
) -> Iterator[tuple[list[JobRow], list[Rejection]]]:
    job_rows: list[JobRow] = []
    rejected_rows: list[Rejection] = []
    for entry in entries:
        if entry.line <= after_line:
            continue
        if isinstance(entry, JobRow):
            job_rows.append(entry)
        else:
            rejected_rows.append(entry)
        if len(job_rows) + len(rejected_rows) >= ROWS_PER_TRANSACTION:
            yield job_rows, rejected_rows
            job_rows, rejected_rows = [], []
    if job_rows or rejected_rows:
        yield job_rows, rejected_rows


def _job_values(batch_id: str, priority: int, row: JobRow, created_at: datetime) -> dict[str, Any]:
    # Every column is given, so no Python-side default runs per row.
    return {
        "batch_id": batch_id,
        "item_id": row.item_id,
        "seq": row.seq,
        "line": row.line,
        "input_text": row.text,
        "input_sha256": row.text_sha256,
        "params": row.params,
        "priority": priority,
        "status": JobStatus.QUEUED,
        "attempts": 0,
        "created_at": created_at,
    }


def stored_counts(session: Session, batch_id: str) -> tuple[int, int]:
    """Return (job rows, rejected rows) stored so far for the batch."""
    jobs = session.scalar(select(func.count()).select_from(Job).where(Job.batch_id == batch_id))
    rejected = session.scalar(
        select(func.count()).select_from(RejectedRow).where(RejectedRow.batch_id == batch_id)
    )
    return int(jobs or 0), int(rejected or 0)


def resume_line(session: Session, batch_id: str) -> int:
    """Return the last input line stored for the batch, jobs and rejected rows together."""
    last_job = session.scalar(select(func.max(Job.line)).where(Job.batch_id == batch_id))
    last_rejected = session.scalar(
        select(func.max(RejectedRow.line)).where(RejectedRow.batch_id == batch_id)
    )
    return max(last_job or 0, last_rejected or 0)


def was_published(session: Session, batch_id: str) -> bool:
    """True when a "batch.published" event records that every chunk reached Redis."""
    found = session.scalar(
        select(AuditEvent.id)
        .where(AuditEvent.batch_id == batch_id, AuditEvent.action == PUBLISHED)
        .limit(1)
    )
    return found is not None


def record_published(store: Store, batch_id: str, actor: str, chunks: int, jobs: int) -> None:
    with store.write() as session:
        append_events(session, [NewEvent(actor, PUBLISHED, batch_id=batch_id,
                                         details={"chunks": chunks, "jobs": jobs})])


def abort_batch(store: Store, batch_id: str, actor: str, reason: str) -> None:
    """Delete a batch whose jobs could not all be stored, with its rows, and record why.

    Nothing of the batch was published yet, so no worker can hold one of its jobs.
    """
    with store.write() as session:
        session.execute(delete(Job).where(Job.batch_id == batch_id))
        session.execute(delete(RejectedRow).where(RejectedRow.batch_id == batch_id))
        session.execute(delete(Batch).where(Batch.id == batch_id))
        append_events(session, [NewEvent(actor, ABORTED, batch_id=batch_id,
                                         details={"reason": reason})])
    log.warning("Submission of batch %s was aborted and its rows deleted: %s", batch_id, reason)


def queued_job_ids(session: Session, batch_id: str, after_seq: int, limit: int) -> list[tuple[int, int]]:
    """Return up to `limit` (seq, job id) pairs of queued jobs after `after_seq`, by seq."""
    rows = session.execute(
        select(Job.seq, Job.id)
        .where(Job.batch_id == batch_id, Job.status == JobStatus.QUEUED, Job.seq > after_seq)
        .order_by(Job.seq)
        .limit(limit)
    ).all()
    return [(int(seq), int(job_id)) for seq, job_id in rows]


def is_open(batch: Batch) -> bool:
    return batch.status in (BatchStatus.QUEUED, BatchStatus.RUNNING)
