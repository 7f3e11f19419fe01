"""`llmjobs run FILE`: the main job in one command.

Submit the file, start a worker for its kind (GPU when present, else CPU), show progress
on a terminal, then print a summary. With no broker configured, a private redis-server
runs for the duration; with no checkpoint configured, tiny random ones are built and used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import click

from llmjobs.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, CliContext, is_terminal, pass_cli, print_json
from llmjobs.cli.submit import print_outcome, report_rejections, submit_options
from llmjobs.client import BatchView, Client
from llmjobs.config import Settings
from llmjobs.errors import ValidationFailed, WorkerError
from llmjobs.producer import SubmitOptions

WORKER_STOP_TIMEOUT_S = 120


@click.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@submit_options
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where the worker runs: a GPU when present, else the CPU.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Give up waiting after this many seconds (the jobs stay queued).")
@pass_cli
def run_command(context: CliContext, file: Path, kind: str, options: SubmitOptions,
                as_json: bool, device: str, timeout_s: float | None) -> None:
    """Submit FILE, process it with a worker started for the purpose, and print a summary.

    Exit status 0 when every job succeeded or was skipped, 1 when any job failed or was
    cancelled, 2 for invalid options or input rows.
    """
    settings = context.settings
    quiet = as_json or not is_terminal()

    with Client(settings, context.store) as client:
        try:
            outcome = client.submit(file, kind, options)
        except ValidationFailed as error:
            report_rejections(error, as_json)
            raise
        # After the submit, so that an invalid option or file is reported on its own.
        if not settings.checkpoints.get(kind):
            _warn_tiny_checkpoint(kind)
        if not as_json:
            print_outcome(outcome, as_json=False)
        if not outcome.published:
            raise SystemExit(EXIT_FAILED)

        view = client.status(outcome.batch_id)
        # Above zero when the same input was run before and interrupted: the batch is reused.
        done_before = view.done
        started = time.monotonic()
        if not view.terminal:
            try:
                view = _process(client, settings, kind, device, outcome.batch_id, quiet, timeout_s)
            except KeyboardInterrupt:
                _report_interrupt(client.status(outcome.batch_id))
                raise SystemExit(EXIT_INTERRUPTED) from None
        elapsed_s = time.monotonic() - started

    if as_json:
        print_json({**view.as_dict(), "submit": outcome.to_dict(), "wall_s": round(elapsed_s, 2),
                    "done_before": done_before,
                    "throughput_items_per_s": _rate(view, view.elapsed_s or elapsed_s)})
    else:
        _print_summary(view, elapsed_s, done_before)
    if view.counts["failed"] or view.counts["cancelled"] or not view.terminal:
        raise SystemExit(EXIT_FAILED)


def _process(client: Client, settings: Settings, kind: str, device: str, batch_id: str,
             quiet: bool, timeout_s: float | None) -> BatchView:
    log_path = settings.home / "logs" / f"run-{batch_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        worker = _start_worker(client.broker_url, kind, device, settings, log_file)
        progress = None if quiet else _ProgressLine()
        try:
            view = client.wait(
                batch_id, timeout_s=timeout_s, poll_s=0.5,
                on_progress=progress, keep_waiting=lambda: worker.poll() is None,
            )
        finally:
            if progress is not None:
                progress.finish()
            _stop_worker(worker)
    if not view.terminal:
        raise WorkerError(
            f"the worker exited with status {worker.returncode} before batch {batch_id} "
            f"finished; see {log_path}. The jobs stay queued: run `llmjobs worker` to go on."
        )
    return view


def _start_worker(broker_url: str, kind: str, device: str, settings: Settings,
                  log_file: IO[bytes]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, LLMJOBS_BROKER_URL=broker_url, LLMJOBS_HOME=str(settings.home),
               LLMJOBS_DATABASE_URL=settings.database_url,
               LLMJOBS_EXIT_WITH_PID=str(os.getpid()))
    command = [sys.executable, "-m", "llmjobs.cli.main"]
    if settings.config_file:
        command += ["--config", str(settings.config_file)]
    command += ["worker", "--kinds", kind, "--device", device, "--no-restart"]
    return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _warn_tiny_checkpoint(kind: str) -> None:
    click.echo(
        f"note: no checkpoint is configured for {kind!r}, so a tiny random checkpoint is used: "
        "its output text and scores are meaningless. Configure a real one with "
        f"LLMJOBS_CHECKPOINT_{kind.upper()}=<Hugging Face id or folder> or [checkpoints] in "
        "config.toml (see docs/checkpoints.md).",
        err=True,
    )


class _ProgressLine:
    """One stderr line: done/total, items/s and the estimated time left."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first_done: int | None = None
        self.printed = False

    def __call__(self, view: BatchView) -> None:
        done = view.done
        if self.first_done is None:
            self.first_done = done
        elapsed = time.monotonic() - self.started
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        left = view.total - done
        eta = f"{left / rate:.0f} s" if rate > 0 else "unknown"
        width = 30
        filled = int(width * done / view.total) if view.total else width
        bar = "#" * filled + "-" * (width - filled)
        click.echo(f"\r[{bar}] {done}/{view.total} jobs  {rate:.1f} items/s  ETA {eta}   ",
                   nl=False, err=True)
        self.printed = True

    def finish(self) -> None:
        if self.printed:
            click.echo("", err=True)


def _rate(view: BatchView, elapsed_s: float) -> float:
    return round(view.done / elapsed_s, 2) if elapsed_s > 0 else 0.0


def _report_interrupt(view: BatchView) -> None:
    click.echo(
        f"\nInterrupted. Batch {view.batch_id} keeps its jobs: {view.done} of {view.total} done, "
        "the rest stay queued. Run the same command again to continue this batch, start "
        f"`llmjobs worker` to process it, or stop it with `llmjobs cancel {view.batch_id}`.",
        err=True,
    )


def _print_summary(view: BatchView, elapsed_s: float, done_before: int = 0) -> None:
    counts = ", ".join(f"{count} {status}" for status, count in view.counts.items() if count)
    click.echo(f"Batch {view.batch_id} {view.status}: {counts or 'no jobs'}.")
    processing_s = view.elapsed_s
    if done_before:
        # The batch's own times span the earlier, interrupted run as well.
        click.echo(f"This run processed {view.done - done_before} jobs; {done_before} were done "
                   f"by an earlier run. {elapsed_s:.1f} s in all, including the worker start-up.")
    elif processing_s:
        click.echo(
            f"Processed {view.done} jobs in {processing_s:.{1 if processing_s >= 1 else 3}f} s "
            f"({view.done / processing_s:.1f} items/s); {elapsed_s:.1f} s in all, "
            "including the worker start-up."
        )
    click.echo("Query it with:")
    click.echo(f"  llmjobs status {view.batch_id}")
    click.echo(f"  llmjobs results {view.batch_id} --format jsonl")
    if view.counts["failed"]:
        click.echo(f"  llmjobs results {view.batch_id} --status failed")
        click.echo(f"  llmjobs retry {view.batch_id} --failed")


def register(cli: click.Group) -> None:
    cli.add_command(run_command)
