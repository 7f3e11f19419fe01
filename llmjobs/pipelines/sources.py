"""Pipeline sources: take the input of one run once, and read it again on resume.

`claim` decides what a run reads and records it in the store in one transaction: the new
files (by path and sha256) or the new watermark range of a SQL table. `rows` then reads
exactly that input, as often as needed, so a resumed run reads the same items.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, Table, create_engine, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, NoSuchTableError, SQLAlchemyError

from llmjobs.config import Settings, redact_url
from llmjobs.errors import PipelineError
from llmjobs.models.pipeline_tables import PipelineSourceFile, PipelineWatermark
from llmjobs.models.session import Store, normalise_database_url
from llmjobs.pipelines.spec import FilesSource, PipelineSpec, SqlSource

log = logging.getLogger(__name__)

# Concurrent runs of one pipeline (two dates at once) may race for the same input.
CLAIM_ATTEMPTS = 3
_LOOKUP_PAGE = 500


class Source(ABC):
    def __init__(self, spec: PipelineSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings

    @abstractmethod
    def claim(self, store: Store, run_id: int) -> dict[str, Any]:
        """Take this run's input and return the source record stored with the run."""

    @abstractmethod
    def rows(self, record: dict[str, Any]) -> Iterator[Any]:
        """Yield the claimed input as rows (mappings with JSON Lines fields) or rejections."""


def source_for(spec: PipelineSpec, settings: Settings) -> Source:
    if isinstance(spec.source, FilesSource):
        return FileSource(spec, settings)
    return TableSource(spec, settings)


def claim_with_retries(source: Source, store: Store, run_id: int) -> dict[str, Any]:
    """Claim, retrying when a concurrent run of the same pipeline took part of the input first."""
    for attempt in range(1, CLAIM_ATTEMPTS + 1):
        try:
            return source.claim(store, run_id)
        except IntegrityError:
            log.info("Run %d: another run claimed input of %s at the same time (attempt %d).",
                     run_id, source.spec.name, attempt)
    raise PipelineError(f"run {run_id}: could not claim the input of {source.spec.name} after "
                        f"{CLAIM_ATTEMPTS} attempts; resume the run")


class FileSource(Source):
    """Files matching the glob that no earlier run of the pipeline has read in this version."""

    @property
    def config(self) -> FilesSource:
        assert isinstance(self.spec.source, FilesSource)
        return self.spec.source

    def pattern(self) -> str:
        return str(self.spec.resolve_path(self.config.glob, self.settings.home))

    def claim(self, store: Store, run_id: int) -> dict[str, Any]:
        pattern = self.pattern()
        paths = sorted(Path(found).resolve() for found in glob.glob(pattern, recursive=True))
        files = [path for path in paths if path.is_file()]
        hashed = [(str(path), file_sha256(path), path.stat().st_size) for path in files]

        with store.write() as session:
            seen: set[tuple[str, str]] = set()
            names = [name for name, _sha, _size in hashed]
            for start in range(0, len(names), _LOOKUP_PAGE):
                page = names[start:start + _LOOKUP_PAGE]
                seen.update(session.execute(
                    select(PipelineSourceFile.path, PipelineSourceFile.sha256).where(
                        PipelineSourceFile.pipeline == self.spec.name,
                        PipelineSourceFile.path.in_(page),
                    )
                ).all())
            new = [entry for entry in hashed if (entry[0], entry[1]) not in seen]
            if new:
                session.execute(insert(PipelineSourceFile), [
                    {"pipeline": self.spec.name, "path": name, "sha256": sha, "size": size,
                     "run_id": run_id}
                    for name, sha, size in new
                ])
        log.info("Run %d: %s matches %d files, %d of them new.", run_id, pattern, len(files), len(new))
        return {
            "stage": "source",
            "type": "files",
            "pattern": pattern,
            "matched": len(files),
            "files": [{"path": name, "sha256": sha, "size": size} for name, sha, size in new],
        }

    def rows(self, record: dict[str, Any]) -> Iterator[Any]:
        from llmjobs.producer.options import SubmitOptions
        from llmjobs.producer.sources import FileInput

        options = SubmitOptions(
            format=self.config.format, encoding=self.config.encoding,
            text_column=self.config.text_column, id_column=self.config.id_column,
        )
        first_kind = self.spec.steps[0].kind
        for entry in record["files"]:
            path = Path(entry["path"])
            if not path.is_file():
                raise PipelineError(f"source file {path} was claimed by this run but is gone; "
                                    "restore it, then resume the run")
            reader = FileInput(path, options, first_kind, self.settings)
            if reader.sha256 != entry["sha256"]:
                raise PipelineError(f"source file {path} changed after this run claimed it "
                                    f"(sha256 {entry['sha256'][:12]}...); restore it, then resume")
            for item in reader.records():
                if item.problem is not None:
                    yield item.problem
                    continue
                fields = dict(item.fields) if isinstance(item.fields, dict) else item.fields
                if isinstance(fields, dict) and fields.get("id") in (None, ""):
                    # Record numbers repeat across files, so the file name keeps ids unique.
                    fields["id"] = f"{path.name}:{item.number}"
                yield fields


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TableSource(Source):
    """Rows of a SQL table whose watermark column is above the stored watermark."""

    @property
    def config(self) -> SqlSource:
        assert isinstance(self.spec.source, SqlSource)
        return self.spec.source

    def engine(self) -> Engine:
        url = os.environ.get(self.config.url_env)
        if not url:
            raise PipelineError(f"environment variable {self.config.url_env} is not set; set it to "
                                f"the database URL of the {self.config.table} table")
        return create_engine(normalise_database_url(url), pool_pre_ping=True)

    def table(self, engine: Engine) -> Table:
        config = self.config
        try:
            table = Table(config.table, MetaData(), schema=config.schema, autoload_with=engine)
        except NoSuchTableError:
            where = redact_url(engine.url.render_as_string(hide_password=False))
            raise PipelineError(f"table {config.table!r} not found in {where}") from None
        except SQLAlchemyError as error:
            raise PipelineError(f"cannot read table {config.table!r}: {error}") from None
        for name in (config.id_column, config.text_column, config.watermark_column):
            if name not in table.c:
                raise PipelineError(f"column {name!r} not found in table {config.table!r}; "
                                    f"its columns: {', '.join(table.c.keys())}")
        return table

    def claim(self, store: Store, run_id: int) -> dict[str, Any]:
        engine = self.engine()
        try:
            table = self.table(engine)
            column = table.c[self.config.watermark_column]
            with store.write() as session:
                mark = session.get(PipelineWatermark, self.spec.name, with_for_update=True)
                low = decode_watermark(mark.value) if mark is not None else None
                with engine.connect() as connection:
                    query = select(func.max(column))
                    if low is not None:
                        query = query.where(column > low)
                    high = connection.execute(query).scalar()
                if high is None:
                    high = low
                elif mark is None:
                    session.add(PipelineWatermark(pipeline=self.spec.name,
                                                  value=encode_watermark(high), run_id=run_id))
                else:
                    mark.value = encode_watermark(high)
                    mark.run_id = run_id
        finally:
            engine.dispose()
        log.info("Run %d: %s.%s watermark range (%r, %r].", run_id, self.config.table,
                 self.config.watermark_column, low, high)
        return {
            "stage": "source",
            "type": "sql",
            "table": self.config.table,
            "from": encode_watermark(low) if low is not None else None,
            "to": encode_watermark(high) if high is not None else None,
        }

    def rows(self, record: dict[str, Any]) -> Iterator[Any]:
        if record.get("to") is None or record.get("from") == record.get("to"):
            return
        engine = self.engine()
        try:
            table = self.table(engine)
            query = self.range_query(table, record)
            with engine.connect() as connection:
                result = connection.execution_options(stream_results=True, yield_per=1000).execute(query)
                for item_id, text in result:
                    yield {"id": str(item_id), "text": text}
        finally:
            engine.dispose()

    def range_query(self, table: Table, record: dict[str, Any]) -> Any:
        config = self.config
        watermark: Column[Any] = table.c[config.watermark_column]
        query = (
            select(table.c[config.id_column], table.c[config.text_column])
            .where(watermark <= decode_watermark(record["to"]))
            .order_by(watermark, table.c[config.id_column])
        )
        if record.get("from") is not None:
            query = query.where(watermark > decode_watermark(record["from"]))
        return query


def encode_watermark(value: Any) -> dict[str, Any]:
    """Return a watermark value as JSON that keeps its type."""
    if isinstance(value, bool):
        raise PipelineError(f"a boolean watermark ({value!r}) cannot order rows; use a number or time")
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    raise PipelineError(f"unsupported watermark type {type(value).__name__}; use a number, "
                        "string, date or timestamp column")


def decode_watermark(encoded: dict[str, Any]) -> Any:
    kind, value = encoded["type"], encoded["value"]
    if kind == "decimal":
        return Decimal(value)
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    return value
