"""Query functions. Each takes a session first and never commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from llmjobs.errors import NotFoundError
from llmjobs.models.base import BatchStatus, JobStatus
from llmjobs.models.tables import AuditEvent, Batch, CategoryScore, Job, RejectedRow, Result

# The shortest batch id prefix accepted in place of a full id.
MIN_PREFIX = 4


def get_batch(session: Session, batch_id: str) -> Batch:
    """Return the batch, accepting a unique prefix of its id as `git` does for commits."""
    batch = session.get(Batch, batch_id)
    if batch is not None:
        return batch
    if len(batch_id) < MIN_PREFIX:
        raise NotFoundError(f"batch {batch_id!r} not found; give the full id or a prefix of at "
                            f"least {MIN_PREFIX} characters (list batches with `llmjobs batches`)")
    matches = session.scalars(
        select(Batch).where(Batch.id.startswith(batch_id, autoescape=True)).limit(2)
    ).all()
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise NotFoundError(f"batch prefix {batch_id!r} matches more than one batch; give more "
                            "characters of the id")
    raise NotFoundError(f"batch {batch_id!r} not found; list batches with `llmjobs batches`")


def find_batch_by_idempotency_key(session: Session, key: str) -> Batch | None:
    return session.scalars(select(Batch).where(Batch.idempotency_key == key)).first()


def list_batches(session: Session, limit: int = 50, status: str | None = None) -> Sequence[Batch]:
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id).limit(limit)
    if status is not None:
        query = query.where(Batch.status == BatchStatus(status))
    return session.scalars(query).all()


def job_counts(session: Session, batch_id: str) -> dict[str, int]:
    """Count a batch's jobs per status; every status appears, with 0 where none."""
    rows = session.execute(
        select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    ).all()
    counts = {status.value: 0 for status in JobStatus}
    for status, count in rows:
        counts[JobStatus(status).value] = count
    return counts


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found; find job ids with `llmjobs results BATCH`")
    return job


def get_job_by_item(session: Session, batch_id: str, item_id: str) -> Job:
    job = session.scalars(
        select(Job).where(Job.batch_id == batch_id, Job.item_id == item_id)
    ).first()
    if job is None:
        raise NotFoundError(f"item {item_id!r} not found in batch {batch_id!r}")
    return job


def get_result(session: Session, job_id: int) -> Result | None:
    return session.scalars(select(Result).where(Result.job_id == job_id)).first()


def job_audit_events(session: Session, job: Job) -> Sequence[AuditEvent]:
    """Return the job's own events and its batch's batch-level events, oldest first."""
    query = (
        select(AuditEvent)
        .where(
            (AuditEvent.job_id == job.id)
            | ((AuditEvent.batch_id == job.batch_id) & AuditEvent.job_id.is_(None))
        )
        .order_by(AuditEvent.id)
    )
    return session.scalars(query).all()


def rejected_rows(session: Session, batch_id: str) -> Sequence[RejectedRow]:
    return session.scalars(
        select(RejectedRow).where(RejectedRow.batch_id == batch_id).order_by(RejectedRow.line)
    ).all()


@dataclass(frozen=True)
class ResultFilter:
    status: str | None = None
    decision: str | None = None
    category: str | None = None
    min_score: float | None = None


@dataclass(frozen=True)
class ResultRow:
    job_id: int
    item_id: str
    seq: int
    input_text: str
    status: str
    output: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    attempts: int


def iter_results(
    session: Session,
    batch_id: str,
    filters: ResultFilter = ResultFilter(),
    page_size: int = 1000,
    limit: int | None = None,
) -> Iterator[ResultRow]:
    """Stream a batch's jobs with their results in input order, in constant memory.

    Pages are fetched by keyset on (batch_id, seq), so each page uses the index and the
    cost of a page does not grow with the size of the batch.
    """
    after = -1
    emitted = 0
    while True:
        query = (
            select(
                Job.id, Job.item_id, Job.seq, Job.input_text, Job.status, Result.output,
                Job.error_code, Job.error_message, Job.attempts,
            )
            .outerjoin(Result, Result.job_id == Job.id)
            .where(Job.batch_id == batch_id, Job.seq > after)
            .order_by(Job.seq)
            # With a limit, read no more rows than are still to be returned.
            .limit(page_size if limit is None else min(page_size, limit - emitted))
        )
        if filters.status is not None:
            query = query.where(Job.status == JobStatus(filters.status))
        if filters.decision is not None:
            query = query.where(Result.batch_id == batch_id, Result.decision == filters.decision)
        if filters.category is not None:
            # A correlated EXISTS probes the (job_id, category) key of each job read in seq
            # order, so a page costs the jobs it reads. `Job.id IN (subquery)` made SQLite
            # build the whole batch's list of matching scores for every page.
            # NOTE: a filter that matches few jobs reads many jobs per page this way.
            has_score = select(CategoryScore.job_id).where(
                CategoryScore.job_id == Job.id, CategoryScore.category == filters.category
            )
            if filters.min_score is not None:
                has_score = has_score.where(CategoryScore.score >= filters.min_score)
            query = query.where(has_score.exists())
        rows = session.execute(query).all()
        for row in rows:
            yield ResultRow(
                job_id=row.id, item_id=row.item_id, seq=row.seq, input_text=row.input_text,
                status=JobStatus(row.status).value, output=row.output, error_code=row.error_code,
                error_message=row.error_message, attempts=row.attempts,
            )
            emitted += 1
            if limit is not None and emitted >= limit:
                return
        if len(rows) < page_size:
            return
        after = rows[-1].seq


def batch_categories(session: Session, batch_id: str) -> list[str]:
    """Return the moderation categories that have scores in the batch, sorted by name."""
    return list(session.scalars(
        select(CategoryScore.category)
        .where(CategoryScore.batch_id == batch_id)
        .distinct()
        .order_by(CategoryScore.category)
    ).all())


def category_scores(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """Return each job's moderation scores by category; jobs with none are left out."""
    scores: dict[int, dict[str, float]] = {}
    if not job_ids:
        return scores
    rows = session.execute(
        select(CategoryScore.job_id, CategoryScore.category, CategoryScore.score)
        .where(CategoryScore.job_id.in_(list(job_ids)))
    ).all()
    for job_id, category, score in rows:
        scores.setdefault(job_id, {})[category] = score
    return scores


def decision_counts(session: Session, batch_id: str) -> dict[str, int]:
    """Count a batch's results per moderation decision; empty for other kinds."""
    rows = session.execute(
        select(Result.decision, func.count())
        .where(Result.batch_id == batch_id, Result.decision.is_not(None))
        .group_by(Result.decision)
    ).all()
    return {str(decision): count for decision, count in rows}
