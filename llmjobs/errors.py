"""The exception hierarchy: one root error and a branch per subsystem."""

from __future__ import annotations

from typing import Any


class LlmjobsError(Exception):
    """Raised for every failure that llmjobs reports to its user."""


class ConfigError(LlmjobsError):
    """Raised when a setting, URL or config file is invalid."""


class StoreError(LlmjobsError):
    """Raised when the SQL store cannot be opened, migrated or queried."""


class NotFoundError(StoreError):
    """Raised when a batch, job or pipeline run id does not exist."""


class BrokerError(LlmjobsError):
    """Raised when Redis cannot be reached or a message cannot be published."""


class ProducerError(LlmjobsError):
    """Raised when an input file cannot be read or submitted."""


class DecodeError(ProducerError):
    """Raised when an input file is not valid in any accepted encoding."""


class ValidationFailed(ProducerError):
    """Raised when rows of an input file are invalid and --skip-invalid is not set."""

    def __init__(self, message: str, rejections: list[Any], total: int | None = None) -> None:
        super().__init__(message)
        self.rejections = rejections
        # All invalid rows; `rejections` may hold only the first of them.
        self.total = len(rejections) if total is None else total


class UnknownTemplate(ProducerError):
    """Raised when a write template name, version or language variant does not exist."""


class WorkerError(LlmjobsError):
    """Raised when a worker cannot start or run a job kind."""


class CheckpointError(WorkerError):
    """Raised when a checkpoint is missing, unreadable or unsuitable for a kind."""


class OutOfMemory(WorkerError):
    """Raised when a micro-batch does not fit in device memory (CUDA OOM or an injected fault)."""


class InputTooLong(WorkerError):
    """Raised when one item alone exceeds what the checkpoint accepts."""


class GenerationTimeout(WorkerError):
    """Raised when a micro-batch runs past its generation time limit."""


class PipelineError(LlmjobsError):
    """Raised when a pipeline file is invalid or a pipeline run cannot proceed."""


class OperationError(LlmjobsError):
    """Raised when an operator action (cancel, retry, requeue) does not apply to a batch."""


class PipelineFileInvalid(PipelineError):
    """Raised when a pipeline file has problems; `problems` lists each with its location."""

    def __init__(self, problems: list[Any]) -> None:
        lines = [problem.describe() for problem in problems]
        super().__init__(f"{len(lines)} problem(s) in the pipeline file:\n" + "\n".join(lines))
        self.problems = problems
