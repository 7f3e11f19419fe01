"""A temporary file of validated rows, between the validation pass and the store pass.

Validating writes each valid row (with its sha256) and each rejection here, so storing
never parses or validates the input again, and rows from a one-shot iterator need no
second read. Rows go to disk in blocks of one store transaction, serialised with
marshal: the file is written and read back by the same process, so the format never
has to outlive the Python version that wrote it. Memory holds one block at a time.
"""

from __future__ import annotations

import marshal
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmjobs.producer.records import Rejection
from llmjobs.producer.validation import JobRow

_LENGTH = struct.Struct("<Q")

# (item_id, seq, line, text, text_sha256, params) and (line, field, reason).
JobTuple = tuple[str, int, int, str, str, Any]
RejectionTuple = tuple[int, Any, str]


class Spool:
    """Validated rows in input order, read back in blocks of `block_rows` rows."""

    def __init__(self, folder: Path | None, block_rows: int) -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        # Closed by close(): the file is read back after the validation pass ends.
        self._file = tempfile.TemporaryFile(prefix="llmjobs-spool-", dir=folder)  # noqa: SIM115
        self._block_rows = block_rows
        self._jobs: list[JobTuple] = []
        self._rejections: list[RejectionTuple] = []

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def add(self, entry: JobRow | Rejection) -> None:
        if isinstance(entry, JobRow):
            self._jobs.append(
                (entry.item_id, entry.seq, entry.line, entry.text, entry.text_sha256, entry.params)
            )
        else:
            self._rejections.append((entry.line, entry.field, entry.reason))
        if len(self._jobs) + len(self._rejections) >= self._block_rows:
            self._flush()

    def blocks(self) -> Iterator[tuple[list[JobTuple], list[RejectionTuple]]]:
        """Yield (job rows, rejected rows) per block, in input order."""
        self._flush()
        self._file.seek(0)
        while True:
            header = self._file.read(_LENGTH.size)
            if not header:
                return
            (length,) = _LENGTH.unpack(header)
            jobs, rejections = marshal.loads(self._file.read(length))
            yield jobs, rejections

    def close(self) -> None:
        self._file.close()

    def _flush(self) -> None:
        if self._jobs or self._rejections:
            # Length-prefixed blobs: marshal.load on a file object reads in many small
            # pieces, which made reading back slower than parsing the input again.
            blob = marshal.dumps((self._jobs, self._rejections))
            self._file.write(_LENGTH.pack(len(blob)))
            self._file.write(blob)
            self._jobs = []
            self._rejections = []
