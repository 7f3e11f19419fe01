"""The registry of input readers, and the choice of format for --format auto."""

from __future__ import annotations

import json
from pathlib import Path

from llmjobs.errors import ProducerError
from llmjobs.producer.delimited import DelimitedReader, TsvReader
from llmjobs.producer.encoding import ScannedSource
from llmjobs.producer.jsonl import JsonlReader
from llmjobs.producer.openai_batch import OpenAIBatchReader
from llmjobs.producer.records import Reader, ReadOptions

READERS: dict[str, type[Reader]] = {
    "jsonl": JsonlReader,
    "csv": DelimitedReader,
    "tsv": TsvReader,
    "openai": OpenAIBatchReader,
}
FORMATS = ("auto", *READERS)

_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}
# Enough to hold the first line of any ordinary file; only format detection reads it.
_PEEK_BYTES = 1 << 16


def detect_format(path: Path, requested: str, codec: str, bom_length: int) -> str:
    """Return the reader format: the requested one, or one chosen from suffix and content.

    JSON Lines whose first object has `custom_id` and `body` is an OpenAI batch file; a
    file that does not start with `{` is TSV when its first line holds a tab, else CSV.
    """
    if requested != "auto":
        if requested not in READERS:
            raise ProducerError(
                f"unknown format {requested!r}; expected one of {', '.join(FORMATS)}"
            )
        return requested
    by_suffix = _BY_SUFFIX.get(path.suffix.lower())
    if by_suffix in ("csv", "tsv"):
        return by_suffix

    first_line = _first_line(path, codec, bom_length)
    if first_line.lstrip().startswith("{"):
        return "openai" if _is_openai_request(first_line) else "jsonl"
    if by_suffix == "jsonl":
        return "jsonl"
    return "tsv" if "\t" in first_line else "csv"


def open_reader(source: ScannedSource, format_name: str, options: ReadOptions) -> Reader:
    if format_name in ("jsonl", "openai") and (
        options.text_column or options.id_column or options.delimiter or options.header is not None
    ):
        raise ProducerError(
            "--text-column, --id-column, --delimiter and --header apply to CSV and TSV input "
            f"only; {source.path.name} is read as {format_name}"
        )
    if format_name == "openai" and options.kind != "write":
        raise ProducerError(
            f"OpenAI batch request files hold chat requests for --kind write, not {options.kind}"
        )
    return READERS[format_name](source, options)


def _first_line(path: Path, codec: str, bom_length: int) -> str:
    with path.open("rb") as handle:
        handle.seek(bom_length)
        head = handle.read(_PEEK_BYTES)
    text = head.decode(codec, errors="replace")
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _is_openai_request(line: str) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "custom_id" in value and isinstance(value.get("body"), dict)
