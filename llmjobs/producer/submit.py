"""Submitting a batch: validate every row, store the jobs, then publish their chunks.

Nothing may be stored when any row is invalid, yet jobs are inserted in transactions of
a few thousand rows and memory must stay constant. So submitting takes two passes: the
first validates every row and writes the valid ones, with their sha256, to a temporary
spool file, keeping only counts, the first rejections and the hashes of item ids in
memory. The second pass inserts from the spool, one transaction per block. A failure in
the second pass deletes the partial batch. A process killed during it leaves a prefix of
the jobs behind, which the next submission with the same idempotency key completes.

When Redis cannot be reached after the jobs are stored, the jobs stay queued in the
store, and the outcome has `published=False`. `llmjobs requeue BATCH`, or submitting
the same input again, publishes them once Redis is back. Publishing twice is harmless:
a worker skips jobs that are already finished or leased.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy.exc import IntegrityError

from llmjobs.config import Settings
from llmjobs.errors import BrokerError, ProducerError, ValidationFailed
from llmjobs.models.base import BatchStatus
from llmjobs.models.queries import find_batch_by_idempotency_key
from llmjobs.models.session import Store
from llmjobs.models.tables import Batch
from llmjobs.producer.idempotency import check_key, default_key
from llmjobs.producer.options import SubmitOptions, SubmitOutcome
from llmjobs.producer.plan import BatchPlan, plan_batch
from llmjobs.producer.publishing import publish_batch
from llmjobs.producer.records import Record, Rejection
from llmjobs.producer.rules import rules_for
from llmjobs.producer.sources import FileInput, RowsInput, current_user
from llmjobs.producer.spool import Spool
from llmjobs.producer.storage import (
    PROGRESS_EVERY,
    ROWS_PER_TRANSACTION,
    abort_batch,
    create_batch,
    is_open,
    record_published,
    resume_line,
    store_blocks,
    stored_counts,
    was_published,
)
from llmjobs.producer.validation import JobRow, RowValidator, validate

log = logging.getLogger(__name__)

# Rejections kept in memory for the report; --errors-file receives all of them.
REPORTED_REJECTIONS = 50


class _Input(Protocol):
    name: str | None
    sha256: str | None
    format: str
    encoding: str | None
    track_ids: bool

    def records(self) -> Iterable[Record]: ...
    def notes(self) -> list[str]: ...
    def reading_options(self) -> dict[str, Any]: ...
    def check_unchanged(self) -> None: ...
    def close(self) -> None: ...


def submit_file(
    settings: Settings,
    store: Store,
    celery_app: Any,
    path: str | Path,
    kind: str,
    options: SubmitOptions | None = None,
) -> SubmitOutcome:
    """Submit a JSONL, CSV, TSV or OpenAI batch file as one batch of `kind` jobs.

    Raises ValidationFailed when rows are invalid (and --skip-invalid is off), and
    ProducerError for unusable options or an unreadable file; nothing is stored then.
    """
    options = options or SubmitOptions()
    plan = plan_batch(settings, kind, options)
    source = FileInput(Path(path), options, kind, settings)
    return _submit(settings, store, celery_app, source, plan, options)


def submit_rows(
    settings: Settings,
    store: Store,
    celery_app: Any,
    rows: Iterable[Any],
    kind: str,
    options: SubmitOptions | None = None,
    *,
    source_name: str | None = None,
) -> SubmitOutcome:
    """Submit rows given in memory (mappings with JSON Lines fields) as one batch.

    Rows have no file bytes to hash, so a resubmission is recognised only when
    `options.idempotency_key` is set.
    """
    options = options or SubmitOptions()
    reading = ("text_column", "id_column", "delimiter", "header", "encoding")
    file_options = [name for name in reading if getattr(options, name) is not None]
    if file_options or options.format not in ("auto", "jsonl"):
        raise ProducerError(
            "reading options (--format, --encoding, --text-column, --id-column, --delimiter, "
            f"--header) apply to files only, got {', '.join(file_options) or options.format}"
        )
    plan = plan_batch(settings, kind, options)
    source = RowsInput(rows, source_name)
    try:
        return _submit(settings, store, celery_app, source, plan, options)
    finally:
        source.close()


def _submit(
    settings: Settings,
    store: Store,
    celery_app: Any,
    source: _Input,
    plan: BatchPlan,
    options: SubmitOptions,
) -> SubmitOutcome:
    actor = options.actor or current_user()
    key = _idempotency_key(source, plan, options)

    # A batch with this key exists: return it, finishing whatever its submission left undone.
    if key is not None:
        with store.read() as session:
            existing = find_batch_by_idempotency_key(session, key)
        if existing is not None:
            return _complete_existing(
                settings, store, celery_app, source, plan, options, existing, actor
            )

    with Spool(settings.home / "spool", ROWS_PER_TRANSACTION) as spool:
        return _submit_new(settings, store, celery_app, source, plan, options, actor, key, spool)


def _submit_new(
    settings: Settings,
    store: Store,
    celery_app: Any,
    source: _Input,
    plan: BatchPlan,
    options: SubmitOptions,
    actor: str,
    key: str | None,
    spool: Spool,
) -> SubmitOutcome:
    # The whole input is checked before anything is stored.
    valid, rejected = _validate_all(settings, source, plan, options, spool)
    source.check_unchanged()

    # The batch row and its audit event first, in one transaction, so jobs can refer to it.
    batch = Batch(
        id=uuid.uuid4().hex,
        name=options.name,
        kind=plan.kind,
        params=plan.params,
        checkpoint=plan.checkpoint,
        status=BatchStatus.QUEUED,
        priority=plan.priority,
        total=valid,
        rejected=rejected,
        source_name=source.name,
        source_sha256=source.sha256,
        idempotency_key=key,
        submitted_by=actor,
    )
    try:
        with store.write() as session:
            create_batch(session, batch, _event_details(source, plan, batch))
    except IntegrityError:
        # Another submission with the same key committed between our lookup and insert.
        with store.read() as session:
            existing = find_batch_by_idempotency_key(session, key) if key else None
        if existing is None:
            raise
        return _complete_existing(
            settings, store, celery_app, source, plan, options, existing, actor
        )
    log.info("Batch %s created: %d jobs, %d rejected rows, from %s.",
             batch.id, valid, rejected, source.name)

    try:
        _store_jobs(store, spool, plan, options, batch, after_line=0)
    except BaseException as error:
        # Interrupts included: a partial batch must not look like a submitted one.
        _abort_quietly(store, batch.id, actor, error)
        raise
    return _publish(store, celery_app, source, plan, options, batch, actor, existing=False)


def _idempotency_key(source: _Input, plan: BatchPlan, options: SubmitOptions) -> str | None:
    if options.new:
        return None
    if options.idempotency_key is not None:
        return check_key(options.idempotency_key)
    if source.sha256 is None:
        return None
    reading = {**source.reading_options(), "skip_invalid": options.skip_invalid}
    return default_key(source.sha256, plan.kind, plan.params, reading)


def _validate_all(
    settings: Settings, source: _Input, plan: BatchPlan, options: SubmitOptions, spool: Spool
) -> tuple[int, int]:
    """Validate every row into the spool; return (valid, rejected) or raise ValidationFailed."""
    validator = RowValidator(rules_for(plan), track_ids=source.track_ids, compute_sha256=True)
    first: list[Rejection] = []
    valid = 0
    rejected = 0
    with _open_errors_file(options.errors_file) as errors_file:
        for entry in validate(iter(source.records()), validator):
            spool.add(entry)
            if isinstance(entry, JobRow):
                valid += 1
            else:
                rejected += 1
                if len(first) < REPORTED_REJECTIONS:
                    first.append(entry)
                if errors_file is not None:
                    errors_file.write(json.dumps(entry.to_dict(), ensure_ascii=False) + "\n")
            count = valid + rejected
            if count > settings.max_items_per_file:
                raise ProducerError(
                    f"{source.name or 'the input'} has more than {settings.max_items_per_file} "
                    "rows (max_items_per_file); split it or raise the setting"
                )
            if options.progress is not None and count % PROGRESS_EVERY == 0:
                options.progress("validate", count)

    name = source.name or "the input"
    if rejected and not options.skip_invalid:
        raise ValidationFailed(
            f"{name}: {rejected} of {valid + rejected} rows are invalid, so nothing was stored; "
            "fix them, or pass --skip-invalid to store the valid rows",
            first,
            total=rejected,
        )
    if valid == 0:
        if rejected:
            raise ValidationFailed(f"{name}: all {rejected} rows are invalid", first, total=rejected)
        raise ProducerError(f"{name} has no rows to submit")
    return valid, rejected


def _open_errors_file(path: Path | None) -> AbstractContextManager[IO[str] | None]:
    if path is None:
        return nullcontext()
    return Path(path).open("w", encoding="utf-8")


def _store_jobs(
    store: Store,
    spool: Spool,
    plan: BatchPlan,
    options: SubmitOptions,
    batch: Batch,
    *,
    after_line: int,
) -> None:
    """Insert the spooled rows; raise ProducerError if the stored counts differ from the batch."""
    jobs, rejected = store_blocks(
        store,
        batch.id,
        plan.priority.broker_priority,
        spool.blocks(),
        after_line=after_line,
        progress=options.progress,
    )
    with store.read() as session:
        stored_jobs, stored_rejected = stored_counts(session, batch.id)
    if (stored_jobs, stored_rejected) != (batch.total, batch.rejected):
        raise ProducerError(
            f"batch {batch.id} has {stored_jobs} jobs and {stored_rejected} rejected rows "
            f"stored, but {batch.total} and {batch.rejected} were expected; the input differs "
            "from the one first submitted with this idempotency key"
        )
    log.info("Batch %s: stored %d jobs and %d rejected rows.", batch.id, jobs, rejected)


def _complete_existing(
    settings: Settings,
    store: Store,
    celery_app: Any,
    source: _Input,
    plan: BatchPlan,
    options: SubmitOptions,
    batch: Batch,
    actor: str,
) -> SubmitOutcome:
    with store.read() as session:
        stored_jobs, stored_rejected = stored_counts(session, batch.id)
        published = was_published(session, batch.id)
        last_line = resume_line(session, batch.id)

    if (stored_jobs, stored_rejected) != (batch.total, batch.rejected):
        # The first submission was killed while storing: store the rows it did not reach.
        log.info("Batch %s is incomplete (%d of %d jobs stored); storing the rest.",
                 batch.id, stored_jobs, batch.total)
        with Spool(settings.home / "spool", ROWS_PER_TRANSACTION) as spool:
            _validate_all(settings, source, plan, options, spool)
            _store_jobs(store, spool, plan, options, batch, after_line=last_line)
    if published or not is_open(batch):
        return _outcome(source, batch, existing=True, chunks=0, published=published)
    return _publish(store, celery_app, source, plan, options, batch, actor, existing=True)


def _publish(
    store: Store,
    celery_app: Any,
    source: _Input,
    plan: BatchPlan,
    options: SubmitOptions,
    batch: Batch,
    actor: str,
    *,
    existing: bool,
) -> SubmitOutcome:
    try:
        chunks, jobs = publish_batch(
            store, celery_app, plan.kind, batch.id,
            priority=plan.priority, chunk_size=plan.chunk_size, progress=options.progress,
        )
    except BrokerError as error:
        log.warning("Batch %s is stored but publishing failed: %s", batch.id, error)
        return _outcome(source, batch, existing=existing, chunks=0, published=False,
                        publish_error=str(error))
    record_published(store, batch.id, actor, chunks, jobs)
    log.info("Batch %s: published %d jobs in %d chunks.", batch.id, jobs, chunks)
    return _outcome(source, batch, existing=existing, chunks=chunks, published=True)


def _outcome(
    source: _Input,
    batch: Batch,
    *,
    existing: bool,
    chunks: int,
    published: bool,
    publish_error: str | None = None,
) -> SubmitOutcome:
    return SubmitOutcome(
        batch_id=batch.id,
        jobs=batch.total,
        rejected=batch.rejected,
        existing=existing,
        chunks=chunks,
        published=published,
        publish_error=publish_error,
        source_name=batch.source_name,
        source_sha256=batch.source_sha256,
        format=source.format,
        encoding=source.encoding,
        idempotency_key=batch.idempotency_key,
        notes=tuple(source.notes()),
    )


def _event_details(source: _Input, plan: BatchPlan, batch: Batch) -> dict[str, Any]:
    return {
        "source_name": source.name,
        "source_sha256": source.sha256,
        "format": source.format,
        "encoding": source.encoding,
        "kind": plan.kind,
        "params": plan.params,
        "jobs": batch.total,
        "rejected": batch.rejected,
        "priority": plan.priority.value,
        "name": batch.name,
        "idempotency_key": batch.idempotency_key,
    }


def _abort_quietly(store: Store, batch_id: str, actor: str, error: BaseException) -> None:
    try:
        abort_batch(store, batch_id, actor, f"{type(error).__name__}: {error}")
    except Exception:
        log.exception("Could not delete the partial batch %s; delete it by hand.", batch_id)
