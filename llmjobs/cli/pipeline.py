"""`llmjobs pipeline ...` and `llmjobs scheduler`: validate, run, resume and inspect nightly pipelines.

Exit codes: 0 success (or the night already has a run), 1 the run failed, 2 an invalid
pipeline file or bad usage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from llmjobs.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliContext,
    json_option,
    pass_cli,
    print_json,
)
from llmjobs.errors import PipelineFileInvalid

_pipelines_option = click.option(
    "--pipelines", "pipelines_path", required=True, envvar="LLMJOBS_PIPELINES",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The pipeline file (YAML). Default: $LLMJOBS_PIPELINES.",
)


def _worker_options(function: Any) -> Any:
    function = click.option(
        "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
        help="Device of the --with-worker worker.")(function)
    return click.option(
        "--with-worker", is_flag=True,
        help="Start a worker for the pipeline's kinds for as long as the command runs; "
             "without it, workers already consuming from the same broker do the work.")(function)


@click.group("pipeline")
def pipeline_group() -> None:
    """Validate, run, resume and inspect the nightly pipelines of a pipeline file."""


@pipeline_group.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_cli
def validate_command(context: CliContext, path: Path, as_json: bool) -> None:
    """Check a pipeline file and list every problem with its file:line:column and key."""
    from llmjobs.pipelines.spec import check_pipeline_file

    parsed, problems = check_pipeline_file(path, context.settings.templates_file)
    if as_json:
        print_json({"valid": not problems, "problems": [p.to_dict() for p in problems],
                    "pipelines": sorted(parsed.pipelines) if parsed else []})
    elif problems:
        for problem in problems:
            click.echo(problem.describe(), err=True)
        click.echo(f"{len(problems)} problem(s) found in {path}.", err=True)
    else:
        assert parsed is not None
        for name, spec in parsed.pipelines.items():
            steps = " -> ".join(step.name for step in spec.steps)
            click.echo(f"{name}: '{spec.schedule}' {spec.timezone}, steps {steps}, "
                       f"{len(spec.exports)} export(s)")
        click.echo(f"{path} is valid.")
    if problems:
        raise SystemExit(EXIT_USAGE)


@pipeline_group.command("run")
@click.argument("name")
@_pipelines_option
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="The scheduled date to run, YYYY-MM-DD. Default: today in the pipeline's time zone.")
@click.option("--poll-s", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between checks of a step's batch.")
@_worker_options
@json_option
@pass_cli
def run_command(context: CliContext, name: str, pipelines_path: Path, day: Any, poll_s: float,
                with_worker: bool, device: str, as_json: bool) -> None:
    """Run pipeline NAME for one date now, unless that date already has a run."""
    from llmjobs.pipelines.runner import PipelineRunner

    spec = _load(context, pipelines_path).get(name)
    with _session(context, spec, with_worker, device) as (client, stop_reason), \
            _stop_on_signal() as stopping:
        runner = PipelineRunner(spec, client.settings, client, poll_s=poll_s,
                                stop_reason=stop_reason, stopping=stopping)
        outcome = runner.run(day.date() if day else None)
    _report(context, outcome, as_json)


@pipeline_group.command("resume")
@click.argument("run_id", type=int)
@_pipelines_option
@click.option("--force", is_flag=True,
              help="Take over a run marked running even though its process may still be alive.")
@click.option("--poll-s", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between checks of a step's batch.")
@_worker_options
@json_option
@pass_cli
def resume_command(context: CliContext, run_id: int, pipelines_path: Path, force: bool,
                   poll_s: float, with_worker: bool, device: str, as_json: bool) -> None:
    """Continue a failed run from its first unfinished step, reusing the finished steps' batches."""
    from llmjobs.pipelines import store as runs
    from llmjobs.pipelines.runner import PipelineRunner

    with context.store.read() as session:
        pipeline = runs.get_run(session, run_id).pipeline
    spec = _load(context, pipelines_path).get(pipeline)
    with _session(context, spec, with_worker, device) as (client, stop_reason), \
            _stop_on_signal() as stopping:
        runner = PipelineRunner(spec, client.settings, client, poll_s=poll_s,
                                stop_reason=stop_reason, stopping=stopping)
        outcome = runner.resume(run_id, force=force)
    _report(context, outcome, as_json)


@pipeline_group.command("runs")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@pass_cli
def runs_command(context: CliContext, name: str | None, limit: int, as_json: bool) -> None:
    """List pipeline runs, newest date first, optionally of one pipeline."""
    from llmjobs.pipelines import store as runs

    with context.store.read() as session:
        rows = [runs.run_as_dict(run) for run in runs.list_runs(session, name, limit)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No pipeline runs.")
        return
    click.echo(f"{'RUN':>6}  {'PIPELINE':<24} {'DATE':<10}  {'STATUS':<11} STEPS")
    for row in rows:
        steps = " ".join(f"{r['name']}:{r['status']}" for r in row["steps"] if r.get("stage") == "step")
        click.echo(f"{row['id']:>6}  {row['pipeline']:<24} {row['scheduled_for']:<10}  "
                   f"{row['status']:<11} {steps}")


@pipeline_group.command("show")
@click.argument("run_id", type=int)
@json_option
@pass_cli
def show_command(context: CliContext, run_id: int, as_json: bool) -> None:
    """Show one run: its source, each step's batch and counts, its exports and times."""
    from llmjobs.pipelines import store as runs

    with context.store.read() as session:
        row = runs.run_as_dict(runs.get_run(session, run_id))
    if as_json:
        print_json(row)
        return
    click.echo(f"Run {row['id']}: {row['pipeline']} for {row['scheduled_for']} - {row['status']}")
    click.echo(f"  started {row['started_at']}, finished {row['finished_at'] or '-'}, "
               f"owner {row['owner']}")
    if row["error_message"]:
        click.echo(f"  error: {row['error_message']}")
    for record in row["steps"]:
        click.echo("  " + _describe_record(record))


def _describe_record(record: dict[str, Any]) -> str:
    stage = record.get("stage")
    if stage == "source" and record.get("type") == "files":
        return (f"source: {len(record['files'])} new of {record['matched']} files matching "
                f"{record['pattern']}")
    if stage == "source":
        return f"source: table {record['table']}, watermark from {record['from']} to {record['to']}"
    if stage == "step":
        counts = ", ".join(f"{k} {v}" for k, v in (record.get("counts") or {}).items() if v)
        earlier = record.get("previous_batch_ids") or []
        text = (f"step {record['index'] + 1} {record['name']} ({record['kind']}): {record['status']}, "
                f"batch {record.get('batch_id') or '-'}, {record.get('jobs', 0)} jobs")
        if counts:
            text += f" [{counts}]"
        if earlier:
            text += f", earlier batches {', '.join(earlier)}"
        return text
    return f"export {record.get('format')}: {record.get('rows')} rows to {record.get('target')}"


@click.command("scheduler")
@_pipelines_option
@click.option("--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Lowest level of log lines written to stderr.")
@pass_cli
def scheduler_command(context: CliContext, pipelines_path: Path, loglevel: str) -> None:
    """Run Celery beat for the pipelines and run each due night in this process.

    Workers for the model work run separately (`llmjobs worker`) against the same broker.
    """
    import logging

    from llmjobs.embedded import broker_url_for
    from llmjobs.pipelines.scheduler import run_scheduler

    logging.getLogger("llmjobs").setLevel(loglevel.upper())
    _load(context, pipelines_path)
    with broker_url_for(context.settings) as broker_url:
        status = run_scheduler(context.settings, broker_url, pipelines_path, loglevel.upper())
    raise SystemExit(status)


def _load(context: CliContext, path: Path) -> Any:
    from llmjobs.pipelines.spec import load_pipeline_file

    try:
        return load_pipeline_file(path, context.settings.templates_file)
    except PipelineFileInvalid as error:
        for problem in error.problems:
            click.echo(problem.describe(), err=True)
        raise SystemExit(EXIT_USAGE) from None


@contextlib.contextmanager
def _session(context: CliContext, spec: Any, with_worker: bool, device: str) -> Iterator[Any]:
    from llmjobs.client import Client
    from llmjobs.embedded import broker_url_for
    from llmjobs.pipelines.local_worker import local_worker

    settings = context.settings
    with broker_url_for(settings) as broker_url:
        client = Client(settings.replace(broker_url=broker_url), store=context.store)
        with client, contextlib.ExitStack() as stack:
            stop_reason = None
            if with_worker:
                kinds = sorted({step.kind for step in spec.steps})
                log_path = settings.home / "logs" / f"pipeline-worker-{os.getpid()}.log"
                worker = stack.enter_context(
                    local_worker(broker_url, kinds, device, settings.config_file, log_path))
                stop_reason = worker.stop_reason
            yield client, stop_reason or (lambda: None)


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[threading.Event]:
    """Yield an event that the first Ctrl-C or SIGTERM sets; a second Ctrl-C interrupts at once.

    The runner checks the event between polls, so the run is marked interrupted with its
    step records saved, instead of being cut off wherever the signal lands.
    """
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stopping.set()
        click.echo(f"\nReceived {signal.Signals(signum).name}; stopping the run at the next "
                   "check of its batch (Ctrl-C again to stop at once).", err=True)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report(context: CliContext, outcome: Any, as_json: bool) -> None:
    from llmjobs.pipelines import store as runs

    if as_json:
        record: dict[str, Any] = {"pipeline": outcome.pipeline, "date": outcome.day.isoformat(),
                                  "run_id": outcome.run_id, "status": outcome.status,
                                  "error_message": outcome.error_message}
        if outcome.run_id is not None:
            with context.store.read() as session:
                record["run"] = runs.run_as_dict(runs.get_run(session, outcome.run_id))
        print_json(record)
    elif outcome.status == "exists":
        click.echo(f"{outcome.pipeline} for {outcome.day} already has run {outcome.run_id}; "
                   f"see `llmjobs pipeline show {outcome.run_id}`.")
    elif outcome.status in (runs.FAILED, runs.INTERRUPTED):
        message = outcome.error_message or ""
        if "pipeline resume" not in message:
            message += f"; continue it with `llmjobs pipeline resume {outcome.run_id}`"
        click.echo(f"Run {outcome.run_id} of {outcome.pipeline} for {outcome.day} {outcome.status}: "
                   f"{message}", err=True)
    else:
        with context.store.read() as session:
            row = runs.run_as_dict(runs.get_run(session, outcome.run_id))
        click.echo(f"Run {outcome.run_id} of {outcome.pipeline} for {outcome.day} completed.")
        for record in row["steps"]:
            click.echo("  " + _describe_record(record))
    if outcome.status == runs.INTERRUPTED:
        raise SystemExit(EXIT_INTERRUPTED)
    if outcome.status == runs.FAILED:
        raise SystemExit(EXIT_FAILED)


def register(cli: click.Group) -> None:
    cli.add_command(pipeline_group)
    cli.add_command(scheduler_command)
