"""The tables of the store: batches, jobs, results, scores, audit events, pipeline runs."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from llmjobs.models.base import (
    Base,
    BatchStatus,
    BigId,
    JobStatus,
    Priority,
    UTCDateTime,
    utcnow,
)


def _str_enum(enum_class: type[enum.Enum]) -> Enum:
    # Stored as plain strings (no native ENUM type) so new values need no type migration.
    return Enum(
        enum_class,
        native_enum=False,
        length=32,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Batch(Base):
    """One submission: a file (or a pipeline step) of items of one kind."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checkpoint: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[BatchStatus] = mapped_column(_str_enum(BatchStatus), default=BatchStatus.QUEUED)
    priority: Mapped[Priority] = mapped_column(_str_enum(Priority), default=Priority.NORMAL)
    total: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    # Final counts per job status, written once when the batch reaches a terminal status.
    counts: Mapped[dict[str, int] | None] = mapped_column(JSON)
    # Final result counts per moderation decision, written with `counts` (moderate batches only).
    decisions: Mapped[dict[str, int] | None] = mapped_column(JSON)
    # Set by `cancel`: jobs released or left by a dead worker afterwards are cancelled, not run.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_name: Mapped[str | None] = mapped_column(String(1000))
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    submitted_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pipeline_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL"), index=True
    )

    __table_args__ = (Index("ix_batches_status_created", "status", "created_at"),)


class Job(Base):
    """One item of a batch, stored as a row; the unit of status, lease and retry."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    # The user's own id of the item, unique within its batch only.
    item_id: Mapped[str] = mapped_column(String(200))
    # Position in the input file, so results come back in input order.
    seq: Mapped[int] = mapped_column(Integer)
    line: Mapped[int | None] = mapped_column(Integer)
    input_text: Mapped[str] = mapped_column(Text)
    input_sha256: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=3)
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A delayed retry is published by the reaper once this time has passed.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("batch_id", "item_id"),
        Index("ix_jobs_batch_seq", "batch_id", "seq"),
        Index("ix_jobs_batch_status_seq", "batch_id", "status", "seq"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # Few rows have a not_before, so the reaper's search for due retries stays small.
        Index("ix_jobs_not_before", "not_before"),
        Index("ix_jobs_lease_owner", "lease_owner"),
    )


class Result(Base):
    """The single output of a job; the unique job_id is what makes results exactly-once."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Moderation only: the decision, kept in a column so filters use an index.
    decision: Mapped[str | None] = mapped_column(String(16))
    checkpoint_id: Mapped[str | None] = mapped_column(String(500))
    checkpoint_revision: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    worker_host: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(64))
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_results_batch_decision", "batch_id", "decision"),)


class CategoryScore(Base):
    """A moderation score of one job for one taxonomy category, for indexed score filters."""

    __tablename__ = "category_scores"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_category_scores_batch_category_score", "batch_id", "category", "score"),)


class RejectedRow(Base):
    """An input row that failed validation and was left out with --skip-invalid."""

    __tablename__ = "rejected_rows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class AuditEvent(Base):
    """An append-only record; each row stores the hash of the previous one."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(36))
    job_id: Mapped[int | None] = mapped_column(BigId)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_events_batch_id", "batch_id", "id"),
        Index("ix_audit_events_job_id", "job_id", "id"),
        Index("ix_audit_events_created_at", "created_at"),
    )


class PipelineRun(Base):
    """One run of a named pipeline for one scheduled date; the pair is unique."""

    __tablename__ = "pipeline_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    scheduled_for: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    # Per step: kind, batch id, status, counts; and the export paths.
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The process running the run ("host:pid:token") and when it last showed it was alive.
    owner: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("pipeline", "scheduled_for"),)
