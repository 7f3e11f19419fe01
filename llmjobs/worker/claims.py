"""Store operations of a worker: claim a chunk's jobs, start micro-batches, write outcomes.

Every function here runs inside the caller's write transaction. A claim token (worker id
plus a per-chunk suffix) marks the jobs leased to one consumer. An update that does not
match the token changes nothing, so a duplicate delivery is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from llmjobs.models.audit import NewEvent, append_events
from llmjobs.models.base import JobStatus, rowcount, utcnow
from llmjobs.models.lifecycle import (
    cancelled_events,
    cancelled_job_values,
    failed_job_values,
    poison_message,
)
from llmjobs.models.tables import Batch, CategoryScore, Job, Result

# Core tables: an executemany on them skips the ORM's bulk-insert bookkeeping per row,
# which took roughly a quarter of write_outcomes' samples in a py-spy profile.
_jobs = cast(Table, Job.__table__)
_results = cast(Table, Result.__table__)
_scores = cast(Table, CategoryScore.__table__)


@dataclass(frozen=True)
class ClaimedJob:
    job_id: int
    text: str
    params: dict[str, Any]
    # Attempts already made before this claim; above zero means a previous run was lost.
    previous_attempts: int


@dataclass
class Claim:
    batch_id: str
    kind: str
    batch_params: dict[str, Any]
    jobs: list[ClaimedJob]
    already_finished: int
    held_elsewhere: int
    poisoned: list[int]


@dataclass(frozen=True)
class Outcome:
    """The outcome of one job in a micro-batch, ready to be stored."""

    job_id: int
    status: JobStatus
    output: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    decision: str | None = None
    scores: dict[str, float] | None = None


def claim_chunk(
    session: Session,
    batch_id: str,
    job_ids: Sequence[int],
    token: str,
    lease_s: int,
    max_attempts: int,
) -> Claim | None:
    """Lease the chunk's claimable jobs to this token; return None if the batch is gone.

    The chunk's rows are read by primary key only and the decision is made here, then
    written back by primary key. SQLite, having no statistics, would otherwise run a
    query that also filters on batch or status from those indexes, scanning every job
    of the batch for each chunk. The rows cannot change in between: SQLite's write
    transaction is exclusive, and PostgreSQL locks them with FOR UPDATE.
    """
    batch = session.get(Batch, batch_id)
    if batch is None:
        return None
    now = utcnow()
    query = select(
        Job.id, Job.batch_id, Job.status, Job.lease_expires_at, Job.attempts, Job.not_before,
    ).where(Job.id.in_(list(job_ids)))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    rows = [row for row in session.execute(query).all() if row.batch_id == batch_id]

    if batch.cancel_requested_at is not None:
        return _cancel_leftovers(session, batch, token, rows, now)

    # A job whose lease expired after max_attempts model runs keeps killing its worker.
    poisoned = [row.id for row in rows if _lease_expired(row, now) and row.attempts >= max_attempts]
    claimable = [
        row.id for row in rows
        if (JobStatus(row.status) == JobStatus.QUEUED
            or (_lease_expired(row, now) and row.attempts < max_attempts))
        and (row.not_before is None or row.not_before <= now)
    ]
    if poisoned:
        session.execute(
            update(Job)
            .where(Job.id.in_(poisoned))
            .values(failed_job_values("poison", poison_message(max_attempts), now))
        )
        append_events(session, [
            NewEvent(token, "job.failed", batch_id, job_id, {"error_code": "poison"})
            for job_id in poisoned
        ])
    claimed: list[ClaimedJob] = []
    if claimable:
        session.execute(
            update(Job)
            .where(Job.id.in_(claimable))
            .values(status=JobStatus.RUNNING, lease_owner=token,
                    lease_expires_at=now + timedelta(seconds=lease_s), not_before=None)
        )
        claimed = [
            ClaimedJob(row.id, row.input_text, row.params or {}, row.attempts)
            for row in session.execute(
                select(Job.id, Job.input_text, Job.params, Job.attempts)
                .where(Job.id.in_(claimable))
            )
        ]
    finished = sum(1 for row in rows if JobStatus(row.status).terminal) + len(poisoned)
    return Claim(
        batch_id=batch_id,
        kind=batch.kind,
        batch_params=dict(batch.params or {}),
        jobs=claimed,
        already_finished=finished - len(poisoned),
        held_elsewhere=len(rows) - len(claimed) - finished,
        poisoned=poisoned,
    )


def _lease_expired(row: Any, now: datetime) -> bool:
    return bool(JobStatus(row.status) == JobStatus.RUNNING
                and row.lease_expires_at is not None and row.lease_expires_at < now)


def _cancel_leftovers(session: Session, batch: Batch, token: str, rows: Sequence[Any],
                      now: datetime) -> Claim:
    """Cancel the chunk's queued and lease-expired jobs of a batch that `cancel` was run on."""
    leftovers = [row.id for row in rows
                 if JobStatus(row.status) == JobStatus.QUEUED or _lease_expired(row, now)]
    if leftovers:
        session.execute(update(Job).where(Job.id.in_(leftovers)).values(cancelled_job_values(now)))
        append_events(session, cancelled_events(token, [(batch.id, job_id) for job_id in leftovers]))
    finished = sum(1 for row in rows if JobStatus(row.status).terminal) + len(leftovers)
    return Claim(batch_id=batch.id, kind=batch.kind, batch_params=dict(batch.params or {}),
                 jobs=[], already_finished=finished, held_elsewhere=len(rows) - finished,
                 poisoned=[])


def start_micro_batch(
    session: Session, batch_id: str, job_ids: Sequence[int], remaining_ids: Sequence[int],
    token: str, lease_s: int,
) -> list[int]:
    """Count an attempt for the jobs about to run and renew the lease of every held job.

    Returns the ids of the micro-batch that this token still holds (a reaper may have taken
    some). After `cancel` on the batch, every held job is cancelled and none is returned.
    """
    now = utcnow()
    if session.scalar(select(Batch.cancel_requested_at).where(Batch.id == batch_id)) is not None:
        cancelled = session.scalars(
            update(Job)
            .where(Job.id.in_(list(remaining_ids)), Job.lease_owner == token,
                   Job.status == JobStatus.RUNNING)
            .values(cancelled_job_values(now))
            .returning(Job.id)
        ).all()
        append_events(session, cancelled_events(token, [(batch_id, job_id) for job_id in cancelled]))
        return []
    expires = now + timedelta(seconds=lease_s)
    session.execute(
        update(Job)
        .where(Job.id.in_(list(remaining_ids)), Job.lease_owner == token,
               Job.status == JobStatus.RUNNING)
        .values(lease_expires_at=expires)
    )
    return list(session.scalars(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.lease_owner == token,
               Job.status == JobStatus.RUNNING)
        .values(attempts=Job.attempts + 1, started_at=now)
        .returning(Job.id)
    ).all())


def reserve_jobs(session: Session, job_ids: Sequence[int], owner: str, lease_s: int) -> int:
    """Lease queued jobs whose message this worker has received but not started yet.

    A worker that dies loses its prefetched messages to Redis's unacked set until the
    visibility timeout. The reservation lets the reaper bring those jobs back much sooner.
    """
    ids = list(job_ids)
    if session.get_bind().dialect.name == "sqlite":
        # By primary key only, for the reason given in claim_chunk; the exclusive write
        # transaction keeps the status read and the update together.
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all()
        ids = [row.id for row in rows if JobStatus(row.status) == JobStatus.QUEUED]
        if not ids:
            return 0
        return rowcount(session.execute(
            update(Job).where(Job.id.in_(ids))
            .values(lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        ))
    return rowcount(session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
        .values(lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    ))


def renew_leases(session: Session, owners: Sequence[str], lease_s: int) -> int:
    """Push back the expiry of every job these owners hold or have reserved; return how many."""
    return rowcount(session.execute(
        update(Job)
        # Only queued and running jobs carry a lease owner: finishing a job clears it. A
        # status condition here would make SQLite scan the status index instead.
        .where(Job.lease_owner.in_(list(owners)))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    ))


def write_outcomes(
    session: Session,
    batch_id: str,
    outcomes: Sequence[Outcome],
    token: str,
    checkpoint: tuple[str | None, str | None],
    worker_host: str,
    device: str,
) -> list[Outcome]:
    """Store results, statuses and audit events of a micro-batch; return those stored.

    Only jobs that this token still holds are written, so a job taken over by a reaper or
    cancelled meanwhile keeps a single outcome.
    """
    if not outcomes:
        return []
    ids = [outcome.job_id for outcome in outcomes]
    held_query = select(Job.id).where(
        Job.id.in_(ids), Job.lease_owner == token, Job.status == JobStatus.RUNNING
    )
    if session.get_bind().dialect.name == "postgresql":
        held_query = held_query.with_for_update()
    held = set(session.scalars(held_query).all())
    stored = [outcome for outcome in outcomes if outcome.job_id in held]
    if not stored:
        return []

    now = utcnow()
    session.execute(
        update(_jobs)
        .where(_jobs.c.id == bindparam("target_id"))
        .values(
            status=bindparam("new_status"),
            error_code=bindparam("new_error_code"),
            error_message=bindparam("new_error_message"),
            finished_at=now,
            lease_owner=None,
            lease_expires_at=None,
        ),
        [
            {
                "target_id": outcome.job_id,
                "new_status": outcome.status.value,
                "new_error_code": outcome.error_code,
                "new_error_message": outcome.error_message,
            }
            for outcome in stored
        ],
    )

    checkpoint_id, checkpoint_revision = checkpoint
    with_output = [outcome for outcome in stored if outcome.output is not None]
    if with_output:
        session.execute(insert(_results), [
            {
                "job_id": outcome.job_id,
                "batch_id": batch_id,
                "output": outcome.output,
                "decision": outcome.decision,
                "checkpoint_id": checkpoint_id,
                "checkpoint_revision": checkpoint_revision,
                "input_tokens": outcome.input_tokens,
                "output_tokens": outcome.output_tokens,
                "latency_ms": outcome.latency_ms,
                "worker_host": worker_host,
                "device": device,
                "cached": False,
                "created_at": now,
            }
            for outcome in with_output
        ])
    scores = [
        {"job_id": outcome.job_id, "batch_id": batch_id, "category": category, "score": score}
        for outcome in stored if outcome.scores
        for category, score in outcome.scores.items()
    ]
    if scores:
        session.execute(insert(_scores), scores)

    append_events(session, [
        NewEvent(token, f"job.{outcome.status.value}", batch_id, outcome.job_id, _event_details(outcome))
        for outcome in stored
    ])
    return stored


def _event_details(outcome: Outcome) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if outcome.error_code:
        details["error_code"] = outcome.error_code
    if outcome.latency_ms is not None:
        details["latency_ms"] = round(outcome.latency_ms, 2)
    if outcome.decision:
        details["decision"] = outcome.decision
    return details


def release_jobs(session: Session, token: str) -> list[int]:
    """Give back every job this token holds, due for republishing at once (used on shutdown)."""
    now = utcnow()
    return list(session.scalars(
        update(Job)
        .where(Job.lease_owner == token, Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None, not_before=now)
        .returning(Job.id)
    ).all())


def defer_jobs(
    session: Session, token: str, job_ids: Sequence[int], delay_s: float, reason: str
) -> list[int]:
    """Put jobs back in the queue to be republished after delay_s (a transient failure)."""
    now = utcnow()
    return list(session.scalars(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.lease_owner == token,
               Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                not_before=now + timedelta(seconds=delay_s), error_message=reason)
        .returning(Job.id)
    ).all())
