"""Batches with jobs in every status, results and scores, written straight into a store.

Also reads back the chunk messages that operator commands publish to Redis.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import redis

from llmjobs.broker import decode_chunk_message, queue_name
from llmjobs.config import redis_client_url
from llmjobs.models import (
    Batch,
    BatchStatus,
    CategoryScore,
    Job,
    JobStatus,
    Result,
    Store,
    utcnow,
)


@dataclass
class Item:
    """One job to store: its text, status, and the result or error it ended with."""

    item_id: str
    text: str
    status: JobStatus = JobStatus.QUEUED
    output: dict[str, Any] | None = None
    decision: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    attempts: int = 0


def add_batch(
    store: Store,
    kind: str,
    items: Sequence[Item],
    status: BatchStatus = BatchStatus.RUNNING,
    created_at: datetime | None = None,
) -> tuple[str, dict[str, int]]:
    """Store a batch and its items in input order, and return its id and item id -> job id.

    Items are inserted in reverse input order, so job ids and input order disagree and a
    query that sorts by id instead of input position shows up in tests.
    """
    batch_id = str(uuid.uuid4())
    now = utcnow()
    created = created_at or now
    finished = status not in (BatchStatus.QUEUED, BatchStatus.RUNNING)
    with store.write() as session:
        session.add(Batch(
            id=batch_id, kind=kind, params={}, status=status, total=len(items),
            checkpoint=f"tiny-{kind}", created_at=created,
            started_at=None if status == BatchStatus.QUEUED else created,
            finished_at=created + timedelta(seconds=10) if finished else None,
        ))
        session.flush()
        jobs = {}
        for seq, item in reversed(list(enumerate(items))):
            terminal = item.status not in (JobStatus.QUEUED, JobStatus.RUNNING)
            job = Job(
                batch_id=batch_id, item_id=item.item_id, seq=seq, line=seq + 1,
                input_text=item.text,
                input_sha256=hashlib.sha256(item.text.encode()).hexdigest(),
                status=item.status, attempts=item.attempts, created_at=created,
                error_code=item.error[0] if item.error else None,
                error_message=item.error[1] if item.error else None,
                lease_owner="worker-1" if item.status == JobStatus.RUNNING else None,
                lease_expires_at=now + timedelta(minutes=5)
                if item.status == JobStatus.RUNNING else None,
                finished_at=now if terminal else None,
            )
            session.add(job)
            session.flush()
            jobs[item.item_id] = job.id
            if item.output is not None:
                session.add(Result(
                    job_id=job.id, batch_id=batch_id, output=item.output,
                    decision=item.decision, checkpoint_id=f"tiny-{kind}",
                    checkpoint_revision="r1", input_tokens=3, output_tokens=5,
                    latency_ms=12.5, worker_host="gpu-host", device="cuda:0",
                ))
            for category, score in item.scores.items():
                session.add(CategoryScore(
                    job_id=job.id, category=category, batch_id=batch_id, score=score,
                ))
    return batch_id, jobs


def queued_chunks(redis_url: str, kind: str) -> list[tuple[str, list[int]]]:
    """Return (batch id, job ids) of every chunk message waiting on the kind's queue."""
    client = redis.Redis.from_url(redis_client_url(redis_url))
    chunks = []
    try:
        # kombu keeps one list per priority step: the queue name, then name:step.
        keys = cast("list[str]", client.keys(f"{queue_name(kind)}*"))
        for key in sorted(keys):
            if client.type(key) not in (b"list", "list"):
                continue
            for raw in cast("list[bytes]", client.lrange(key, 0, -1)):
                chunks.append(decode_chunk_message(raw))
    finally:
        client.close()
    return chunks


def queued_job_ids(redis_url: str, kind: str) -> list[int]:
    """Return every job id in the kind's waiting chunk messages, sorted."""
    return sorted(job_id for _, ids in queued_chunks(redis_url, kind) for job_id in ids)
