"""Writers that stream a batch's results as JSONL, CSV or a fixed-width table.

Every writer takes one row at a time, so an export of millions of results runs in
constant memory when it is fed by `iter_export_rows`.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session

from llmjobs.models.queries import ResultFilter, ResultRow, category_scores, iter_results
from llmjobs.textwidth import one_line, pad

FORMATS = ("table", "jsonl", "csv")

# Spreadsheet programs run a cell that starts with one of these as a formula (OWASP,
# "CSV Injection"). A leading single quote makes them show the text instead.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FORMULA_ESCAPE = "'"

# JSON allows these raw inside strings, but readers that split on Unicode line
# boundaries (Python's str.splitlines, for one) would break a JSONL line at them.
_LINE_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}

_TABLE_COLUMNS = (("ID", 16), ("STATUS", 9), ("OUTPUT", 40), ("INPUT", 40))


@dataclass(frozen=True)
class ExportRow:
    """A job with its result, and its moderation scores from the store (empty for other kinds)."""

    result: ResultRow
    scores: Mapping[str, float] = field(default_factory=dict)


def iter_export_rows(
    session: Session,
    batch_id: str,
    kind: str,
    filters: ResultFilter | None = None,
    limit: int | None = None,
    page_size: int = 1000,
) -> Iterator[ExportRow]:
    """Stream a batch's results in input order, with category scores fetched page by page."""
    page: list[ResultRow] = []
    rows = iter_results(session, batch_id, filters or ResultFilter(), page_size, limit)
    for row in rows:
        page.append(row)
        if len(page) >= page_size:
            yield from _with_scores(session, kind, page)
            page = []
    yield from _with_scores(session, kind, page)


def _with_scores(session: Session, kind: str, page: list[ResultRow]) -> Iterator[ExportRow]:
    scores = category_scores(session, [row.job_id for row in page]) if kind == "moderate" else {}
    for row in page:
        yield ExportRow(row, scores.get(row.job_id, {}))


def result_record(row: ResultRow) -> dict[str, Any]:
    """Return the JSONL object of one job: the user's item id, status, input, output, error."""
    error = None
    if row.error_code is not None or row.error_message is not None:
        error = {"code": row.error_code, "message": row.error_message}
    return {
        "id": row.item_id,
        "status": row.status,
        "input": row.input_text,
        "output": row.output,
        "error": error,
    }


def escape_formula(value: str) -> str:
    """Prefix a single quote to text that a spreadsheet program would run as a formula."""
    if value.startswith(FORMULA_PREFIXES):
        return FORMULA_ESCAPE + value
    return value


def top_category(output: Mapping[str, Any], scores: Mapping[str, float]) -> str | None:
    """Return the kind's own top category, else the category with the highest score."""
    named = output.get("top_category")
    if isinstance(named, str):
        return named
    if not scores:
        return None
    return max(sorted(scores), key=lambda category: scores[category])


class ResultWriter:
    """Base class of the writers: `write` one row at a time, then `close` once."""

    def write(self, row: ExportRow) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Write whatever a format needs after the last row."""


class JsonlWriter(ResultWriter):
    """One JSON object per line, UTF-8 text kept as is (ensure_ascii=False)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, row: ExportRow) -> None:
        line = json.dumps(result_record(row.result), ensure_ascii=False)
        for separator, escaped in _LINE_SEPARATORS.items():
            line = line.replace(separator, escaped)
        self.stream.write(line + "\n")


def csv_columns(kind: str, categories: Sequence[str]) -> list[str]:
    """Return the CSV header: common columns, then the kind's flattened output columns."""
    columns = ["id", "status", "input"]
    if kind == "moderate":
        columns += ["decision", "flagged", "top_category"]
        columns += [f"score_{category}" for category in categories]
    elif kind == "translate":
        columns += ["text", "source_lang", "target_lang"]
    else:
        columns += ["text", "finish_reason"]
    return [*columns, "error_code", "error_message", "output_json"]


def csv_values(row: ExportRow, kind: str, categories: Sequence[str]) -> list[Any]:
    """Flatten one row into the cells of `csv_columns(kind, categories)`, unescaped."""
    result = row.result
    output = result.output or {}
    values: list[Any] = [result.item_id, result.status, result.input_text]
    if kind == "moderate":
        values += [output.get("decision"), output.get("flagged"), top_category(output, row.scores)]
        values += [row.scores.get(category) for category in categories]
    elif kind == "translate":
        values += [output.get("text"), output.get("source_lang"), output.get("target_lang")]
    else:
        values += [output.get("text"), output.get("finish_reason")]
    output_json = json.dumps(result.output, ensure_ascii=False) if result.output is not None else None
    return [*values, result.error_code, result.error_message, output_json]


class CsvWriter(ResultWriter):
    """CSV with the csv module's quoting, so tabs, line breaks and quotes survive a round trip.

    Text cells that a spreadsheet would run as a formula get a leading single quote unless
    `escape_formulas` is False. Numbers and booleans are written unchanged, so a negative
    score stays a number.
    """

    def __init__(
        self,
        stream: TextIO,
        kind: str,
        categories: Sequence[str] = (),
        escape_formulas: bool = True,
    ) -> None:
        self.kind = kind
        self.categories = list(categories)
        self.escape_formulas = escape_formulas
        self.writer = csv.writer(stream, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        self.writer.writerow(csv_columns(kind, self.categories))

    def write(self, row: ExportRow) -> None:
        self.writer.writerow(
            [self._cell(value) for value in csv_values(row, self.kind, self.categories)]
        )

    def _cell(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return escape_formula(value) if self.escape_formulas else value
        if isinstance(value, int | float):
            return value
        return json.dumps(value, ensure_ascii=False)


def output_summary(row: ExportRow, kind: str) -> str:
    """Return a short text for the table's OUTPUT column: the error, decision or text."""
    result = row.result
    if result.error_code or result.error_message:
        return f"{result.error_code or 'error'}: {result.error_message or ''}"
    output = result.output or {}
    if kind == "moderate":
        parts = [str(output.get("decision") or "")]
        category = top_category(output, row.scores)
        if category is not None:
            score = row.scores.get(category)
            parts.append(category if score is None else f"{category} {score:.2f}")
        return " ".join(part for part in parts if part)
    return str(output.get("text") or "")


class TableWriter(ResultWriter):
    """Fixed-width columns; long text is cut by display width, never inside a character."""

    def __init__(self, stream: TextIO, kind: str) -> None:
        self.stream = stream
        self.kind = kind
        self._line([name for name, _ in _TABLE_COLUMNS])

    def write(self, row: ExportRow) -> None:
        result = row.result
        self._line([result.item_id, result.status, output_summary(row, self.kind), result.input_text])

    def _line(self, cells: Sequence[str]) -> None:
        widths = [width for _, width in _TABLE_COLUMNS]
        padded = [pad(one_line(cell), width) for cell, width in zip(cells, widths, strict=True)]
        self.stream.write("  ".join(padded).rstrip() + "\n")


def create_writer(
    format_name: str,
    stream: TextIO,
    kind: str,
    categories: Sequence[str] = (),
    escape_formulas: bool = True,
) -> ResultWriter:
    """Return the writer for one of FORMATS."""
    if format_name == "jsonl":
        return JsonlWriter(stream)
    if format_name == "csv":
        return CsvWriter(stream, kind, categories, escape_formulas)
    if format_name == "table":
        return TableWriter(stream, kind)
    raise ValueError(f"unknown export format {format_name!r}; expected one of {', '.join(FORMATS)}")


@contextmanager
def atomic_output(path: Path, encoding: str = "utf-8", newline: str | None = None) -> Iterator[TextIO]:
    """Open a temporary file next to `path` and rename it over `path` when the block succeeds.

    A reader of `path` gets either the old file or the complete new one, never a partial
    export. On an error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    mode = _new_file_mode(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(handle, "w", encoding=encoding, newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only, so give it a normal file's mode.
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _new_file_mode(path: Path) -> int:
    """Return the mode of the file being replaced, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
