"""`llmjobs checkpoints`: build tiny random checkpoints and show what each kind resolves to."""

from __future__ import annotations

from pathlib import Path

import click

from llmjobs.cli.common import CliContext, json_option, pass_cli, print_json


def register(cli: click.Group) -> None:
    """Add this module's commands to the group."""
    cli.add_command(checkpoints)


@click.group()
def checkpoints() -> None:
    """Build and inspect the checkpoints that workers run."""


@checkpoints.command("make-tiny")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@json_option
def make_tiny(directory: Path, as_json: bool) -> None:
    """Build tiny random-weight checkpoints into DIRECTORY.

    Their outputs are meaningless: they exist so that tests and demos run anywhere without
    downloads. One folder per adapter: a multi-label classifier (moderate), a Marian en->zh
    pair model and an M2M100 model with NLLB language codes (translate), and a Qwen2 chat
    model (write). Point LLMJOBS_CHECKPOINT_<KIND> at a folder to use it.
    """
    from llmjobs.checkpoints.tiny import build_tiny_checkpoints

    built = build_tiny_checkpoints(directory)
    if as_json:
        print_json({name: str(path) for name, path in built.items()})
        return
    for name, path in built.items():
        click.echo(f"{name:<14} {path}")
    click.echo("These checkpoints have random weights: their outputs are meaningless.", err=True)


@checkpoints.command("list")
@json_option
@pass_cli
def list_checkpoints(context: CliContext, as_json: bool) -> None:
    """Show the checkpoint each kind resolves to, and where that setting comes from."""
    from llmjobs.config import KINDS
    from llmjobs.worker.kinds.registry import resolve_checkpoint

    rows = []
    for kind in KINDS:
        source, tiny = resolve_checkpoint(kind, context.settings)
        origin = "tiny fallback (meaningless output)" if tiny else "configured"
        built = Path(source).is_dir() if tiny else None
        rows.append({"kind": kind, "checkpoint": source, "origin": origin, "built": built})
    if as_json:
        print_json(rows)
        return
    for row in rows:
        note = row["origin"] if row["built"] in (None, True) else f"{row['origin']}, built on first use"
        click.echo(f"{row['kind']:<10} {row['checkpoint']}  [{note}]")
