"""Publishing a stored batch: its queued job ids, in input order, as chunk messages."""

from __future__ import annotations

from typing import Any

from llmjobs.broker import publish_chunks
from llmjobs.models.base import Priority
from llmjobs.models.session import Store
from llmjobs.producer.options import ProgressCallback
from llmjobs.producer.storage import PROGRESS_EVERY, queued_job_ids

# Job ids read from the store per query; a whole number of chunks keeps chunks full.
CHUNKS_PER_PAGE = 100


def publish_batch(
    store: Store,
    celery_app: Any,
    kind: str,
    batch_id: str,
    *,
    priority: Priority,
    chunk_size: int,
    progress: ProgressCallback | None = None,
) -> tuple[int, int]:
    """Publish every queued job of the batch; return (chunk messages, job ids) sent.

    Pages are read by keyset on seq, so memory stays constant for any batch size.
    Raises BrokerError when Redis cannot be reached; the jobs stay queued in the store.
    """
    chunks = 0
    jobs = 0
    after_seq = -1
    page_size = chunk_size * CHUNKS_PER_PAGE
    while True:
        with store.read() as session:
            page = queued_job_ids(session, batch_id, after_seq, page_size)
        if not page:
            break
        job_ids = [job_id for _seq, job_id in page]
        chunks += publish_chunks(
            celery_app, kind, batch_id, job_ids, priority=priority, chunk_size=chunk_size
        )
        if progress is not None and (jobs + len(job_ids)) // PROGRESS_EVERY > jobs // PROGRESS_EVERY:
            progress("publish", jobs + len(job_ids))
        jobs += len(job_ids)
        after_seq = page[-1][0]
        if len(page) < page_size:
            break
    return chunks, jobs
