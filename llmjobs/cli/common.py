"""Shared parts of every command: settings loading, the store, output helpers, exit codes."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from llmjobs.config import Settings
from llmjobs.models.session import Store

# Exit codes, documented in the README: 0 success, 1 the work failed, 2 bad usage or input.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# 128 + SIGINT, as shells report a command ended by Ctrl-C.
EXIT_INTERRUPTED = 130


@dataclass
class CliContext:
    """Settings for this invocation, and a store opened on first use."""

    config_file: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _store: Store | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load(config_file=self.config_file, **self.overrides)
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()


pass_cli = click.make_pass_decorator(CliContext)


def json_option(function: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")(
        function
    )


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def plural(count: int, noun: str) -> str:
    """Return "1 job" or "3 jobs": the count and the noun, with an s unless the count is 1."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def is_terminal() -> bool:
    return sys.stderr.isatty()
