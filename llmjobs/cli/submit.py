"""`llmjobs submit FILE`: validate a file, store its rows as jobs and publish them to Redis.

Exit codes: 0 when the batch is stored and published (or already existed), 1 when the
jobs are stored but Redis could not be reached, 2 for invalid options or input rows.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from llmjobs.broker import create_celery_app
from llmjobs.cli.common import EXIT_FAILED, CliContext, is_terminal, pass_cli, plural, print_json
from llmjobs.config import KINDS
from llmjobs.embedded import broker_url_for
from llmjobs.errors import ValidationFailed
from llmjobs.models.base import Priority
from llmjobs.producer import SubmitOptions, SubmitOutcome, submit_file
from llmjobs.producer.formats import FORMATS
from llmjobs.producer.records import Rejection

_OPTION_NAMES = (
    "format", "encoding", "text_column", "id_column", "delimiter", "header", "target_lang",
    "source_lang", "template", "template_language", "max_tokens", "temperature", "top_p", "seed",
    "thresholds",
    "priority", "chunk_size", "name", "actor", "idempotency_key", "new", "skip_invalid",
    "errors_file",
)

_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option("--kind", required=True, type=click.Choice(KINDS),
                 help="Job kind: moderate, translate or write."),
    click.option("--format", "format", type=click.Choice(FORMATS), default="auto",
                 show_default=True,
                 help="Input format; auto decides from the file suffix and first line."),
    click.option("--encoding", metavar="CODEC",
                 help="Input encoding (e.g. gbk, big5). Default: a byte order mark, else "
                      "UTF-8, else GB18030 for CSV and TSV."),
    click.option("--text-column", metavar="NAME|N",
                 help="CSV/TSV column holding the text, by header name or 1-based number "
                      "[default: the 'text' column]."),
    click.option("--id-column", metavar="NAME|N",
                 help="CSV/TSV column holding item ids [default: the header's 'id' column, "
                      "else record numbers]."),
    click.option("--delimiter", metavar="CHAR",
                 help="CSV/TSV delimiter: one character, or tab, comma, semicolon, pipe."),
    click.option("--header/--no-header", default=None,
                 help="Whether the first CSV/TSV row names the columns [default: yes, unless "
                      "--text-column is a number]."),
    click.option("--target-lang", metavar="CODE",
                 help="translate: target language (zh, zh-Hant, en, ja, eng_Latn, ...), "
                      "unless rows give target_lang."),
    click.option("--source-lang", metavar="CODE",
                 help="translate: source language [default: detected per row]."),
    click.option("--template", metavar="NAME[@VERSION]",
                 help="write: template, e.g. headline or headline@1 [default: rows give "
                      "template, prompt or messages]."),
    click.option("--template-lang", "template_language", metavar="CODE",
                 help="write: language of the template version (zh or en) [default: en]."),
    click.option("--max-tokens", type=click.IntRange(min=1),
                 help="write: maximum new tokens per item."),
    click.option("--temperature", type=click.FloatRange(0, 2),
                 help="write: sampling temperature, 0 to 2."),
    click.option("--top-p", type=click.FloatRange(0, 1, min_open=True),
                 help="write: nucleus sampling probability."),
    click.option("--seed", type=click.IntRange(min=0), help="write: sampling seed."),
    click.option("--threshold", "thresholds", multiple=True, metavar="CATEGORY=REVIEW[:BLOCK]",
                 callback=lambda _ctx, _param, values: parse_threshold_options(values),
                 help="moderate: scores at or above REVIEW give review, at or above BLOCK give "
                      "block, for one taxonomy category (e.g. hate=0.4:0.7); repeatable."),
    click.option("--priority", type=click.Choice([p.value for p in Priority]), default="normal",
                 show_default=True, help="Queue priority of the batch's chunks."),
    click.option("--chunk-size", type=click.IntRange(min=1),
                 help="Job ids per broker message [default: the chunk_size setting, 64]."),
    click.option("--name", help="A name for the batch, shown by `llmjobs batches`."),
    click.option("--actor", help="Who submits, for the audit trail [default: the OS user]."),
    click.option("--idempotency-key", metavar="KEY",
                 help="Submitting again with the same key returns the existing batch "
                      "[default: derived from the file's sha256, the kind and the options]."),
    click.option("--new", is_flag=True,
                 help="Create a new batch even if this input was submitted before."),
    click.option("--skip-invalid", is_flag=True,
                 help="Store the valid rows and record invalid ones, instead of failing."),
    click.option("--errors-file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Write every invalid row to this file as JSON Lines."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts."),
)


def parse_threshold_options(values: tuple[str, ...]) -> dict[str, dict[str, float]] | None:
    """Parse repeated --threshold CATEGORY=REVIEW[:BLOCK] options into the batch parameter."""
    thresholds: dict[str, dict[str, float]] = {}
    for value in values:
        category, _, bounds = value.partition("=")
        review, _, block = bounds.partition(":")
        try:
            parsed = {"review": float(review)}
            if block:
                parsed["block"] = float(block)
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: expected CATEGORY=REVIEW[:BLOCK] with numbers from 0 to 1, "
                "e.g. hate=0.4:0.7", param_hint="--threshold",
            ) from None
        thresholds[category.strip()] = parsed
    return thresholds or None


def submit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add every submit option to a click command, passed on as kind, options and as_json.

    The command receives `kind: str`, `options: SubmitOptions` and `as_json: bool` in
    place of the separate option values, so `llmjobs submit` and `llmjobs run` share them.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **values: Any) -> Any:
        fields = {name: values.pop(name) for name in _OPTION_NAMES}
        values["options"] = SubmitOptions(**fields, progress=_progress_printer())
        return command(*args, **values)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


@click.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@submit_options
@pass_cli
def submit_command(
    context: CliContext, file: Path, kind: str, options: SubmitOptions, as_json: bool
) -> None:
    """Validate FILE, store its rows as jobs of one batch and queue them for workers.

    FILE is JSON Lines (one object per line with "text" and optional "id", ...), CSV or
    TSV, or an OpenAI batch request file (write only). Nothing is stored when a row is
    invalid, unless --skip-invalid is given.
    """
    settings = context.settings
    with broker_url_for(settings) as url:
        app = create_celery_app(settings, url)
        try:
            outcome = submit_file(settings, context.store, app, file, kind, options)
        except ValidationFailed as error:
            report_rejections(error, as_json)
            raise
        finally:
            app.close()
            if isinstance(options.progress, _ProgressLine):
                options.progress.finish()
    print_outcome(outcome, as_json)
    if not outcome.published:
        sys.exit(EXIT_FAILED)


def report_rejections(error: ValidationFailed, as_json: bool) -> None:
    """Print the first invalid rows (stdout as JSON with --json, else stderr)."""
    rejections = [row for row in error.rejections if isinstance(row, Rejection)]
    if as_json:
        print_json({
            "batch_id": None,
            "error": str(error),
            "invalid_rows": error.total,
            "rejections": [row.to_dict() for row in rejections],
        })
        return
    for row in rejections:
        click.echo(row.describe(), err=True)
    if error.total > len(rejections):
        click.echo(
            f"... and {error.total - len(rejections)} more invalid rows; "
            "write all of them with --errors-file PATH",
            err=True,
        )


def print_outcome(outcome: SubmitOutcome, as_json: bool) -> None:
    """Print the batch id and counts, or the whole outcome as JSON."""
    if as_json:
        print_json(outcome.to_dict())
        return
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    if outcome.existing:
        click.echo(
            f"Batch {outcome.batch_id} already exists for this input and these options "
            f"({outcome.jobs} jobs, {outcome.rejected} rejected rows); "
            "pass --new to submit it again as another batch."
        )
    else:
        click.echo(
            f"Submitted batch {outcome.batch_id}: {plural(outcome.jobs, 'job')} in "
            f"{plural(outcome.chunks, 'chunk')}, {plural(outcome.rejected, 'rejected row')}."
        )
    if outcome.existing and outcome.chunks:
        click.echo(f"Published its {outcome.chunks} unpublished chunks.")
    if not outcome.published:
        click.echo(
            f"error: the jobs are stored, but publishing to Redis failed: "
            f"{outcome.publish_error}\nRun `llmjobs requeue {outcome.batch_id}` once Redis "
            "is back.",
            err=True,
        )


class _ProgressLine:
    """Rewrites one stderr line with the current phase and row count."""

    def __init__(self) -> None:
        self.printed = False

    def __call__(self, phase: str, rows: int) -> None:
        click.echo(f"\r{phase}: {rows} rows   ", nl=False, err=True)
        self.printed = True

    def finish(self) -> None:
        if self.printed:
            click.echo("", err=True)
            self.printed = False


def _progress_printer() -> _ProgressLine | None:
    """Return a progress callback on a terminal, or None so pipes stay quiet."""
    return _ProgressLine() if is_terminal() else None


def register(cli: click.Group) -> None:
    """Add this module's commands to the group."""
    cli.add_command(submit_command)
