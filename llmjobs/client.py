"""The Python API: submit work, wait for it, read its status and iterate its results.

    from llmjobs.client import Client

    with Client() as client:                       # settings from LLMJOBS_* and config.toml
        outcome = client.submit("comments.jsonl", kind="moderate")
        status = client.wait(outcome.batch_id)
        for row in client.results(outcome.batch_id, status="succeeded"):
            print(row.item_id, row.output)

The CLI commands are thin wrappers over these methods. A Client opened without
LLMJOBS_BROKER_URL starts a private redis-server for as long as it stays open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmjobs.config import Settings
from llmjobs.errors import LlmjobsError
from llmjobs.models import queries
from llmjobs.models.base import BatchStatus
from llmjobs.models.session import Store

if TYPE_CHECKING:
    from celery import Celery

    from llmjobs.producer.submit import SubmitOptions, SubmitOutcome


@dataclass(frozen=True)
class BatchView:
    """A snapshot of a batch's progress."""

    batch_id: str
    name: str | None
    kind: str
    status: str
    total: int
    rejected: int
    counts: dict[str, int]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    checkpoint: str | None

    @property
    def done(self) -> int:
        return sum(self.counts[status] for status in ("succeeded", "failed", "skipped", "cancelled"))

    @property
    def terminal(self) -> bool:
        return BatchStatus(self.status).terminal

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(self.started_at.tzinfo)
        return max(0.0, (end - self.started_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "total": self.total,
            "rejected": self.rejected,
            "counts": self.counts,
            "checkpoint": self.checkpoint,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "elapsed_s": self.elapsed_s,
        }


class Client:
    """Entry point of the Python API; use it as a context manager."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or Settings.load()
        self._store = store
        self._stack = ExitStack()
        self._broker_url: str | None = None
        self._app: Celery | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        if self._store is not None:
            self._store.dispose()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.database_url)
        return self._store

    @property
    def broker_url(self) -> str:
        """The broker URL; starts the private redis-server on first use when none is configured."""
        if self._broker_url is None:
            from llmjobs.embedded import broker_url_for

            self._broker_url = self._stack.enter_context(broker_url_for(self.settings))
        return self._broker_url

    @property
    def celery_app(self) -> Celery:
        if self._app is None:
            from llmjobs.broker import create_celery_app

            self._app = create_celery_app(self.settings, self.broker_url)
        return self._app

    def submit(self, path: str | Path, kind: str,
               options: SubmitOptions | None = None, **fields: Any) -> SubmitOutcome:
        """Validate and store a file's rows as jobs, then publish them (see `llmjobs submit`)."""
        from llmjobs.producer.submit import SubmitOptions, submit_file

        options = options or SubmitOptions(**fields)
        return submit_file(self.settings, self.store, self.celery_app, Path(path), kind, options)

    def submit_rows(self, rows: Iterable[Mapping[str, Any]], kind: str,
                    options: SubmitOptions | None = None, **fields: Any) -> SubmitOutcome:
        """Like submit, for rows already in memory (dicts shaped like JSONL rows)."""
        from llmjobs.producer.submit import SubmitOptions, submit_rows

        options = options or SubmitOptions(**fields)
        return submit_rows(self.settings, self.store, self.celery_app, rows, kind, options)

    def status(self, batch_id: str) -> BatchView:
        with self.store.read() as session:
            batch = queries.get_batch(session, batch_id)
            counts = queries.job_counts(session, batch.id)
            return BatchView(
                batch_id=batch.id, name=batch.name, kind=batch.kind,
                status=BatchStatus(batch.status).value, total=batch.total,
                rejected=batch.rejected, counts=counts, created_at=batch.created_at,
                started_at=batch.started_at, finished_at=batch.finished_at,
                checkpoint=batch.checkpoint,
            )

    def wait(
        self,
        batch_id: str,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_progress: Callable[[BatchView], None] | None = None,
        keep_waiting: Callable[[], bool] = lambda: True,
    ) -> BatchView:
        """Poll until the batch reaches a terminal status; raise LlmjobsError on timeout.

        keep_waiting lets a caller stop early, for example when the worker it started died.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            view = self.status(batch_id)
            if on_progress is not None:
                on_progress(view)
            if view.terminal:
                return view
            if not keep_waiting():
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise LlmjobsError(
                    f"batch {batch_id} is still {view.status} after {timeout_s:.0f} s "
                    f"({view.done} of {view.total} jobs done)"
                )
            time.sleep(poll_s)

    def results(
        self,
        batch_id: str,
        status: str | None = None,
        decision: str | None = None,
        category: str | None = None,
        min_score: float | None = None,
        limit: int | None = None,
    ) -> Iterator[queries.ResultRow]:
        """Yield the batch's jobs with their outputs, in input order, in constant memory."""
        filters = queries.ResultFilter(status=status, decision=decision, category=category,
                                       min_score=min_score)
        with self.store.read() as session:
            batch = queries.get_batch(session, batch_id)
            yield from queries.iter_results(session, batch.id, filters, limit=limit)
