"""Execute one pipeline run: claim the night, take the source, run each step, write the exports.

What flows between steps. Every item keeps the id it had in the source. The text that
step N+1 receives is step N's output text when step N is translate or write, and the
text that step N received when step N is moderate (moderation passes text through).
Step N+1 takes the items of step N that pass its filter; with no filter, the items that
succeeded in step N. A step with no items is recorded as skipped, and so are the steps
after it.

Every stage is recorded in the run row as it finishes, so `resume` continues from the
first unfinished step: a finished step's batch is reused, a batch still open is waited
for, and only a failed or cancelled batch is submitted again (as a new batch).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import update

from llmjobs.client import BatchView, Client
from llmjobs.config import Settings
from llmjobs.errors import LlmjobsError, PipelineError
from llmjobs.models.base import utcnow
from llmjobs.models.tables import Batch
from llmjobs.pipelines import store as runs
from llmjobs.pipelines.exports import iter_export_rows, write_export
from llmjobs.pipelines.filters import DEFAULT_FILTER, StepOutcome
from llmjobs.pipelines.params import submit_fields
from llmjobs.pipelines.sources import claim_with_retries, source_for
from llmjobs.pipelines.spec import PipelineSpec, StepSpec

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
# Batch statuses after which a step counts as done and is never submitted again.
_DONE = ("completed", "completed_with_errors", "skipped")
_OPEN = ("submitting", "queued", "running")
_TEXT_KINDS = ("translate", "write")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class RunOutcome:
    """What `run` or `resume` did: the run id and its status, or that another process has it."""

    pipeline: str
    day: date
    run_id: int | None
    status: str  # "completed", "failed", "interrupted", or "exists" when another process has it
    error_message: str | None = None

    @property
    def claimed(self) -> bool:
        return self.status != "exists"


class StepFailed(PipelineError):
    """Raised inside a run when a step's batch ends failed or cancelled, or cannot be published."""


class RunInterrupted(PipelineError):
    """Raised inside a run when this process is stopping, so the run is released instead of failed."""


class PipelineRunner:
    """Runs one pipeline's nights against a Client's store and broker."""

    def __init__(
        self,
        spec: PipelineSpec,
        settings: Settings,
        client: Client,
        *,
        clock: Clock = utcnow,
        poll_s: float = 1.0,
        stop_reason: Callable[[], str | None] = lambda: None,
        stopping: threading.Event | None = None,
        actor: str | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.client = client
        self.store = client.store
        self.clock = clock
        self.poll_s = poll_s
        # Returns why waiting for a batch is pointless (the worker we started died), else None.
        self.stop_reason = stop_reason
        # Set when this process is shutting down: the run stops between polls and is released.
        self.stopping = stopping or threading.Event()
        self.actor = actor or f"pipeline:{spec.name}"
        self.owner = runs.new_owner()

    def run(self, day: date | None = None, adopt_abandoned: bool = False) -> RunOutcome:
        """Claim (pipeline, day) and run it, or return status "exists" if it was claimed before.

        With adopt_abandoned, an existing run of that night that was interrupted, or whose owner
        died, is resumed instead. When several processes try this at once, one of them wins.
        """
        day = day or self.spec.today(self.clock())
        run_id = runs.claim_run(self.store, self.spec.name, day, self.owner, self.clock())
        if run_id is None:
            with self.store.read() as session:
                existing = runs.find_run(session, self.spec.name, day)
            existing_id = existing.id if existing is not None else None
            status = existing.status if existing is not None else "unknown"
            if existing is not None and adopt_abandoned and runs.abandoned(existing, self.clock()):
                try:
                    return self.resume(existing.id)
                except PipelineError as error:
                    log.warning("Pipeline %s for %s: not resuming run %s: %s", self.spec.name, day,
                             existing_id, error)
            log.info("Pipeline %s for %s already has run %s (%s); not running it again.",
                     self.spec.name, day, existing_id, status)
            return RunOutcome(self.spec.name, day, existing_id, "exists")
        log.info("Pipeline %s for %s: run %d started by %s.", self.spec.name, day, run_id, self.owner)
        return self._execute(_RunState(run_id, day, []))

    def resume(self, run_id: int, force: bool = False) -> RunOutcome:
        """Take over a failed (or abandoned) run and continue it from its first unfinished step."""
        with self.store.read() as session:
            pipeline = runs.get_run(session, run_id).pipeline
        if pipeline != self.spec.name:
            raise PipelineError(f"run {run_id} belongs to pipeline {pipeline!r}, not {self.spec.name!r}")
        run = runs.take_over(self.store, run_id, self.owner, self.clock(), force=force)
        state = _RunState(run.id, run.scheduled_for, [dict(record) for record in run.steps])
        self._check_same_steps(state)
        log.info("Pipeline %s for %s: run %d resumed by %s.", self.spec.name, run.scheduled_for,
                 run_id, self.owner)
        return self._execute(state)

    def _check_same_steps(self, state: _RunState) -> None:
        for record in state.records:
            if record.get("stage") != "step":
                continue
            index = record["index"]
            step = self.spec.steps[index] if index < len(self.spec.steps) else None
            if step is None or (step.name, step.kind) != (record["name"], record["kind"]):
                raise PipelineError(
                    f"run {state.run_id} recorded step {index} as {record['name']} "
                    f"({record['kind']}), but the pipeline file now differs there; restore the "
                    "file as it was, or start a new run for another date"
                )

    def _execute(self, state: _RunState) -> RunOutcome:
        try:
            # The input is claimed once; a resumed run reads the same input again.
            source = source_for(self.spec, self.settings)
            if state.source is None:
                state.put(claim_with_retries(source, self.store, state.run_id))
                self._save(state)

            for step in self.spec.steps:
                self._run_step(state, step, source)

            # Exports are rewritten in full on resume, so each target holds exactly one run.
            state.records = [record for record in state.records if record.get("stage") != "export"]
            for export in self.spec.exports:
                rows = iter_export_rows(self._read_results, state.step_batches(self.spec))
                state.records.append(write_export(export, self.spec, self.settings.home, state.day, rows))
                self._save(state)
        except RunInterrupted as error:
            return self._interrupt(state, str(error))
        except (StepFailed, LlmjobsError) as error:
            return self._fail(state, str(error))
        except Exception as error:
            log.exception("Run %d of %s failed unexpectedly.", state.run_id, self.spec.name)
            return self._fail(state, f"{type(error).__name__}: {error}")
        except BaseException as error:
            self._interrupt(state, f"interrupted by {type(error).__name__}")
            raise
        runs.finish_run(self.store, state.run_id, self.owner, runs.COMPLETED, self.clock())
        log.info("Pipeline %s for %s: run %d completed.", self.spec.name, state.day, state.run_id)
        return RunOutcome(self.spec.name, state.day, state.run_id, runs.COMPLETED)

    def _fail(self, state: _RunState, message: str) -> RunOutcome:
        log.warning("Pipeline %s for %s: run %d failed: %s", self.spec.name, state.day,
                    state.run_id, message)
        try:
            runs.finish_run(self.store, state.run_id, self.owner, runs.FAILED, self.clock(), message)
        except PipelineError as error:
            log.warning("Run %d: %s", state.run_id, error)
        return RunOutcome(self.spec.name, state.day, state.run_id, runs.FAILED, message)

    def _interrupt(self, state: _RunState, message: str) -> RunOutcome:
        log.warning("Pipeline %s for %s: run %d interrupted (%s); the scheduler resumes it when it "
                    "starts, or run `llmjobs pipeline resume %d`.", self.spec.name, state.day,
                    state.run_id, message, state.run_id)
        try:
            runs.release_run(self.store, state.run_id, self.owner, self.clock(), message)
        except PipelineError as error:
            log.warning("Run %d: %s", state.run_id, error)
        return RunOutcome(self.spec.name, state.day, state.run_id, runs.INTERRUPTED, message)

    def _save(self, state: _RunState) -> None:
        runs.save_steps(self.store, state.run_id, self.owner, state.records, self.clock())

    def _run_step(self, state: _RunState, step: StepSpec, source: Any) -> None:
        record = state.step(step.index)
        if record is not None and record["status"] in _DONE:
            log.info("Run %d: step %s is %s in batch %s; reusing it.", state.run_id, step.name,
                     record["status"], record.get("batch_id"))
            return
        if self.stopping.is_set():
            raise RunInterrupted(f"stopped before step {step.name}: this process is stopping")
        if record is None or not record.get("batch_id") or record["status"] not in _OPEN:
            record = self._submit_step(state, step, record, source)
            if record["status"] == "skipped":
                return
        self._wait_for_step(state, step, record)

    def _submit_step(self, state: _RunState, step: StepSpec, record: dict[str, Any] | None,
                     source: Any) -> dict[str, Any]:
        from llmjobs.producer.options import SubmitOptions

        # A record still "submitting" crashed mid-submit: the same attempt reuses its key.
        previous = dict(record or {})
        retrying = previous.get("status") not in (None, "submitting")
        attempt = int(previous.get("attempt", 0)) + (1 if retrying or not previous else 0)
        earlier_batches = list(previous.get("previous_batch_ids", []))
        if retrying and previous.get("batch_id"):
            earlier_batches.append(previous["batch_id"])
        record = {
            "stage": "step", "index": step.index, "name": step.name, "kind": step.kind,
            "status": "submitting", "attempt": attempt, "batch_id": None,
            "previous_batch_ids": earlier_batches, "submitted_at": self.clock().isoformat(),
        }
        state.put(record)
        self._save(state)

        options_fields, row_fields = submit_fields(step.kind, step.params)
        rows = self._input_rows(state, step, source, row_fields)
        first = next(rows, None)
        if first is None:
            record.update(status="skipped", counts={}, jobs=0, rejected=0,
                          finished_at=self.clock().isoformat())
            self._save(state)
            log.info("Run %d: step %s has no input items; skipped.", state.run_id, step.name)
            return record

        options = SubmitOptions(
            **options_fields,
            priority=step.priority,
            name=f"{self.spec.name} {state.day} {step.name}",
            actor=self.actor,
            idempotency_key=f"pipeline-run:{state.run_id}:{step.name}:{attempt}",
            skip_invalid=True,
        )
        outcome = self.client.submit_rows(itertools.chain([first], rows), step.kind, options)
        with self.store.write() as session:
            session.execute(update(Batch).where(Batch.id == outcome.batch_id)
                            .values(pipeline_run_id=state.run_id))
        record.update(batch_id=outcome.batch_id, status="queued", jobs=outcome.jobs,
                      rejected=outcome.rejected)
        self._save(state)
        log.info("Run %d: step %s submitted as batch %s (%d jobs, %d rejected rows).",
                 state.run_id, step.name, outcome.batch_id, outcome.jobs, outcome.rejected)
        if not outcome.published:
            raise StepFailed(f"step {step.name}: batch {outcome.batch_id} is stored but was not "
                             f"published ({outcome.publish_error}); resume the run once Redis "
                             "is reachable")
        return record

    def _input_rows(self, state: _RunState, step: StepSpec, source: Any,
                    row_fields: dict[str, Any]) -> Iterator[Any]:
        if step.index == 0:
            for row in source.rows(state.source):
                yield {**row, **row_fields} if isinstance(row, dict) else row
            return
        previous = state.step(step.index - 1)
        if previous is None or not previous.get("batch_id"):
            return
        previous_kind = self.spec.steps[step.index - 1].kind
        condition = step.filter or DEFAULT_FILTER
        for result in self.client.results(previous["batch_id"]):
            if not condition.matches(StepOutcome(result.status, result.output)):
                continue
            text = result.input_text
            output_text = (result.output or {}).get("text")
            if previous_kind in _TEXT_KINDS and isinstance(output_text, str):
                text = output_text
            yield {"id": result.item_id, "text": text, **row_fields}

    def _wait_for_step(self, state: _RunState, step: StepSpec, record: dict[str, Any]) -> None:
        batch_id = record["batch_id"]
        last_beat = [self.clock()]

        def beat(view: BatchView) -> None:
            now = self.clock()
            if (now - last_beat[0]).total_seconds() >= HEARTBEAT_S:
                runs.heartbeat(self.store, state.run_id, self.owner, now)
                last_beat[0] = now

        record["status"] = "running"
        self._save(state)
        view = self.client.wait(batch_id, poll_s=self.poll_s, on_progress=beat,
                                keep_waiting=lambda: self.stop_reason() is None
                                and not self.stopping.is_set())
        if not view.terminal and self.stopping.is_set():
            raise RunInterrupted(f"stopped waiting for batch {batch_id} of step {step.name} "
                                 f"({view.done} of {view.total} jobs done): this process is stopping")
        if not view.terminal:
            raise StepFailed(f"step {step.name}: stopped waiting for batch {batch_id} "
                             f"({view.done} of {view.total} jobs done): {self.stop_reason()}")
        record.update(status=view.status, counts=view.counts, finished_at=self.clock().isoformat())
        self._save(state)
        log.info("Run %d: step %s batch %s finished as %s: %s.", state.run_id, step.name, batch_id,
                 view.status, view.counts)
        if view.status in ("failed", "cancelled"):
            raise StepFailed(f"step {step.index + 1} ({step.name}) batch {batch_id} ended "
                             f"{view.status}: {_counts_text(view.counts)}; fix the cause, then "
                             f"run `llmjobs pipeline resume {state.run_id}`")

    def _read_results(self, batch_id: str, status: str | None) -> Iterator[Any]:
        return self.client.results(batch_id, status=status)


class _RunState:
    """The run's stage records (source, steps, exports) as stored in pipeline_runs.steps."""

    def __init__(self, run_id: int, day: date, records: list[dict[str, Any]]) -> None:
        self.run_id = run_id
        self.day = day
        self.records = records

    @property
    def source(self) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("stage") == "source"), None)

    def step(self, index: int) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("stage") == "step" and r["index"] == index), None)

    def put(self, record: dict[str, Any]) -> None:
        """Add a record, replacing the one for the same stage (and step index)."""
        for position, existing in enumerate(self.records):
            if existing.get("stage") == record["stage"] and existing.get("index") == record.get("index"):
                self.records[position] = record
                return
        self.records.append(record)
        order = {"source": 0, "step": 1, "export": 2}
        self.records.sort(key=lambda r: (order[r["stage"]], r.get("index", 0)))

    def step_batches(self, spec: PipelineSpec) -> list[tuple[str, str | None]]:
        batches = []
        for step in spec.steps:
            record = self.step(step.index)
            batches.append((step.name, record.get("batch_id") if record else None))
        return batches


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in counts.items() if count) or "no jobs"
