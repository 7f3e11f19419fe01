"""The SQL store: tables, sessions, migrations, the audit trail and query functions."""

from llmjobs.models.base import BatchStatus, JobStatus, Priority, utcnow
from llmjobs.models.pipeline_tables import PipelineSourceFile, PipelineWatermark
from llmjobs.models.session import Store
from llmjobs.models.tables import (
    AuditEvent,
    Batch,
    CategoryScore,
    Job,
    PipelineRun,
    RejectedRow,
    Result,
)

__all__ = [
    "AuditEvent",
    "Batch",
    "BatchStatus",
    "CategoryScore",
    "Job",
    "JobStatus",
    "PipelineRun",
    "PipelineSourceFile",
    "PipelineWatermark",
    "Priority",
    "RejectedRow",
    "Result",
    "Store",
    "utcnow",
]
