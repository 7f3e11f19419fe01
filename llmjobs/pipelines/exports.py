"""Exports of a run: one row per surviving item, with its original text and every step's output.

An item survives when it reached the last step and succeeded there. Rows are built by
walking every step's batch in input order at once: each step's items are a subsequence
of the previous step's, in the same order, so memory stays constant.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    insert,
)

from llmjobs.errors import PipelineError
from llmjobs.models.queries import ResultRow
from llmjobs.models.session import normalise_database_url
from llmjobs.pipelines.spec import ExportSpec, PipelineSpec

log = logging.getLogger(__name__)

# Per kind, the output keys that become CSV columns (named "<step>.<key>").
CSV_KEYS: dict[str, tuple[str, ...]] = {
    "moderate": ("decision", "flagged", "top_category", "categories"),
    "translate": ("text", "source_lang", "target_lang"),
    "write": ("text", "finish_reason"),
}
_INSERT_PAGE = 1000

ResultsReader = Callable[[str, str | None], Iterator[ResultRow]]


def iter_export_rows(
    read_results: ResultsReader, steps: Sequence[tuple[str, str | None]]
) -> Iterator[dict[str, Any]]:
    """Yield {"id", "text", <step name>: output, ...} for each item that succeeded in the last step.

    `steps` holds (step name, batch id) in order; read_results(batch_id, status) yields
    a batch's rows in input order. A step without a batch had no input, so nothing survived.
    """
    if not steps or any(batch_id is None for _name, batch_id in steps):
        return
    earlier = [(name, read_results(str(batch_id), None)) for name, batch_id in steps[:-1]]
    last_name, last_batch = steps[-1]
    for row in read_results(str(last_batch), "succeeded"):
        matches = [(name, _advance_to(rows, row.item_id, name)) for name, rows in earlier]
        # The first step's input is the item's original text.
        original = matches[0][1].input_text if matches else row.input_text
        item: dict[str, Any] = {"id": row.item_id, "text": original}
        for name, match in matches:
            item[name] = match.output
        item[last_name] = row.output
        yield item


def _advance_to(rows: Iterator[ResultRow], item_id: str, step_name: str) -> ResultRow:
    for row in rows:
        if row.item_id == item_id:
            return row
    raise PipelineError(f"item {item_id!r} is missing from step {step_name!r}; the step "
                        "batches are not in input order")


def write_export(
    export: ExportSpec,
    spec: PipelineSpec,
    home: Path,
    day: date,
    rows: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """Write one export and return its record for the run (format, target, rows)."""
    if export.format == "sql":
        count = _write_table(export, spec.name, day, rows)
        target = f"{export.url_env}:{export.table}"
    else:
        assert export.path is not None
        path = spec.resolve_path(export.path, home, day)
        if export.format == "jsonl":
            count = _write_file(path, lambda handle: _jsonl(handle, rows))
        else:
            count = _write_file(path, lambda handle: _csv(handle, rows, spec))
        target = str(path)
    log.info("Pipeline %s %s: exported %d rows to %s.", spec.name, day, count, target)
    return {"stage": "export", "format": export.format, "target": target, "rows": count}


def _write_file(path: Path, write: Callable[[Any], int]) -> int:
    # Written beside the target and renamed, so a reader never sees a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            count = write(handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _jsonl(handle: Any, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def _csv(handle: Any, rows: Iterable[dict[str, Any]], spec: PipelineSpec) -> int:
    columns = [(step.name, key) for step in spec.steps for key in CSV_KEYS[step.kind]]
    writer = csv.writer(handle)
    writer.writerow(["id", "text", *(f"{name}.{key}" for name, key in columns)])
    count = 0
    for row in rows:
        values = [row["id"], row["text"]]
        for name, key in columns:
            value = (row.get(name) or {}).get(key)
            values.append(json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value)
        writer.writerow(values)
        count += 1
    return count


def export_table(name: str) -> Table:
    """The table a sql export writes: one row per (pipeline, date, item)."""
    return Table(
        name,
        MetaData(),
        Column("pipeline", String(200), nullable=False),
        Column("scheduled_for", Date, nullable=False),
        Column("item_id", String(200), nullable=False),
        Column("text", Text, nullable=False),
        Column("outputs", JSON, nullable=False),
        UniqueConstraint("pipeline", "scheduled_for", "item_id"),
    )


def _write_table(export: ExportSpec, pipeline: str, day: date, rows: Iterable[dict[str, Any]]) -> int:
    assert export.url_env is not None and export.table is not None
    url = os.environ.get(export.url_env)
    if not url:
        raise PipelineError(f"environment variable {export.url_env} is not set; set it to the "
                            f"database URL for the {export.table} export")
    engine = create_engine(normalise_database_url(url))
    table = export_table(export.table)
    count = 0
    try:
        table.metadata.create_all(engine, checkfirst=True)
        # One transaction: a resumed run replaces its own rows, and readers see all or none.
        with engine.begin() as connection:
            connection.execute(delete(table).where(table.c.pipeline == pipeline,
                                                   table.c.scheduled_for == day))
            page: list[dict[str, Any]] = []
            for row in rows:
                outputs = {key: value for key, value in row.items() if key not in ("id", "text")}
                page.append({"pipeline": pipeline, "scheduled_for": day, "item_id": row["id"],
                             "text": row["text"], "outputs": outputs})
                if len(page) >= _INSERT_PAGE:
                    connection.execute(insert(table), page)
                    count += len(page)
                    page = []
            if page:
                connection.execute(insert(table), page)
                count += len(page)
    finally:
        engine.dispose()
    return count
