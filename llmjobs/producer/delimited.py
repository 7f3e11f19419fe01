"""CSV and TSV input, with or without a header row.

CSV follows RFC 4180 quoting, parsed by Python's csv module in strict mode, so a quoted
field may span several lines and a malformed quote is an invalid row. TSV follows the
IANA text/tab-separated-values format: no quoting, one record per line, so a field that
starts with a quote character keeps it. A tab-separated file with CSV-style quoting can
be read with --format csv --delimiter tab.

Columns are chosen by header name or 1-based number. The other columns become template
variables of write jobs, named by the header or `column_N` without one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from llmjobs.errors import DecodeError, ProducerError
from llmjobs.producer.encoding import ScannedSource
from llmjobs.producer.records import Reader, ReadOptions, Record, Rejection

DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_ID_COLUMN = "id"
# Header columns that carry per-row languages of translate jobs.
_LANGUAGE_COLUMNS = ("target_lang", "source_lang")


def parse_delimiter(value: str) -> str:
    """Return the one-character delimiter for a value such as ",", "tab" or "\\t"."""
    delimiter = DELIMITER_NAMES.get(value.lower(), value)
    if len(delimiter) != 1 or delimiter in "\r\n\"":
        raise ProducerError(
            f"--delimiter {value!r} is invalid; give one character, or tab, comma, semicolon or pipe"
        )
    return delimiter


class DelimitedReader(Reader):
    """Reads comma-separated values with RFC 4180 quoting."""

    format = "csv"
    default_delimiter: ClassVar[str] = ","
    quoting: ClassVar[Literal[0, 1, 2, 3]] = csv.QUOTE_MINIMAL

    def __init__(self, source: ScannedSource, options: ReadOptions) -> None:
        super().__init__(source, options)
        self.delimiter = (
            parse_delimiter(options.delimiter) if options.delimiter else self.default_delimiter
        )
        self.header = options.header
        if self.header is None:
            self.header = not (options.text_column is not None and options.text_column.isdigit())
        # Fields longer than max_line_bytes cannot be valid, and csv's own limit stops a
        # runaway quoted field from holding the rest of the file in memory.
        if csv.field_size_limit() < options.max_line_bytes:
            csv.field_size_limit(options.max_line_bytes)

    def notes(self) -> list[str]:
        if self.options.header is None and not self.header:
            return [
                f"{self.source.path.name} was read without a header row because --text-column "
                "is a number; pass --header if its first row names the columns"
            ]
        return []

    def records(self) -> Iterator[Record]:
        encoding = self.source.encoding
        with self.source.path.open("rb") as handle:
            handle.seek(encoding.bom_length)
            text = io.TextIOWrapper(handle, encoding=encoding.codec, newline="")
            reader = csv.reader(
                text, delimiter=self.delimiter, quoting=self.quoting, strict=True
            )
            try:
                yield from self._records(reader)
            except UnicodeDecodeError as error:
                raise DecodeError(
                    f"{self.source.path}: cannot decode as {encoding.codec} on a second read "
                    f"({error.reason}); the file changed while it was being submitted"
                ) from None

    def _records(self, reader: Any) -> Iterator[Record]:
        columns: Columns | None = None
        if self.header:
            names = self._read_header(reader)
            if names is None:
                return
            columns = Columns.from_header(names, self.options)
        number = 0
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                number += 1
                reason = f"invalid {self.format.upper()}: {error}"
                yield Record(line, number, None, Rejection(line, None, reason))
                continue
            if not row:
                continue
            number += 1
            if columns is None:
                columns = Columns.without_header(len(row), self.options)
            yield columns.record(line, number, row)

    def _read_header(self, reader: Any) -> list[str] | None:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return None
            except csv.Error as error:
                raise ProducerError(
                    f"{self.source.path}: the header row on line {reader.line_num} is invalid "
                    f"{self.format.upper()}: {error}"
                ) from None
            if row:
                return row


class TsvReader(DelimitedReader):
    """Reads tab-separated values without quoting."""

    format = "tsv"
    default_delimiter = "\t"
    quoting = csv.QUOTE_NONE


class Columns:
    """The positions of a row's text, id, language and template variable cells."""

    def __init__(
        self,
        text_index: int,
        id_index: int | None,
        variable_names: list[tuple[int, str]],
        language_indexes: list[tuple[int, str]],
        text_name: str,
    ) -> None:
        self.text_index = text_index
        self.id_index = id_index
        self.variable_names = variable_names
        self.language_indexes = language_indexes
        self.text_name = text_name

    @classmethod
    def from_header(cls, names: list[str], options: ReadOptions) -> Columns:
        if options.text_column is None:
            text_index = _find_name(names, DEFAULT_TEXT_COLUMN, "--text-column", default=True)
        else:
            text_index = _resolve(names, options.text_column, "--text-column")
        if options.id_column:
            id_index: int | None = _resolve(names, options.id_column, "--id-column")
        else:
            # An "id" column is used as JSONL's "id" field is; with none, ids are record numbers.
            found = [i for i, name in enumerate(names) if name.strip().lower() == DEFAULT_ID_COLUMN]
            id_index = found[0] if len(found) == 1 and found[0] != text_index else None
        used = {text_index, id_index}
        variables: list[tuple[int, str]] = []
        languages: list[tuple[int, str]] = []
        if options.kind == "write":
            variables = [(i, name) for i, name in enumerate(names) if i not in used and name]
        elif options.kind == "translate":
            languages = [(i, name) for i, name in enumerate(names) if name in _LANGUAGE_COLUMNS]
        return cls(text_index, id_index, variables, languages, names[text_index] or "text")

    @classmethod
    def without_header(cls, width: int, options: ReadOptions) -> Columns:
        if options.text_column is None:
            if width != 1:
                raise ProducerError(
                    f"the first row has {width} columns and there is no header; "
                    "pass --text-column with the 1-based number of the text column"
                )
            text_index = 0
        else:
            text_index = _resolve(None, options.text_column, "--text-column")
        id_index = _resolve(None, options.id_column, "--id-column") if options.id_column else None
        # One error for the option, instead of one per row, when no row could have the column.
        for option, index in (("--text-column", text_index), ("--id-column", id_index)):
            if index is not None and index >= width:
                raise ProducerError(f"{option} {index + 1}: the first row has only {width} "
                                    "columns; give a column number within the row")
        used = {text_index, id_index}
        variables: list[tuple[int, str]] = []
        if options.kind == "write":
            variables = [(i, f"column_{i + 1}") for i in range(width) if i not in used]
        return cls(text_index, id_index, variables, [], f"column {text_index + 1}")

    def record(self, line: int, number: int, row: list[str]) -> Record:
        if self.text_index >= len(row):
            return Record(line, number, None, Rejection(
                line, self.text_name,
                f"missing: the row has {len(row)} columns and the text is column "
                f"{self.text_index + 1}",
            ))
        fields: dict[str, Any] = {"text": row[self.text_index]}
        if self.id_index is not None:
            if self.id_index >= len(row):
                return Record(line, number, None, Rejection(
                    line, "id",
                    f"missing: the row has {len(row)} columns and the id is column "
                    f"{self.id_index + 1}",
                ))
            fields["id"] = row[self.id_index]
        if self.variable_names:
            fields["variables"] = {
                name: row[index] for index, name in self.variable_names if index < len(row)
            }
        for index, name in self.language_indexes:
            if index < len(row) and row[index]:
                fields[name] = row[index]
        return Record(line, number, fields)


def _resolve(names: list[str] | None, spec: str, option: str) -> int:
    """Return the 0-based index of a column given by header name or 1-based number."""
    if names is not None and spec in names:
        return _find_name(names, spec, option)
    if spec.isdigit():
        index = int(spec) - 1
        if index < 0:
            raise ProducerError(f"{option} {spec} is invalid; column numbers start at 1")
        if names is not None and index >= len(names):
            raise ProducerError(
                f"{option} {spec} is past the last column; the header has {len(names)} columns"
            )
        return index
    if names is None:
        raise ProducerError(
            f"{option} {spec!r} is a column name, but the file is read without a header; "
            "pass --header, or give the 1-based column number"
        )
    return _find_name(names, spec, option)


def _find_name(names: list[str], spec: str, option: str, *, default: bool = False) -> int:
    matches = [i for i, name in enumerate(names) if name == spec]
    if not matches:
        matches = [i for i, name in enumerate(names) if name.strip().lower() == spec.lower()]
    if len(matches) == 1:
        return matches[0]
    column_list = ", ".join(repr(name) for name in names)
    if matches:
        raise ProducerError(
            f"{option} {spec!r} matches {len(matches)} header columns; give the 1-based number"
        )
    if default:
        raise ProducerError(
            f"no {spec!r} column in the header ({column_list}); pass --text-column with the "
            "name or 1-based number of the text column"
        )
    raise ProducerError(f"{option} {spec!r} not found in the header; columns: {column_list}")
