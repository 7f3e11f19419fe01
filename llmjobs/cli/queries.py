"""`llmjobs batches`, `status`, `results` and `jobs show`: read-only views of the store."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click
from sqlalchemy.orm import Session

from llmjobs.cli.common import CliContext, json_option, pass_cli, print_json
from llmjobs.export import FORMATS, atomic_output, create_writer, iter_export_rows
from llmjobs.models.base import BatchStatus, JobStatus
from llmjobs.models.queries import (
    ResultFilter,
    batch_categories,
    category_scores,
    decision_counts,
    get_batch,
    get_job,
    get_job_by_item,
    get_result,
    job_audit_events,
    job_counts,
    list_batches,
)
from llmjobs.models.tables import Batch, Job
from llmjobs.textwidth import one_line, pad, printable

_FORMAT_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def format_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


def iso_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@click.command("batches")
@click.option("--status", type=click.Choice([s.value for s in BatchStatus]),
              help="Show only batches with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Maximum number of batches, newest first.")
@json_option
@pass_cli
def batches_command(context: CliContext, status: str | None, limit: int, as_json: bool) -> None:
    """List recent batches, newest first."""
    with context.store.read() as session:
        batches = list_batches(session, limit=limit, status=status)
    if as_json:
        print_json([
            {"id": batch.id, "name": batch.name, "kind": batch.kind,
             "status": batch.status.value, "total": batch.total,
             "created_at": iso_time(batch.created_at)}
            for batch in batches
        ])
        return
    widths = (36, 9, 21, 9, 23)
    click.echo("  ".join(pad(title, width) for title, width in zip(
        ("ID", "KIND", "STATUS", "TOTAL", "CREATED"), widths, strict=True)) + "  NAME")
    for batch in batches:
        cells = (batch.id, batch.kind, batch.status.value, str(batch.total),
                 format_time(batch.created_at))
        line = "  ".join(pad(cell, width) for cell, width in zip(cells, widths, strict=True))
        click.echo(f"{line}  {one_line(batch.name or '')}".rstrip())


def _decisions(session: Session, batch: Batch) -> dict[str, int] | None:
    """Return result counts per moderation decision: stored once finished, else counted."""
    if batch.kind != "moderate":
        return None
    if batch.counts is not None and batch.decisions is not None:
        return dict(batch.decisions)
    return decision_counts(session, batch.id)


def batch_status(session: Session, batch: Batch) -> dict[str, Any]:
    """Return a batch's status, job counts per status, progress, times and throughput."""
    # A finished batch stores its final counts (reopening it clears them), so only an open
    # batch needs a count over all its job rows.
    counts = dict(batch.counts) if batch.counts is not None else job_counts(session, batch.id)
    done = sum(count for name, count in counts.items() if JobStatus(name).terminal)
    total = sum(counts.values())
    elapsed_s = throughput = None
    if batch.started_at is not None and batch.finished_at is not None:
        elapsed_s = (batch.finished_at - batch.started_at).total_seconds()
        processed = counts["succeeded"] + counts["failed"] + counts["skipped"]
        throughput = processed / elapsed_s if elapsed_s > 0 else None
    return {
        "id": batch.id,
        "name": batch.name,
        "kind": batch.kind,
        "checkpoint": batch.checkpoint,
        "status": batch.status.value,
        "priority": batch.priority.value,
        "total": batch.total,
        "rejected": batch.rejected,
        "counts": counts,
        "done": done,
        "progress": done / total if total else 1.0,
        "decisions": _decisions(session, batch),
        "params": batch.params,
        "source_name": batch.source_name,
        "submitted_by": batch.submitted_by,
        "created_at": iso_time(batch.created_at),
        "started_at": iso_time(batch.started_at),
        "finished_at": iso_time(batch.finished_at),
        "elapsed_s": elapsed_s,
        "throughput_per_s": throughput,
    }


@click.command("status")
@click.argument("batch_id", metavar="BATCH")
@json_option
@pass_cli
def status_command(context: CliContext, batch_id: str, as_json: bool) -> None:
    """Show a batch's progress: job counts per status, times and throughput."""
    with context.store.read() as session:
        batch = get_batch(session, batch_id)
        summary = batch_status(session, batch)
        times = batch.created_at, batch.started_at, batch.finished_at
    if as_json:
        print_json(summary)
        return
    counts = "  ".join(f"{name} {count}" for name, count in summary["counts"].items())
    lines = [
        f"Batch       {summary['id']}" + (f"  ({summary['name']})" if summary["name"] else ""),
        f"Kind        {summary['kind']}",
        f"Checkpoint  {summary['checkpoint'] or '- (none configured at submit; jobs show records each one)'}",
        f"Status      {summary['status']}  {summary['progress']:.1%} "
        f"({summary['done']}/{summary['total']} jobs finished)",
        f"Jobs        {counts}",
        f"Rejected    {summary['rejected']} input rows",
    ]
    stored = sum(summary["counts"].values())
    if stored < summary["total"]:
        # The producer stores rows in transactions of a few thousand, so a killed submit
        # stops between two of them. Submitting the same input again stores the rest.
        lines.append(
            f"Incomplete  only {stored} of {summary['total']} jobs are stored: the submit was "
            "interrupted; submit the same input again to store and publish the rest"
        )
    if summary["decisions"]:
        decisions = "  ".join(f"{name} {count}" for name, count in sorted(summary["decisions"].items()))
        lines.append(f"Decisions   {decisions}")
    lines += [
        f"Created     {format_time(times[0])}",
        f"Started     {format_time(times[1])}",
        f"Finished    {format_time(times[2])}",
    ]
    if summary["throughput_per_s"] is not None:
        lines.append(f"Throughput  {summary['throughput_per_s']:.2f} jobs/s "
                     f"over {summary['elapsed_s']:.1f} s")
    click.echo(printable("\n".join(lines)))


@click.command("results")
@click.argument("batch_id", metavar="BATCH")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]),
              help="Only jobs with this status.")
@click.option("--decision", help="Only moderation results with this decision (allow, review, block).")
@click.option("--category", help="Only moderation results scored in this category.")
@click.option("--min-score", type=float,
              help="With --category: only results whose category score is at least this.")
@click.option("--format", "format_name", type=click.Choice(FORMATS),
              help="Output format [default: from the --output suffix (.csv, .jsonl), else table].")
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file (replaced atomically once complete) instead of stdout.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many results.")
@click.option("--excel", is_flag=True,
              help="CSV only: start with a UTF-8 byte order mark so spreadsheets detect UTF-8.")
@click.option("--no-formula-escape", is_flag=True,
              help="CSV only: do not prefix ' to cells that start with = + - @ tab or CR.")
@pass_cli
def results_command(
    context: CliContext,
    batch_id: str,
    status: str | None,
    decision: str | None,
    category: str | None,
    min_score: float | None,
    format_name: str | None,
    output: Path | None,
    limit: int | None,
    excel: bool,
    no_formula_escape: bool,
) -> None:
    """Stream a batch's results in input order as a table, JSONL or CSV."""
    if format_name is None:
        suffix = output.suffix.lower() if output is not None else ""
        format_name = _FORMAT_BY_SUFFIX.get(suffix, "table")
    if min_score is not None and category is None:
        raise click.UsageError("--min-score needs --category to say which score to compare")
    if (excel or no_formula_escape) and format_name != "csv":
        raise click.UsageError("--excel and --no-formula-escape apply to --format csv only")
    if category is not None:
        from llmjobs.worker.taxonomy import CATEGORIES

        if category not in CATEGORIES:
            raise click.BadParameter(
                f"{category!r} is not a taxonomy category; expected one of "
                f"{', '.join(sorted(CATEGORIES))} (see docs/taxonomy.md)",
                param_hint="--category",
            )
    if decision is not None and decision not in ("allow", "review", "block"):
        raise click.BadParameter(f"{decision!r}: expected allow, review or block",
                                 param_hint="--decision")

    filters = ResultFilter(status=status, decision=decision, category=category, min_score=min_score)
    with context.store.read() as session:
        batch = get_batch(session, batch_id)
        if batch.kind != "moderate" and (category is not None or decision is not None):
            raise click.UsageError(
                f"--category and --decision apply to moderate batches only, "
                f"but batch {batch.id} is a {batch.kind} batch"
            )
        categories = batch_categories(session, batch.id) if format_name == "csv" else []
        encoding = "utf-8-sig" if excel else "utf-8"
        with _open_output(output, encoding) as stream:
            writer = create_writer(format_name, stream, batch.kind, categories,
                                   escape_formulas=not no_formula_escape)
            written = 0
            for row in iter_export_rows(session, batch.id, batch.kind, filters, limit):
                writer.write(row)
                written += 1
            writer.close()
    if output is not None:
        click.echo(f"Wrote {written} results of batch {batch.id} to {output}.", err=True)


@contextmanager
def _open_output(path: Path | None, encoding: str) -> Iterator[TextIO]:
    """Open the export target, writing stdout as UTF-8 whatever the locale's encoding is."""
    if path is not None:
        with atomic_output(path, encoding=encoding, newline="") as stream:
            yield stream
        return
    sys.stdout.flush()
    wrapper = io.TextIOWrapper(sys.stdout.buffer, encoding=encoding, newline="")
    try:
        yield wrapper
        wrapper.flush()
    except BrokenPipeError:
        # The reader (`head`, for one) closed the pipe, so stop quietly as Unix filters do.
        # With stdout on /dev/null, the flush at interpreter exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    finally:
        # Detach so that closing this wrapper later does not close the process's stdout.
        wrapper.detach()


@click.group("jobs")
def jobs_group() -> None:
    """Inspect single jobs."""


def find_job(session: Session, reference: str) -> Job:
    """Return the job named by a numeric job id or by BATCH:ITEM_ID."""
    if reference.isdigit():
        return get_job(session, int(reference))
    batch_id, separator, item_id = reference.partition(":")
    if not separator or not batch_id or not item_id:
        raise click.BadParameter(
            f"{reference!r} is neither a numeric job id nor BATCH:ITEM_ID", param_hint="JOB"
        )
    return get_job_by_item(session, get_batch(session, batch_id).id, item_id)


def job_details(session: Session, job: Job) -> dict[str, Any]:
    """Return a job, its result, its moderation scores and its audit events as one object."""
    result = get_result(session, job.id)
    events = job_audit_events(session, job)
    return {
        "job": {
            "id": job.id, "batch_id": job.batch_id, "item_id": job.item_id, "seq": job.seq,
            "line": job.line, "input": job.input_text, "input_sha256": job.input_sha256,
            "params": job.params, "priority": job.priority, "status": job.status.value,
            "attempts": job.attempts, "lease_owner": job.lease_owner,
            "lease_expires_at": iso_time(job.lease_expires_at),
            "error": ({"code": job.error_code, "message": job.error_message}
                      if job.error_code or job.error_message else None),
            "created_at": iso_time(job.created_at), "started_at": iso_time(job.started_at),
            "finished_at": iso_time(job.finished_at),
        },
        "result": None if result is None else {
            "output": result.output, "decision": result.decision,
            "checkpoint_id": result.checkpoint_id,
            "checkpoint_revision": result.checkpoint_revision,
            "input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
            "latency_ms": result.latency_ms, "worker_host": result.worker_host,
            "device": result.device, "cached": result.cached,
            "created_at": iso_time(result.created_at),
        },
        "scores": category_scores(session, [job.id]).get(job.id, {}),
        "audit": [
            {"id": event.id, "time": iso_time(event.created_at), "actor": event.actor,
             "action": event.action, "job_id": event.job_id, "details": event.details}
            for event in events
        ],
    }


@jobs_group.command("show")
@click.argument("reference", metavar="JOB")
@json_option
@pass_cli
def jobs_show(context: CliContext, reference: str, as_json: bool) -> None:
    """Show one job (a numeric id, or BATCH:ITEM_ID): input, result and audit trail."""
    with context.store.read() as session:
        details = job_details(session, find_job(session, reference))
    if as_json:
        print_json(details)
        return
    click.echo(printable("\n".join(_job_lines(details))))


def _job_lines(details: dict[str, Any]) -> list[str]:
    job, result = details["job"], details["result"]
    error = job["error"]
    lines = [
        f"Job         {job['id']}  (batch {job['batch_id']}, item {job['item_id']!r})",
        f"Status      {job['status']}  attempts {job['attempts']}",
        f"Error       {error['code']}: {error['message']}" if error else "Error       -",
        f"Params      {_compact(job['params'])}",
        f"Created     {job['created_at']}",
        f"Started     {job['started_at'] or '-'}",
        f"Finished    {job['finished_at'] or '-'}",
        "Input:",
        _indent(job["input"]),
    ]
    if result is None:
        lines.append("Result      -")
    else:
        lines += [
            "Result:",
            _indent(_compact(result["output"])),
            f"Checkpoint  {result['checkpoint_id'] or '-'} @ {result['checkpoint_revision'] or '-'}",
            f"Tokens      {_or_dash(result['input_tokens'])} in, "
            f"{_or_dash(result['output_tokens'])} out",
            f"Latency     {_milliseconds(result['latency_ms'])}"
            + ("  (from cache)" if result["cached"] else ""),
            f"Worker      {result['worker_host'] or '-'} on {result['device'] or '-'}",
        ]
    if details["scores"]:
        scores = "  ".join(f"{name} {score:.3f}" for name, score in sorted(details["scores"].items()))
        lines.append(f"Scores      {scores}")
    lines.append("Audit trail:")
    for event in details["audit"]:
        lines.append(f"  {event['time']}  {event['actor']}  {event['action']}  "
                     f"{_compact(event['details'])}")
    return lines


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))


def register(cli: click.Group) -> None:
    """Add this module's commands to the group."""
    cli.add_command(batches_command)
    cli.add_command(status_command)
    cli.add_command(results_command)
    cli.add_command(jobs_group)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
