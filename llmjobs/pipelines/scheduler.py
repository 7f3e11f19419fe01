"""`llmjobs scheduler`: Celery beat and the runner of due pipeline runs, in one process.

Beat runs in a thread and sends `llmjobs.run_pipeline(name, date)` to the pipeline's
queue, `llmjobs.pipelines.<name>`. The same process consumes the queues of the pipelines
in its file with a thread pool, one thread per pipeline, and runs each pipeline with
PipelineRunner. The model work itself
goes to the ordinary workers through Redis. Several schedulers may run at once: each
sends and may receive the same message, and the unique (pipeline, date) run row lets
exactly one of them run the night.

On SIGTERM or Ctrl-C, runs that are waiting for a batch stop polling and are marked
interrupted; a scheduler that starts later resumes them (see `catch_up`).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from celery import Celery, signals
from celery.beat import EmbeddedService

from llmjobs.broker import bound_queue, create_celery_app
from llmjobs.client import Client
from llmjobs.config import Settings
from llmjobs.models.base import utcnow
from llmjobs.models.session import Store
from llmjobs.pipelines import store as runs
from llmjobs.pipelines.beat import RUN_PIPELINE_TASK, beat_schedule, pipeline_queue
from llmjobs.pipelines.runner import PipelineRunner, RunOutcome
from llmjobs.pipelines.schedule import log_catch_up, plan_catch_up
from llmjobs.pipelines.spec import PipelineFile, PipelineSpec, load_pipeline_file

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# After shutdown begins, the process exits by force if it has not stopped within this time.
STOP_DEADLINE_S = 45.0
EXIT_STOP_DEADLINE = 70


def trigger_run(spec: PipelineSpec, settings: Settings, day: date, *, clock: Clock | None = None,
                poll_s: float = 1.0, stopping: threading.Event | None = None) -> RunOutcome:
    """Run (pipeline, day) unless another scheduler or a manual run has claimed it already.

    A run of that night that was interrupted, or whose owner died, is resumed. Safe to call
    from any number of threads and processes at once for the same night.
    """
    with Client(settings) as client:
        runner = PipelineRunner(spec, settings, client, clock=clock or utcnow, poll_s=poll_s,
                                stopping=stopping)
        return runner.run(day, adopt_abandoned=True)


def catch_up(pipelines: PipelineFile, store: Store, app: Celery, now: datetime) -> list[str]:
    """Send the run messages a starting scheduler owes; return the pipeline names they are for.

    One message per interrupted run and per run whose owner is gone among the latest 20 of
    each pipeline (the run task resumes them), and one for each pipeline whose latest night
    was missed and whose policy is latest.
    """
    sent = []
    for spec in pipelines.pipelines.values():
        with store.read() as session:
            latest = runs.latest_run_date(session, spec.name)
            abandoned = [(run.id, run.scheduled_for, run.status, run.owner)
                         for run in runs.list_runs(session, spec.name, limit=20)
                         if runs.abandoned(run, now)]
        days = []
        for run_id, day, status, owner in abandoned:
            log.warning("Run %d of %s for %s is %s%s; resuming it.", run_id, spec.name, day, status,
                        f" in {owner}, which looks gone" if owner else "")
            days.append(day)
        decision = plan_catch_up(spec, now, latest)
        log_catch_up(decision)
        if decision.action == "run" and decision.day is not None and decision.day not in days:
            days.append(decision.day)
        for day in days:
            send_run(app, spec.name, day.isoformat())
            sent.append(spec.name)
    return sent


def send_run(app: Celery, name: str, day_text: str) -> None:
    """Send the run message of (pipeline, ISO date) to the pipeline's own queue."""
    app.send_task(RUN_PIPELINE_TASK, args=[name, day_text], queue=pipeline_queue(name),
                  routing_key=pipeline_queue(name))


def create_scheduler_app(settings: Settings, broker_url: str, pipelines: PipelineFile,
                         stopping: threading.Event | None = None) -> Celery:
    """Build the scheduler's Celery app: the pipelines' queues, the beat entries and the task.

    `stopping`, once set, makes the task's runs stop waiting and mark themselves interrupted.
    """
    app = create_celery_app(settings, broker_url)
    app.conf.update(
        task_queues=[bound_queue(pipeline_queue(name)) for name in sorted(pipelines.pipelines)],
        task_default_queue=pipeline_queue(min(pipelines.pipelines)),
        beat_schedule=beat_schedule(pipelines.pipelines),
        # In memory: which nights ran is kept in the store, not in a beat schedule file.
        beat_scheduler="celery.beat:Scheduler",
        # One message at a time per free thread; a run message is never held back by another.
        worker_prefetch_multiplier=1,
    )
    run_settings = settings.replace(broker_url=broker_url)

    # Acked on receipt: a scheduler that dies mid-run leaves the run row, which resume continues.
    @app.task(name=RUN_PIPELINE_TASK, acks_late=False, ignore_result=True, time_limit=None)
    def run_pipeline(name: str, day_text: str) -> None:
        if stopping is not None and stopping.is_set():
            # Received after the shutdown began: hand the run to another scheduler. The pause
            # keeps this scheduler from taking the same message back at once, in a loop.
            time.sleep(1.0)
            send_run(app, name, day_text)
            log.info("Pipeline %s for %s: this scheduler is stopping; the run message was sent "
                     "back to %s.", name, day_text, pipeline_queue(name))
            return
        spec = pipelines.pipelines.get(name)
        if spec is None:
            log.error("Received a run for pipeline %r, which %s does not define; ignored.",
                      name, pipelines.path)
            return
        outcome = trigger_run(spec, run_settings, date.fromisoformat(day_text), stopping=stopping)
        if outcome.status == runs.FAILED:
            log.error("Pipeline %s for %s: run %s failed: %s", name, day_text, outcome.run_id,
                      outcome.error_message)

    return app


def run_scheduler(settings: Settings, broker_url: str, pipelines_path: Path,
                  loglevel: str = "INFO", clock: Clock | None = None) -> int:
    """Run beat and the pipeline runner until SIGTERM or Ctrl-C; return the exit status."""
    pipelines = load_pipeline_file(pipelines_path, settings.templates_file)
    stopping = threading.Event()
    app = create_scheduler_app(settings, broker_url, pipelines, stopping)

    def on_shutdown(**_: object) -> None:
        stopping.set()
        _start_exit_deadline(STOP_DEADLINE_S)

    # weak=False: the receiver is a closure that nothing else keeps alive.
    signals.worker_shutting_down.connect(on_shutdown, weak=False)
    store = Store(settings.database_url)
    try:
        catch_up(pipelines, store, app, (clock or utcnow)())
    finally:
        store.dispose()
    log.info("Scheduler started (pid %d) for %d pipelines from %s: %s.", os.getpid(),
             len(pipelines.pipelines), pipelines_path, ", ".join(sorted(pipelines.pipelines)))

    beat = EmbeddedService(app, thread=True)
    beat.start()
    argv = [
        "worker",
        "--pool", "threads",
        "--concurrency", str(max(1, len(pipelines.pipelines))),
        "--queues", ",".join(pipeline_queue(name) for name in sorted(pipelines.pipelines)),
        "--hostname", f"scheduler-{os.getpid()}@{socket.gethostname()}",
        "--loglevel", loglevel,
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    try:
        app.worker_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        beat.stop()
        log.info("Scheduler stopped (pid %d).", os.getpid())
    return 0


def _start_exit_deadline(seconds: float) -> None:
    """Exit the process by force, after dumping every thread's stack, if it still runs in `seconds`."""
    def expire() -> None:
        time.sleep(seconds)
        log.error("Scheduler (pid %d) did not stop within %.0f s of the shutdown signal; exiting "
                  "with code %d. Thread stacks follow.", os.getpid(), seconds, EXIT_STOP_DEADLINE)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(EXIT_STOP_DEADLINE)

    threading.Thread(target=expire, name="stop-deadline", daemon=True).start()
