"""The `llmjobs` command: a click group whose subcommands live one family per module."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from llmjobs import __version__
from llmjobs.cli.common import EXIT_FAILED, EXIT_USAGE, CliContext
from llmjobs.errors import (
    ConfigError,
    LlmjobsError,
    NotFoundError,
    PipelineError,
    ProducerError,
)

# Errors caused by what the user typed or handed in; everything else means the work failed.
_USAGE_ERRORS = (ConfigError, ProducerError, NotFoundError, PipelineError)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="llmjobs")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="LLMJOBS_CONFIG",
    help="TOML config file (default: $LLMJOBS_HOME/config.toml when it exists).",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level for messages printed to stderr.",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, log_level: str) -> None:
    """Run language models over bulk content: moderate, translate and write."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    context = CliContext(config_file=config_file)
    ctx.obj = context
    ctx.call_on_close(context.close)


def _register_commands() -> None:
    # Imported here so that `llmjobs --help` stays fast and no module has import side effects.
    from llmjobs.cli import checkpoints, db, operations, pipeline, queries, run, submit, worker

    for module in (checkpoints, db, operations, pipeline, queries, run, submit, worker):
        module.register(cli)


def main() -> None:
    """Console entry point: map llmjobs errors to messages and exit codes."""
    _register_commands()
    try:
        cli.main(standalone_mode=False, prog_name="llmjobs")
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_USAGE if error.exit_code == 2 else error.exit_code)
    except _USAGE_ERRORS as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_USAGE)
    except LlmjobsError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
