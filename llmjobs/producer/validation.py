"""Row validation shared by every format and kind: shape, item id, duplicates, kind rules.

A validator is deterministic: run over the same records twice, it accepts and rejects
the same rows. A resumed submission relies on that: it validates the input again and
skips the lines that the interrupted one already stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmjobs.producer.records import Record, Rejection
from llmjobs.producer.rules import KindRules, RowError, check_string

# The jobs.item_id column is VARCHAR(200).
MAX_ITEM_ID_CHARS = 200


@dataclass(slots=True)
class JobRow:
    """A valid row, ready to be stored as a job."""

    item_id: str
    # The record number: the job's position in the input.
    seq: int
    line: int
    text: str
    # sha256 of the text in UTF-8; empty when compute_sha256 is off.
    text_sha256: str
    params: dict[str, Any] | None


class RowValidator:
    """Checks records one by one and remembers item ids to find duplicates.

    Duplicate detection keeps the 64-bit `hash()` of each accepted id, about 70 bytes per
    row in a Python set (roughly 70 MB for a million rows), never the ids themselves.
    NOTE: two different ids with the same 64-bit hash would be reported as duplicates.
    For a million ids the chance of that is about 3 in 100 million.
    """

    def __init__(self, rules: KindRules, *, track_ids: bool, compute_sha256: bool) -> None:
        self.rules = rules
        self.track_ids = track_ids
        self.compute_sha256 = compute_sha256
        self._seen: set[int] = set()

    def check(self, record: Record) -> JobRow | Rejection:
        """Return the job row of a valid record, or the rejection of an invalid one."""
        if record.problem is not None:
            return record.problem
        fields = record.fields
        if not isinstance(fields, dict):
            return Rejection(
                record.line, None, f"row must be a JSON object, got {_describe(fields)}"
            )
        item_id: str | None = None
        try:
            item_id = self._item_id(fields, record.number)
            text, params = self.rules.check(fields)
        except RowError as error:
            return Rejection(record.line, error.field, error.reason, item_id)

        if self.track_ids:
            key = hash(item_id)
            if key in self._seen:
                return Rejection(
                    record.line, "id",
                    f"duplicate id {item_id!r}: an earlier row has the same id, and ids must "
                    "be unique within a file",
                    item_id,
                )
            self._seen.add(key)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest() if self.compute_sha256 else ""
        return JobRow(item_id, record.number, record.line, text, digest, params)

    def _item_id(self, fields: dict[str, Any], number: int) -> str:
        value = fields.get("id")
        if value is None:
            return str(number)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise RowError("id", f"must be a string or an integer, got {_describe(value)}")
        if not value:
            raise RowError("id", "is empty; give each row a non-empty id or leave id out")
        check_string(value, "id", MAX_ITEM_ID_CHARS)
        return value


def validate(records: Iterator[Record], validator: RowValidator) -> Iterator[JobRow | Rejection]:
    for record in records:
        yield validator.check(record)


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return type(value).__name__
