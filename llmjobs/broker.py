"""The Celery application and chunk publishing, shared by producers and workers.

A message carries one chunk: a batch id and a list of job ids. The store keeps every
other fact about the jobs, so a lost or repeated message can never lose or repeat a result.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from llmjobs.config import KINDS, Settings, kombu_broker_url
from llmjobs.errors import BrokerError
from llmjobs.models.base import Priority

log = logging.getLogger(__name__)

RUN_CHUNK_TASK = "llmjobs.run_chunk"


# One direct exchange for every llmjobs queue; each queue is bound by its own name.
EXCHANGE = Exchange("llmjobs", type="direct")


def queue_name(kind: str) -> str:
    return f"llmjobs.{kind}"


def bound_queue(name: str) -> Queue:
    """Return the queue `name`, bound to the llmjobs exchange with its name as routing key."""
    return Queue(name, EXCHANGE, routing_key=name)


def create_celery_app(settings: Settings, broker_url: str) -> Celery:
    """Build the Celery app: JSON only, late acks, no result backend, one queue per kind."""
    app = Celery("llmjobs", broker=kombu_broker_url(broker_url), set_as_current=False)
    app.conf.update(
        # JSON only: a pickle message would let anyone who can write to Redis run code here.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Ack after the chunk is processed; a worker that dies mid-chunk gets it redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.prefetch_multiplier,
        task_time_limit=settings.task_time_limit_s,
        task_queues=[bound_queue(queue_name(kind)) for kind in KINDS],
        task_default_queue=queue_name("moderate"),
        task_default_priority=Priority.NORMAL.broker_priority,
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Redis has no native priorities: kombu keeps one list per step and reads
            # lower steps first, so high (0) is consumed before normal (3) and low (6).
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
            "health_check_interval": 10,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def chunked(job_ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(job_ids), size):
        yield list(job_ids[start:start + size])


def publish_chunks(
    app: Celery,
    kind: str,
    batch_id: str,
    job_ids: Sequence[int],
    *,
    priority: Priority = Priority.NORMAL,
    chunk_size: int = 64,
) -> int:
    """Publish the job ids as chunk messages on the kind's queue; return the message count."""
    if kind not in KINDS:
        raise BrokerError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for chunk in chunked(job_ids, chunk_size):
                app.send_task(
                    RUN_CHUNK_TASK,
                    args=[batch_id, chunk],
                    queue=queue_name(kind),
                    routing_key=queue_name(kind),
                    priority=priority.broker_priority,
                    producer=producer,
                    serializer="json",
                    # Job ids of a chunk are mostly consecutive, so zlib shrinks the body
                    # from about 840 to 200 base64 characters: about 1.4 kB of Redis memory
                    # per chunk message instead of 2.0 kB. The worker decompresses it.
                    compression="zlib",
                    # A short summary instead of Celery's repr of every job id, which
                    # took about a third of publish_chunks' time under cProfile.
                    argsrepr=f"[{batch_id!r}, <{len(chunk)} job ids>]",
                    kwargsrepr="{}",
                    # Fail fast: the caller decides what an outage means (see submit).
                    retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
                )
                sent += 1
    except Exception as error:  # kombu raises many transport-specific types
        raise BrokerError(
            f"publishing batch {batch_id} to Redis failed after {sent} chunk messages: {error}; "
            f"the jobs are stored, so run `llmjobs requeue {batch_id}` once Redis is back"
        ) from error
    return sent


def decode_chunk_message(raw: bytes | str) -> tuple[str, list[int]]:
    """Return (batch_id, job_ids) of a chunk message as kombu stores it in a Redis list."""
    envelope = json.loads(raw)
    body = base64.b64decode(envelope["body"])
    if envelope.get("headers", {}).get("compression"):
        body = zlib.decompress(body)
    return message_args(json.loads(body))


def message_args(body: Any) -> tuple[str, list[int]]:
    """Return (batch_id, job_ids) from a decoded chunk message body, rejecting anything else."""
    args = body[0] if isinstance(body, list | tuple) and body else body
    if (
        not isinstance(args, list | tuple)
        or len(args) != 2
        or not isinstance(args[0], str)
        or not isinstance(args[1], list)
        or not all(isinstance(job_id, int) and not isinstance(job_id, bool) for job_id in args[1])
    ):
        raise BrokerError(f"invalid chunk message arguments {args!r}; expected [batch_id, [job ids]]")
    return args[0], list(args[1])
