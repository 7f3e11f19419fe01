"""Records with their physical line, rejections of invalid rows, and the reader base class.

A reader turns each record of a file into a dict with the standard row fields (`text`,
`id`, `target_lang`, `source_lang`, `template`, `variables`, `prompt`, `messages` and the
sampling fields), so validation is the same for every input format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from llmjobs.producer.encoding import ScannedSource


@dataclass(slots=True)
class Rejection:
    """An invalid row: where it starts, which field is wrong and why."""

    line: int
    field: str | None
    reason: str
    item_id: str | None = None

    def describe(self) -> str:
        where = f"line {self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.reason}"
        return f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason,
                "item_id": self.item_id}


@dataclass(slots=True)
class Record:
    """One record of the input, parsed but not yet validated."""

    # The physical line (1-based) where the record starts; a quoted CSV field may span more.
    line: int
    # The 1-based position among the records, blank lines not counted: the default item id.
    number: int
    # The row fields, or whatever a JSON line held when it is not an object.
    fields: Any
    # Set when the record could not be parsed at all (invalid JSON, bytes, CSV quoting).
    problem: Rejection | None = None


class Reader(ABC):
    """Streams the records of one input format in constant memory.

    Each call of `records()` reads the source again from the start.
    """

    format: ClassVar[str]

    def __init__(self, source: ScannedSource, options: ReadOptions) -> None:
        self.source = source
        self.options = options

    @abstractmethod
    def records(self) -> Iterator[Record]:
        """Yield every record in file order."""

    def notes(self) -> list[str]:
        """Return remarks for the user about how the input was read (empty by default)."""
        return []


@dataclass(frozen=True)
class ReadOptions:
    """How to read an input file; column options apply to CSV and TSV only."""

    kind: str
    text_column: str | None = None
    id_column: str | None = None
    delimiter: str | None = None
    # None: a header row is assumed unless the text column is given by number.
    header: bool | None = None
    # A longer line cannot hold a valid row; reading it whole would break constant memory.
    max_line_bytes: int = 2 << 20
