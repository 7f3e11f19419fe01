"""`llmjobs cancel`, `retry` and `requeue`: operator actions on stored batches."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

import click
from celery import Celery

from llmjobs.broker import create_celery_app
from llmjobs.cli.common import CliContext, json_option, pass_cli, plural, print_json
from llmjobs.embedded import broker_url_for
from llmjobs.operations import RETRYABLE_STATUSES, cancel_batch, requeue_jobs, retry_jobs

# Without an explicit batch, jobs this recent are probably still being published by
# their producer, so republishing them would only add duplicate messages.
DEFAULT_OLDER_THAN_ALL_S = 300.0


def operator_name() -> str:
    """Return the name recorded as the actor of audit events written by these commands."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def celery_app(context: CliContext) -> Iterator[Celery]:
    """Yield a Celery app on the configured broker, or on a private redis-server."""
    settings = context.settings
    with broker_url_for(settings) as url:
        app = create_celery_app(settings, url)
        try:
            yield app
        finally:
            app.close()


@click.command("cancel")
@click.argument("batch_id", metavar="BATCH")
@json_option
@pass_cli
def cancel_command(context: CliContext, batch_id: str, as_json: bool) -> None:
    """Cancel a batch: queued jobs stop at once, running ones finish and keep their results."""
    report = cancel_batch(context.store, batch_id, operator_name())
    if as_json:
        print_json({
            "batch_id": report.batch_id, "cancelled": report.cancelled,
            "running": report.running, "already_finished": report.already_finished,
            "status": report.final_status.value if report.final_status else None,
        })
    elif report.already_finished:
        click.echo(f"Batch {report.batch_id} has already finished; nothing to cancel.")
    elif report.final_status is not None:
        click.echo(f"Cancelled {report.cancelled} queued jobs of batch {report.batch_id}; "
                   f"the batch is now {report.final_status.value}.")
    else:
        click.echo(f"Cancelled {report.cancelled} queued jobs of batch {report.batch_id}; "
                   f"{report.running} running jobs will finish and keep their results.")


@click.command("retry")
@click.argument("batch_id", metavar="BATCH")
@click.option("--failed", "failed", is_flag=True, help="Retry failed jobs (the default).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice([status.value for status in RETRYABLE_STATUSES]),
              help="Retry jobs with this status (repeat the option for several). Succeeded "
                   "jobs are retried only when named here: their results are replaced, and "
                   "each previous result is kept in the job's audit trail (`llmjobs jobs show`).")
@json_option
@pass_cli
def retry_command(
    context: CliContext, batch_id: str, failed: bool, statuses: tuple[str, ...], as_json: bool
) -> None:
    """Give the selected jobs of a batch a new attempt (by default the failed ones)."""
    selected = list(statuses)
    if failed or not selected:
        selected.insert(0, "failed")
    with celery_app(context) as app:
        report = retry_jobs(context.store, app, context.settings, batch_id, operator_name(),
                            selected)
    if as_json:
        print_json({"batch_id": report.batch_id, "retried": report.retried,
                    "messages": report.messages, "statuses": list(report.statuses)})
    else:
        click.echo(f"Retrying {plural(report.retried, 'job')} ({', '.join(report.statuses)}) of "
                   f"batch {report.batch_id} in {plural(report.messages, 'message')}.")


@click.command("requeue")
@click.argument("batch_id", metavar="[BATCH]", required=False)
@click.option("--older-than", "older_than_s", type=click.FloatRange(min=0),
              help="Only queued jobs created or last finished more than this many seconds "
                   f"ago [default: 0 with BATCH, {DEFAULT_OLDER_THAN_ALL_S:.0f} without].")
@json_option
@pass_cli
def requeue_command(
    context: CliContext, batch_id: str | None, older_than_s: float | None, as_json: bool
) -> None:
    """Publish queued jobs again whose messages were lost (of BATCH, or of every open batch).

    Duplicate messages are harmless: workers skip jobs that are finished or leased.
    """
    if older_than_s is None:
        older_than_s = 0.0 if batch_id is not None else DEFAULT_OLDER_THAN_ALL_S
    with celery_app(context) as app:
        report = requeue_jobs(context.store, app, context.settings, operator_name(),
                              batch_id=batch_id, older_than_s=older_than_s)
    if as_json:
        print_json({"republished": report.total, "messages": report.messages,
                    "batches": report.republished})
        return
    for batch, count in report.republished.items():
        click.echo(f"Batch {batch}: {count} jobs")
    click.echo(f"Republished {plural(report.total, 'queued job')} in {plural(report.messages, 'message')}.")


def register(cli: click.Group) -> None:
    """Add this module's commands to the group."""
    cli.add_command(cancel_command)
    cli.add_command(retry_command)
    cli.add_command(requeue_command)
