"""Small builders shared by tests: batches and jobs written straight into a store."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select

from llmjobs.models import Batch, Job, Store


def make_batch(store: Store, texts: Sequence[str], kind: str = "moderate",
               params: dict[str, Any] | None = None) -> tuple[str, list[int]]:
    """Store a batch with one queued job per text; return its id and the job ids in order."""
    batch_id = uuid.uuid4().hex
    with store.write() as session:
        session.add(Batch(id=batch_id, kind=kind, params=params or {}, total=len(texts)))
        session.flush()
        session.execute(insert(Job), [
            {
                "batch_id": batch_id, "item_id": f"item-{i}", "seq": i, "line": i + 1,
                "input_text": text, "input_sha256": hashlib.sha256(text.encode()).hexdigest(),
            }
            for i, text in enumerate(texts)
        ])
    with store.read() as session:
        ids = list(session.scalars(select(Job.id).where(Job.batch_id == batch_id).order_by(Job.seq)))
    return batch_id, ids
