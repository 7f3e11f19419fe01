"""Tables that remember what each pipeline has already read: source files and SQL watermarks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from llmjobs.models.base import Base, BigId, UTCDateTime, utcnow


class PipelineSourceFile(Base):
    """A file that a pipeline run has taken as input; the same path and content is never read again."""

    __tablename__ = "pipeline_source_files"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    # The run that read the file; resume reads the same files again from here.
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_runs.id", ondelete="SET NULL"), index=True
    )
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("pipeline", "path", "sha256"),)


class PipelineWatermark(Base):
    """The highest watermark value a pipeline's SQL source has handed to a run."""

    __tablename__ = "pipeline_watermarks"

    pipeline: Mapped[str] = mapped_column(String(200), primary_key=True)
    # {"type": "int" | "float" | "decimal" | "str" | "date" | "datetime", "value": ...}
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
