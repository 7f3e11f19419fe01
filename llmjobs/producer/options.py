"""The options of a submission and the outcome it returns; free of click so any caller can use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Called with a phase name ("validate", "store", "publish") and the rows done so far.
ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True)
class SubmitOptions:
    """How to read, validate, store and publish one submission. Every field has a default."""

    # Reading.
    format: str = "auto"
    encoding: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    delimiter: str | None = None
    header: bool | None = None

    # Parameters of the kind, stored with the batch.
    target_lang: str | None = None
    source_lang: str | None = None
    template: str | None = None
    template_language: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    # moderate: per-category bounds, {"hate": {"review": 0.5, "block": 0.8}}.
    thresholds: dict[str, dict[str, float]] | None = None

    # Queueing and bookkeeping.
    priority: str = "normal"
    chunk_size: int | None = None
    name: str | None = None
    actor: str | None = None
    idempotency_key: str | None = None
    new: bool = False
    skip_invalid: bool = False
    errors_file: Path | None = None
    progress: ProgressCallback | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submission did. `existing` is true when the idempotency key matched a batch."""

    batch_id: str
    jobs: int
    rejected: int
    existing: bool
    # Chunk messages published by this call (0 for an existing, already published batch).
    chunks: int
    # False when Redis could not be reached: the jobs are stored and queued, but unpublished.
    published: bool
    publish_error: str | None = None
    source_name: str | None = None
    source_sha256: str | None = None
    format: str | None = None
    encoding: str | None = None
    idempotency_key: str | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["notes"] = list(self.notes)
        return values
