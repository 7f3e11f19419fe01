"""JSON Lines input: one JSON object per line.

JSON exchanged between systems must be UTF-8 (RFC 8259, section 8.1). Without a byte order
mark or --encoding, each line is decoded as strict UTF-8 on its own. A line with invalid
bytes is then an invalid row, not a reason to reread the file as GB18030.
A blank or whitespace-only line is skipped: it is neither a record nor an error.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from llmjobs.producer.records import Reader, Record, Rejection

_decode_json = json.JSONDecoder().decode


class JsonlReader(Reader):
    """Reads JSON Lines; each object's keys are the row fields."""

    format = "jsonl"

    def records(self) -> Iterator[Record]:
        number = 0
        for line, text, problem, has_line_end in self._lines():
            if problem is not None:
                number += 1
                yield Record(line, number, None, problem)
                continue
            if not text or text.isspace():
                continue
            number += 1
            try:
                value = _decode_json(text)
            except json.JSONDecodeError as error:
                yield Record(line, number, None, _json_problem(line, error, has_line_end))
                continue
            yield self.convert(line, number, value)

    def convert(self, line: int, number: int, value: Any) -> Record:
        """Turn a parsed line into a record; subclasses map other layouts onto row fields."""
        return Record(line, number, value)

    def _lines(self) -> Iterator[tuple[int, str, Rejection | None, bool]]:
        """Yield (line number, text, decode problem, whether the line ended with a newline)."""
        encoding = self.source.encoding
        with self.source.path.open("rb") as handle:
            handle.seek(encoding.bom_length)
            if encoding.ascii_compatible:
                yield from self._split_then_decode(handle, encoding.bom_length)
            else:
                yield from self._decode_then_split(handle)

    def _split_then_decode(
        self, handle: BinaryIO, start: int
    ) -> Iterator[tuple[int, str, Rejection | None, bool]]:
        codec = self.source.encoding.codec
        limit = self.options.max_line_bytes
        offset = start
        line = 0
        while True:
            raw = handle.readline(limit)
            if not raw:
                return
            line += 1
            line_offset = offset
            offset += len(raw)
            has_line_end = raw.endswith(b"\n")
            if not has_line_end and len(raw) == limit:
                offset += _skip_rest_of_line(handle)
                yield line, "", _too_long(line, limit), True
                continue
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError as error:
                yield line, "", _bytes_problem(line, error, line_offset, codec), has_line_end
                continue
            yield line, text, None, has_line_end

    def _decode_then_split(
        self, handle: BinaryIO
    ) -> Iterator[tuple[int, str, Rejection | None, bool]]:
        # UTF-16 and UTF-32 need decoding before lines can be found; scan_source has
        # already checked that the whole file decodes.
        text_stream = io.TextIOWrapper(handle, encoding=self.source.encoding.codec, newline="\n")
        limit = self.options.max_line_bytes
        line = 0
        while True:
            text = text_stream.readline(limit)
            if not text:
                return
            line += 1
            if not text.endswith("\n") and len(text) == limit:
                while (rest := text_stream.readline(limit)) and not rest.endswith("\n"):
                    pass
                yield line, "", _too_long(line, limit), True
                continue
            yield line, text, None, text.endswith("\n")


def _skip_rest_of_line(handle: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = handle.readline(1 << 16)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _too_long(line: int, limit: int) -> Rejection:
    return Rejection(
        line, None,
        f"line is longer than {limit} bytes, more than any valid row can need; "
        "check that the file is JSON Lines with one object per line",
    )


def _bytes_problem(line: int, error: UnicodeDecodeError, line_offset: int, codec: str) -> Rejection:
    bad = error.object[error.start:error.start + 1]
    if codec == "utf-8":
        fix = ("JSON Lines files must be UTF-8: fix the byte, or pass --encoding if the "
               "whole file uses another encoding")
    else:
        fix = "check --encoding"
    return Rejection(
        line, None,
        f"invalid {codec} byte 0x{bad.hex()} at byte offset {line_offset + error.start}; {fix}",
    )


def _json_problem(line: int, error: json.JSONDecodeError, has_line_end: bool) -> Rejection:
    reason = f"invalid JSON: {error.msg} at column {error.colno}"
    if not has_line_end:
        reason += "; the last line has no line end, so the file may be truncated"
    return Rejection(line, None, reason)
