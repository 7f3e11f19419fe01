"""Query timings of the orchestration benchmark, and the PostgreSQL database per run.

The moderation kind has no input that fails on its own: empty input is skipped and long
input is truncated. So failures are marked afterwards. Every job whose seq ends in 07 (1%)
is set to failed with error code `bench_marked`, and its result and scores are deleted.
Then `finalise_batch` finishes the batch again, so its stored counts match its jobs.

Each query runs the code that the CLI command runs, in this process, so that process
start-up does not hide the query cost: `iter_export_rows` with the filters of
`llmjobs results` and a limit of one page, and `batch_status` of `llmjobs status`.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE_ROWS = 100
REPEATS = 7
MARKED_ERROR = "bench_marked"


@dataclass
class QueryReport:
    items: int
    batch_id: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    plans: dict[str, list[str]] = field(default_factory=dict)


def mark_failures(store: Any, batch_id: str) -> int:
    """Mark 1% of the batch's jobs failed and finish the batch again; return how many."""
    from sqlalchemy import delete, select, update

    from llmjobs.models.base import BatchStatus, JobStatus
    from llmjobs.models.lifecycle import finalise_batch
    from llmjobs.models.tables import Batch, CategoryScore, Job, Result

    with store.write() as session:
        marked = select(Job.id).where(Job.batch_id == batch_id, Job.seq % 100 == 7)
        session.execute(delete(CategoryScore).where(CategoryScore.job_id.in_(marked)))
        session.execute(delete(Result).where(Result.job_id.in_(marked)))
        count = session.execute(
            update(Job)
            .where(Job.batch_id == batch_id, Job.seq % 100 == 7)
            .values(status=JobStatus.FAILED, error_code=MARKED_ERROR,
                    error_message="marked failed by the orchestration benchmark")
        ).rowcount
        session.execute(update(Batch).where(Batch.id == batch_id)
                        .values(status=BatchStatus.RUNNING, counts=None, finished_at=None))
        finalise_batch(session, batch_id, "bench")
    return count


def score_threshold(store: Any, batch_id: str, category: str) -> float:
    """Return the 90th percentile of the category's scores, so about 10% of jobs match."""
    from sqlalchemy import select

    from llmjobs.models.tables import CategoryScore

    with store.read() as session:
        scores = sorted(session.scalars(
            select(CategoryScore.score)
            .where(CategoryScore.batch_id == batch_id, CategoryScore.category == category)
        ).all())
    return round(scores[int(len(scores) * 0.9)], 4)


def run_queries(kept: dict[int, tuple[Path, str]]) -> list[QueryReport]:
    """Time the queries on each kept batch; the threshold comes from the smallest batch."""
    from llmjobs.models.queries import batch_categories
    from llmjobs.models.session import Store

    reports = []
    category: str | None = None
    threshold: float | None = None
    for items in sorted(kept):
        path, batch_id = kept[items]
        store = Store(f"sqlite:///{path}")
        mark_failures(store, batch_id)
        if category is None:
            with store.read() as session:
                category = batch_categories(session, batch_id)[0]
            threshold = score_threshold(store, batch_id, category)
        assert threshold is not None
        reports.append(time_queries(store, items, batch_id, category, threshold))
        store.dispose()
    return reports


def time_queries(store: Any, items: int, batch_id: str, category: str,
                 threshold: float) -> QueryReport:
    from llmjobs.cli.queries import batch_status
    from llmjobs.export import iter_export_rows
    from llmjobs.models.queries import ResultFilter, get_batch

    report = QueryReport(items, batch_id)

    def results(filters: ResultFilter) -> Callable[[Any], int]:
        return lambda session: sum(
            1 for _ in iter_export_rows(session, batch_id, "moderate", filters, PAGE_ROWS)
        )

    def status(session: Any) -> int:
        summary = batch_status(session, get_batch(session, batch_id))
        return int(summary["counts"]["failed"])

    queries = {
        "results --status failed": results(ResultFilter(status="failed")),
        f"results --category {category} --min-score {threshold}":
            results(ResultFilter(category=category, min_score=threshold)),
        "status": status,
    }
    for name, query in queries.items():
        timings = []
        for repeat in range(REPEATS + 1):
            with store.read() as session, capture_statements(store.engine) as statements:
                started = time.perf_counter()
                report.rows[name] = query(session)
                elapsed_ms = (time.perf_counter() - started) * 1000
            # The first run warms the page cache and is left out.
            if repeat:
                timings.append(elapsed_ms)
            else:
                report.plans[name] = explain(store, statements)
        report.timings_ms[name] = statistics.median(timings)
    return report


@contextmanager
def capture_statements(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    from sqlalchemy import event

    statements: list[tuple[str, Any]] = []

    def before(_connection: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def explain(store: Any, statements: list[tuple[str, Any]]) -> list[str]:
    """Return SQLite's query plan of each statement, one line per plan step."""
    lines = []
    seen = set()
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        for statement, parameters in statements:
            if statement in seen:
                continue
            seen.add(statement)
            plan = cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
            lines.append(" ".join(statement.split())[:160])
            lines += [f"    {row[-1]}" for row in plan]
    finally:
        connection.close()
    return lines


def query_table(reports: list[QueryReport]) -> list[str]:
    smallest, largest = reports[0], reports[-1]
    lines = [
        f"| query | N = {smallest.items:,} ms | N = {largest.items:,} ms | ratio | rows |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, small_ms in smallest.timings_ms.items():
        large_ms = largest.timings_ms[name]
        lines.append(f"| `{name}` | {small_ms:.1f} | {large_ms:.1f} | "
                     f"{large_ms / small_ms:.2f} | {largest.rows[name]} |")
    lines += ["", f"Query plans on N = {largest.items:,} (SQLite EXPLAIN QUERY PLAN):", "", "```"]
    for name, plan in largest.plans.items():
        lines.append(f"# {name}")
        lines += plan
    lines.append("```")
    return lines


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server, migrate it, yield its URL, then drop it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from llmjobs.models.migrate import upgrade
    from llmjobs.models.session import normalise_database_url

    base = make_url(normalise_database_url(server_url))
    name = f"llmjobs_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
