"""Writing a submission to the store: the batch row with its audit event, then its jobs.

Jobs and rejected rows are inserted with executemany in transactions of ROWS_PER_TRANSACTION
rows, in input order. Because transactions commit in order, what a crashed submission
leaves behind is always a prefix of its rows, and `resume_line` finds where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Dialect, Table, delete, func, insert, select
from sqlalchemy.orm import Session

from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import BatchStatus, JobStatus, utcnow
from llmjobs.models.session import Store
from llmjobs.models.tables import AuditEvent, Batch, Job, RejectedRow
from llmjobs.producer.options import ProgressCallback
from llmjobs.producer.spool import JobTuple, RejectionTuple

log = logging.getLogger(__name__)

# Small enough to hold SQLite's write lock briefly and keep one block of rows in memory
# small, large enough that the cost per transaction is negligible.
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


def store_blocks(
    store: Store,
    batch_id: str,
    priority: int,
    blocks: Iterable[tuple[list[JobTuple], list[RejectionTuple]]],
    *,
    after_line: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[int, int]:
    """Insert each block of jobs and rejected rows in one transaction; return the counts.

    Rows on lines up to `after_line` are skipped: a resumed submission stored them already.
    """
    inserter = JobInserter(store.engine.dialect)
    jobs = 0
    rejected = 0
    for job_rows, rejected_rows in blocks:
        if after_line:
            job_rows = [row for row in job_rows if row[2] > after_line]
            rejected_rows = [row for row in rejected_rows if row[0] > after_line]
        with store.write() as session:
            if job_rows:
                inserter.insert(session, batch_id, priority, job_rows)
            if rejected_rows:
                session.execute(insert(RejectedRow), [
                    {"batch_id": batch_id, "line": line, "field": field, "reason": reason}
                    for line, field, reason in rejected_rows
                ])
        done_before = jobs + rejected
        jobs += len(job_rows)
        rejected += len(rejected_rows)
        if progress is not None and (jobs + rejected) // PROGRESS_EVERY > done_before // PROGRESS_EVERY:
            progress("store", jobs + rejected)
    return jobs, rejected


class JobInserter:
    """Inserts job rows with one DB-API executemany per block.

    SQLAlchemy's executemany runs the bind processors of every column for every row.
    Here the columns that are the same for a whole block (batch id, status, priority,
    creation time) are processed once, and only `params` is processed per row. In a
    20,000-row test on SQLite (2 cores) this inserted about twice as fast as an ORM
    bulk insert.
    """

    _COLUMNS = ("batch_id", "item_id", "seq", "line", "input_text", "input_sha256", "params",
                "priority", "status", "attempts", "created_at")
    _PLAIN = ("batch_id", "item_id", "seq", "line", "input_text", "input_sha256")

    def __init__(self, dialect: Dialect) -> None:
        table = cast(Table, Job.__table__)
        compiled = insert(table).compile(dialect=dialect, column_keys=list(self._COLUMNS))
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order: list[str] = list(compiled.positiontup or []) if self.positional else []
        self.in_column_order = self.order == list(self._COLUMNS)
        self.processors = {
            name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._COLUMNS
        }
        # The values of these columns are passed to the driver as they are.
        for name in self._PLAIN:
            if self.processors[name] is not None:
                raise TypeError(f"column jobs.{name} needs a bind processor on {dialect.name}")

    def insert(self, session: Session, batch_id: str, priority: int, rows: list[JobTuple]) -> None:
        status = self._process("status", JobStatus.QUEUED)
        created_at = self._process("created_at", utcnow())
        process_params = self.processors["params"] or (lambda value: value)
        # None stays SQL NULL rather than the JSON text 'null'.
        values: list[Any] = [
            (batch_id, item_id, seq, line, text, digest,
             None if params is None else process_params(params),
             priority, status, 0, created_at)
            for item_id, seq, line, text, digest, params in rows
        ]
        if not self.in_column_order:
            # Named parameters (psycopg), or positional ones in another order.
            values = [dict(zip(self._COLUMNS, row, strict=True)) for row in values]
            if self.positional:
                values = [tuple(row[name] for name in self.order) for row in values]
        session.connection().exec_driver_sql(self.sql, values)

    def _process(self, name: str, value: Any) -> Any:
        processor = self.processors[name]
        return processor(value) if processor is not None else value


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
