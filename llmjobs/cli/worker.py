"""`llmjobs worker`: start one worker process per GPU, or one on the CPU."""

from __future__ import annotations

import click

from llmjobs.cli.common import CliContext, pass_cli
from llmjobs.config import KINDS
from llmjobs.embedded import EmbeddedRedis
from llmjobs.errors import WorkerError


def parse_kinds(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise click.BadParameter(
            f"{text!r}: expected a comma-separated list of {', '.join(KINDS)}", param_hint="--kinds"
        )
    return kinds


@click.command("worker")
@click.option("--gpus", help="GPU indexes, one worker process each: 0,1 or all. "
              "Default: every visible GPU, else the CPU.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Run on the CPU even when GPUs are present, or require CUDA.")
@click.option("--kinds", "kinds_text", default=",".join(KINDS), show_default=True,
              help="Job kinds this worker serves; their checkpoints load once, at start.")
@click.option("--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Lowest level of log lines written to stderr.")
@click.option("--no-restart", is_flag=True,
              help="Do not start a worker process again after it crashed or hung.")
@pass_cli
def worker_command(context: CliContext, gpus: str | None, device: str, kinds_text: str,
                   loglevel: str, no_restart: bool) -> None:
    """Run workers until SIGTERM or Ctrl-C; each finishes its micro-batch before it exits."""
    from llmjobs.worker.launcher import Launcher, parse_gpus, plan_workers

    if gpus and device == "cpu":
        raise click.UsageError("--gpus and --device cpu exclude each other; pass one of them")
    kinds = parse_kinds(kinds_text)
    settings = context.settings
    try:
        gpu_indexes = parse_gpus(gpus) if gpus else None
    except WorkerError as error:
        raise click.BadParameter(str(error), param_hint="--gpus") from None
    specs = plan_workers(gpu_indexes, device, kinds)
    if settings.broker_url:
        launcher = Launcher(specs, settings.broker_url, loglevel.upper(), settings.config_file,
                            restart=not no_restart)
        raise SystemExit(launcher.run())

    # The private redis-server: restarted by this launcher if it dies while workers use it.
    server = EmbeddedRedis(settings.home)
    server.acquire()
    try:
        launcher = Launcher(specs, server.url, loglevel.upper(), settings.config_file,
                            restart=not no_restart, keepalive=server.ensure_running)
        status = launcher.run()
    finally:
        server.release()
    raise SystemExit(status)


def register(cli: click.Group) -> None:
    cli.add_command(worker_command)
