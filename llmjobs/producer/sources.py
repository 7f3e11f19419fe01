"""The inputs of a submission: a file read in place, or rows handed over in memory."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmjobs.config import Settings
from llmjobs.errors import ProducerError
from llmjobs.producer.encoding import normalise_codec, scan_source, sniff_bom
from llmjobs.producer.formats import detect_format, open_reader
from llmjobs.producer.options import SubmitOptions
from llmjobs.producer.records import Reader, ReadOptions, Record

# A row's fields may hold the text, a prompt, messages and variables, each up to
# max_text_chars, and JSON may spell a character in up to 12 bytes (a \u escape pair).
_LINE_BYTES_PER_CHAR = 32
_LINE_BYTES_EXTRA = 1 << 20


class FileInput:
    """A file on disk, with its format, encoding and sha256 decided by one scan."""

    def __init__(self, path: Path, options: SubmitOptions, kind: str, settings: Settings) -> None:
        if not path.is_file():
            raise ProducerError(f"input file {str(path)!r} not found or not a regular file")
        self.path = path
        self.name: str | None = str(path.resolve())

        named = normalise_codec(options.encoding) if options.encoding else None
        with path.open("rb") as handle:
            bom = sniff_bom(handle.read(4))
        # The codec used to peek at the first line for --format auto.
        peek_codec, bom_length = "utf-8", 0
        if named:
            peek_codec = named
            if bom and bom[0] == named:
                bom_length = bom[1]
        elif bom:
            peek_codec, bom_length = bom
        self.format = detect_format(path, options.format, peek_codec, bom_length)

        wide = peek_codec.startswith(("utf-16", "utf-32"))
        self.scanned = scan_source(
            path, options.encoding, check_decoding=self.format in ("csv", "tsv") or wide
        )
        self.sha256: str | None = self.scanned.sha256
        self.encoding: str | None = self.scanned.encoding.codec
        max_line_bytes = _LINE_BYTES_PER_CHAR * settings.max_text_chars + _LINE_BYTES_EXTRA
        self.read_options = ReadOptions(
            kind=kind,
            text_column=options.text_column,
            id_column=options.id_column,
            delimiter=options.delimiter,
            header=options.header,
            max_line_bytes=max_line_bytes,
        )
        self.reader: Reader = open_reader(self.scanned, self.format, self.read_options)
        # Record numbers are unique, so ids need tracking only where the data supplies them.
        self.track_ids = self.format in ("jsonl", "openai") or options.id_column is not None

    def records(self) -> Iterator[Record]:
        return self.reader.records()

    def notes(self) -> list[str]:
        notes = list(self.reader.notes())
        if self.scanned.encoding.note:
            notes.insert(0, self.scanned.encoding.note)
        return notes

    def reading_options(self) -> dict[str, Any]:
        """Return the options that decide how the bytes become rows, for the idempotency key."""
        return {
            "format": self.format,
            "encoding": self.encoding,
            "text_column": self.read_options.text_column,
            "id_column": self.read_options.id_column,
            "delimiter": self.read_options.delimiter,
            "header": self.read_options.header,
        }

    def check_unchanged(self) -> None:
        """Raise ProducerError when the file's size or modification time changed since the scan."""
        stat = self.path.stat()
        if stat.st_size != self.scanned.size or stat.st_mtime_ns != self.scanned.mtime_ns:
            raise ProducerError(
                f"{self.path} changed while it was being submitted; submit it again once "
                "it is complete"
            )

    def close(self) -> None:
        """Nothing to release: every read opens and closes the file itself."""


class RowsInput:
    """Rows given in memory, as mappings with the same fields as a JSON Lines row.

    A row's line is its 1-based position in the iterable, which is read once.
    """

    format = "rows"
    encoding: str | None = None
    sha256: str | None = None

    def __init__(self, rows: Iterable[Any], name: str | None = None) -> None:
        self.name = name
        self.track_ids = True
        self._rows = rows

    def records(self) -> Iterator[Record]:
        for number, row in enumerate(self._rows, start=1):
            fields = dict(row) if _is_mapping(row) else row
            yield Record(number, number, fields)

    def notes(self) -> list[str]:
        return []

    def reading_options(self) -> dict[str, Any]:
        return {"format": self.format}

    def check_unchanged(self) -> None:
        """Do nothing: rows in memory are read only once."""

    def close(self) -> None:
        """Do nothing: rows in memory hold no resources of their own."""


def _is_mapping(value: Any) -> bool:
    return hasattr(value, "keys") and hasattr(value, "__getitem__") and not isinstance(value, str | bytes)


def current_user() -> str:
    """Return the operating-system user name, or the numeric uid when it has no name."""
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
