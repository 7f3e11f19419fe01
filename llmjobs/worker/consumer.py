"""The chunk consumer: claim a chunk's jobs, run them in micro-batches, store the outcomes.

It does not depend on Celery: the task calls `ChunkConsumer.process(batch_id, job_ids)`.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select

from llmjobs.config import Settings
from llmjobs.errors import GenerationTimeout, InputTooLong, OutOfMemory
from llmjobs.models.base import BatchStatus, JobStatus
from llmjobs.models.lifecycle import finalise_batch, mark_batch_running
from llmjobs.models.session import Store
from llmjobs.models.tables import Batch
from llmjobs.text.clean import is_blank
from llmjobs.worker import claims
from llmjobs.worker.batching import form_micro_batches
from llmjobs.worker.claims import Claim, ClaimedJob, Outcome
from llmjobs.worker.faults import Faults
from llmjobs.worker.retry import backoff_s, is_transient

if TYPE_CHECKING:
    from llmjobs.worker.heartbeat import Heartbeat
    from llmjobs.worker.kinds.base import ItemResult, JobKind, WorkItem
    from llmjobs.worker.watchdog import Watchdog

log = logging.getLogger(__name__)

T = TypeVar("T")

# How many times a store write is tried before the chunk gives up on it.
STORE_WRITE_ATTEMPTS = 6


@dataclass
class ChunkReport:
    batch_id: str
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0
    released: int = 0
    duplicate: int = 0
    duration_s: float = 0.0
    counts_by_error: dict[str, int] = field(default_factory=dict)


class ChunkConsumer:
    """Runs chunks for the kinds this worker has loaded."""

    def __init__(
        self,
        store: Store,
        kinds: Mapping[str, JobKind],
        settings: Settings,
        worker_id: str,
        *,
        stop_requested: Callable[[], bool] = lambda: False,
        faults: Faults | None = None,
        watchdog: Watchdog | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.store = store
        self.kinds = kinds
        self.settings = settings
        self.worker_id = worker_id
        self.host = socket.gethostname()
        self.stop_requested = stop_requested
        self.faults = faults or Faults()
        self.watchdog = watchdog
        self.heartbeat = heartbeat

    def process(self, batch_id: str, job_ids: Sequence[int]) -> ChunkReport:
        """Process one chunk; safe to call again with the same ids (a redelivery)."""
        started = time.monotonic()
        report = ChunkReport(batch_id)
        token = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"

        # A finished or cancelled batch has no open job, so its chunks are dropped after one
        # read instead of a write transaction: cancelling a big batch leaves thousands of
        # its messages queued ahead of newer work.
        status = self._with_store_retries(lambda: self._batch_status(batch_id),
                                          f"reading batch {batch_id}")
        if status is not None and status.terminal:
            report.duplicate = len(job_ids)
            log.info("Batch %s is %s; dropping a chunk of %d jobs.", batch_id, status.value,
                     len(job_ids))
            return report

        claim = self._with_store_retries(
            lambda: self._claim(batch_id, job_ids, token), f"claiming chunk of batch {batch_id}"
        )
        if claim is None:
            log.warning("Batch %s not found; dropping a chunk of %d job ids.", batch_id, len(job_ids))
            return report
        report.claimed = len(claim.jobs)
        report.failed += len(claim.poisoned)
        report.duplicate = claim.already_finished + claim.held_elsewhere
        if not claim.jobs:
            log.info(
                "Batch %s: chunk of %d jobs has nothing to do (%d finished, %d held by another "
                "worker); duplicate delivery ignored.",
                batch_id, len(job_ids), claim.already_finished, claim.held_elsewhere,
            )
            self._finalise(batch_id)
            return report

        kind = self.kinds.get(claim.kind)
        if kind is None:
            # The routing sent a chunk to a worker without this kind: give the jobs back.
            self._release(token, report)
            log.error("Batch %s: this worker has no %r kind loaded; released %d jobs.",
                      batch_id, claim.kind, report.released)
            return report

        if self.heartbeat is not None:
            self.heartbeat.token = token
        try:
            self._run_claim(kind, claim, token, report)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.token = None
        self._finalise(batch_id)
        report.duration_s = time.monotonic() - started
        done = report.succeeded + report.failed + report.skipped
        log.info(
            "Batch %s: chunk done: %d claimed, %d succeeded, %d failed, %d skipped, %d deferred, "
            "%d released, %d duplicates, %.2f s, %.1f items/s.",
            batch_id, report.claimed, report.succeeded, report.failed, report.skipped,
            report.deferred, report.released, report.duplicate, report.duration_s,
            done / report.duration_s if report.duration_s else 0.0,
        )
        return report

    # Claiming and finishing.

    def _batch_status(self, batch_id: str) -> BatchStatus | None:
        with self.store.read() as session:
            status = session.scalar(select(Batch.status).where(Batch.id == batch_id))
        return None if status is None else BatchStatus(status)

    def _claim(self, batch_id: str, job_ids: Sequence[int], token: str) -> Claim | None:
        with self.store.write() as session:
            claim = claims.claim_chunk(
                session, batch_id, job_ids, token, self.settings.lease_s,
                self.settings.max_attempts,
            )
            if claim is not None and claim.jobs:
                mark_batch_running(session, batch_id)
            return claim

    def _finalise(self, batch_id: str) -> None:
        def finalise() -> None:
            with self.store.write() as session:
                finalise_batch(session, batch_id, self.worker_id)

        self._with_store_retries(finalise, f"finalising batch {batch_id}")

    def _release(self, token: str, report: ChunkReport) -> None:
        def release() -> list[int]:
            with self.store.write() as session:
                return claims.release_jobs(session, token)

        report.released += len(self._with_store_retries(release, "releasing jobs"))

    # Running micro-batches.

    def _run_claim(self, kind: JobKind, claim: Claim, token: str, report: ChunkReport) -> None:
        from llmjobs.worker.kinds.base import WorkItem

        items: list[WorkItem] = []
        suspects: list[WorkItem] = []
        empty: list[Outcome] = []
        for job in claim.jobs:
            if is_blank(job.text):
                empty.append(Outcome(job.job_id, JobStatus.SKIPPED,
                                     error_code="empty_input",
                                     error_message="input text is empty or has no visible character"))
                continue
            item = WorkItem(job.job_id, claim.batch_id, job.text, _merge(claim.batch_params, job))
            # A job that was running when its worker died runs alone, so that if it kills
            # the worker again it takes no innocent job down with it.
            (suspects if job.previous_attempts > 0 else items).append(item)
        if empty:
            self._store_outcomes(claim.batch_id, kind, empty, token, report)

        batches = form_micro_batches(
            items, kind.token_counts(items), kind.group_key,
            self.settings.max_batch_size, self.settings.max_batch_tokens,
        )
        batches += [[item] for item in suspects]
        remaining = [item.job_id for batch in batches for item in batch]
        for position, batch in enumerate(batches):
            if self.stop_requested():
                log.info("Batch %s: shutdown requested; releasing the rest of the chunk.",
                         claim.batch_id)
                self._release(token, report)
                return
            remaining = [item.job_id for later in batches[position:] for item in later]
            self._run_micro_batch(kind, claim.batch_id, batch, remaining, token, report)

    def _run_micro_batch(
        self, kind: JobKind, batch_id: str, batch: list[WorkItem], remaining: list[int],
        token: str, report: ChunkReport,
    ) -> None:
        def start() -> list[int]:
            with self.store.write() as session:
                return claims.start_micro_batch(
                    session, batch_id, [item.job_id for item in batch], remaining, token,
                    self.settings.lease_s,
                )

        held = set(self._with_store_retries(start, f"starting a micro-batch of batch {batch_id}"))
        batch = [item for item in batch if item.job_id in held]
        if not batch:
            return
        try:
            outcomes = self._run_with_halving(kind, batch)
        except GenerationTimeout as error:
            outcomes = [
                Outcome(item.job_id, JobStatus.FAILED, error_code="timeout", error_message=str(error))
                for item in batch
            ]
        except Exception as error:
            if not is_transient(error):
                raise
            self._defer(batch, token, error, report)
            return
        self._store_outcomes(batch_id, kind, outcomes, token, report)

    def _run_with_halving(self, kind: JobKind, batch: list[WorkItem]) -> list[Outcome]:
        """Run the micro-batch; on out-of-memory or a model error, split it in two and retry.

        An item that still fails alone gets its own failed outcome, and the other items of
        the micro-batch are unaffected.
        """
        try:
            return [_outcome(result) for result in self._forward(kind, batch)]
        except OutOfMemory as error:
            # model_call() in the kind has already emptied the CUDA cache.
            reason, message = "input_too_long", f"out of memory even alone: {error}"
        except InputTooLong as error:
            reason, message = "input_too_long", str(error)
        except GenerationTimeout:
            raise
        except Exception as error:
            if is_transient(error):
                raise
            reason, message = "model_error", f"{type(error).__name__}: {error}"
            log.warning("Batch %s: model error on a micro-batch of %d: %s",
                        batch[0].batch_id, len(batch), message, exc_info=len(batch) == 1)

        if len(batch) == 1:
            return [Outcome(batch[0].job_id, JobStatus.FAILED, error_code=reason,
                            error_message=message)]
        middle = len(batch) // 2
        log.info("Batch %s: halving a micro-batch of %d after %s.", batch[0].batch_id,
                 len(batch), reason)
        return self._run_with_halving(kind, batch[:middle]) + self._run_with_halving(
            kind, batch[middle:]
        )

    def _forward(self, kind: JobKind, batch: list[WorkItem]) -> list[ItemResult]:
        deadline = time.monotonic() + self.settings.generation_timeout_s
        if self.watchdog is None:
            return self._run_kind(kind, batch, deadline)
        with self.watchdog.guard(batch[0].batch_id, [item.job_id for item in batch]):
            return self._run_kind(kind, batch, deadline)

    def _run_kind(self, kind: JobKind, batch: list[WorkItem], deadline: float) -> list[ItemResult]:
        if self.faults.active:
            self.faults.before_forward(
                [item.text for item in batch], kind.token_counts(batch)
            )
        return kind.run(batch, deadline=deadline)

    # Storing.

    def _store_outcomes(
        self, batch_id: str, kind: JobKind, outcomes: list[Outcome], token: str,
        report: ChunkReport,
    ) -> None:
        def write() -> list[Outcome]:
            with self.store.write() as session:
                return claims.write_outcomes(
                    session, batch_id, outcomes, token,
                    (kind.checkpoint_id, kind.checkpoint_revision), self.host, kind.device_name,
                )

        stored = self._with_store_retries(write, f"storing results of batch {batch_id}")
        report.duplicate += len(outcomes) - len(stored)
        for outcome in stored:
            if outcome.status == JobStatus.SUCCEEDED:
                report.succeeded += 1
            elif outcome.status == JobStatus.SKIPPED:
                report.skipped += 1
            else:
                report.failed += 1
                code = outcome.error_code or "unknown"
                report.counts_by_error[code] = report.counts_by_error.get(code, 0) + 1

    def _defer(self, batch: list[WorkItem], token: str, error: BaseException,
               report: ChunkReport) -> None:
        delay = backoff_s(1, self.settings.retry_base_s, self.settings.retry_max_s)
        reason = f"transient error, retry in {delay:.1f} s: {type(error).__name__}: {error}"
        log.warning("Batch %s: %d jobs deferred: %s", batch[0].batch_id, len(batch), reason)

        def defer() -> list[int]:
            with self.store.write() as session:
                return claims.defer_jobs(session, token, [item.job_id for item in batch],
                                         delay, reason)

        report.deferred += len(self._with_store_retries(defer, "deferring jobs"))

    def _with_store_retries(self, action: Callable[[], T], what: str) -> T:
        """Run a store action, retrying lost connections and lock timeouts with backoff."""
        for attempt in range(STORE_WRITE_ATTEMPTS):
            try:
                return action()
            except Exception as error:
                if not is_transient(error) or attempt == STORE_WRITE_ATTEMPTS - 1:
                    raise
                delay = backoff_s(attempt, 0.2, 10.0)
                log.warning("%s failed (%s: %s); retry %d of %d in %.1f s.", what.capitalize(),
                            type(error).__name__, error, attempt + 1, STORE_WRITE_ATTEMPTS - 1,
                            delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _merge(batch_params: Mapping[str, Any], job: ClaimedJob) -> dict[str, Any]:
    merged = dict(batch_params)
    merged.update(job.params)
    return merged


def _outcome(result: ItemResult) -> Outcome:
    return Outcome(
        job_id=result.job_id,
        status=JobStatus(result.status),
        output=result.output,
        error_code=result.error_code,
        error_message=result.error_message,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        latency_ms=result.latency_ms,
        decision=result.decision,
        scores=result.scores,
    )


