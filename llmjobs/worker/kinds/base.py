"""The contract between the chunk consumer and a job kind: items in, one result per item out."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from llmjobs.config import Settings
from llmjobs.errors import GenerationTimeout, OutOfMemory
from llmjobs.text.clean import is_blank
from llmjobs.worker.engine import LoadedCheckpoint

EMPTY_INPUT_MESSAGE = "input is empty or whitespace only; no model call was made"


@dataclass(frozen=True)
class WorkItem:
    """One job as the input of a kind."""

    job_id: int
    batch_id: str
    text: str
    params: Mapping[str, Any]  # batch params merged with per-row params (row wins)


@dataclass
class ItemResult:
    """The outcome of one item: its output, or why it failed or was skipped."""

    job_id: int
    status: str  # "succeeded" | "failed" | "skipped"
    output: dict[str, Any] | None = None
    error_code: str | None = None  # "input_too_long", "model_error", "invalid_input", "timeout"
    error_message: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    decision: str | None = None  # moderation only: allow | review | block
    scores: dict[str, float] | None = None  # moderation only: taxonomy category -> score


def failed(item: WorkItem, code: str, message: str, input_tokens: int | None = None) -> ItemResult:
    """Return a failed result for item with an error code and a message."""
    return ItemResult(
        job_id=item.job_id, status="failed", error_code=code, error_message=message,
        input_tokens=input_tokens,
    )


class JobKind(ABC):
    """One kind of work over one loaded checkpoint: preprocess -> forward -> postprocess.

    Only ``forward`` touches the model. ``run`` is what the chunk consumer calls.
    """

    name: ClassVar[str]

    def __init__(self, checkpoint: LoadedCheckpoint, settings: Settings) -> None:
        self.checkpoint = checkpoint
        self.settings = settings

    @property
    def checkpoint_id(self) -> str:
        """The configured Hugging Face id or local folder."""
        return self.checkpoint.source

    @property
    def checkpoint_revision(self) -> str:
        """The hub commit hash, or "sha256:..." of a local folder's config and weights."""
        return self.checkpoint.revision

    @property
    def device_name(self) -> str:
        """The torch device the model runs on, such as "cpu" or "cuda:0"."""
        return self.checkpoint.device

    @property
    def max_input_tokens(self) -> int:
        """Maximum model input tokens: the smaller of the setting and the checkpoint's limit."""
        return min(self.settings.max_input_tokens, self.checkpoint.max_input_tokens)

    def token_count(self, item: WorkItem) -> int:
        """Return the length of item's model input in tokens, for sorting and token budgets."""
        return len(self.checkpoint.tokenizer(item.text, verbose=False)["input_ids"])

    def token_counts(self, items: Sequence[WorkItem]) -> list[int]:
        """Return token_count of each item, in item order."""
        return [self.token_count(item) for item in items]

    def text_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Return the token length of each text, tokenised in one call."""
        if not texts:
            return []
        encoded = self.checkpoint.tokenizer(list(texts), verbose=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def group_key(self, item: WorkItem) -> Hashable:
        """Return a key; items with different keys never share a micro-batch."""
        return None

    def check(self, item: WorkItem) -> ItemResult | None:
        """Return a failed result for an item the kind cannot run (bad params, too long), else None."""
        return None

    @abstractmethod
    def preprocess(self, items: Sequence[WorkItem]) -> Any:
        """Turn items that passed ``check`` into model inputs."""

    @abstractmethod
    def forward(self, prepared: Any, deadline: float | None) -> Any:
        """Run the model; raise OutOfMemory or GenerationTimeout."""

    @abstractmethod
    def postprocess(self, items: Sequence[WorkItem], prepared: Any, raw: Any) -> list[ItemResult]:
        """Turn raw model outputs into one result per item, in item order."""

    def run(self, items: Sequence[WorkItem], deadline: float | None = None) -> list[ItemResult]:
        """Run one micro-batch and return one result per item, in the same order.

        Empty or whitespace-only items are skipped and invalid items fail, both without a
        model call. OutOfMemory and GenerationTimeout propagate to the caller.
        """
        started = time.perf_counter()
        results: list[ItemResult | None] = [None] * len(items)
        runnable: list[int] = []
        for index, item in enumerate(items):
            if is_blank(item.text):
                results[index] = ItemResult(
                    job_id=item.job_id, status="skipped", error_message=EMPTY_INPUT_MESSAGE
                )
                continue
            failure = self.check(item)
            if failure is not None:
                results[index] = failure
            else:
                runnable.append(index)

        if runnable:
            batch = [items[index] for index in runnable]
            prepared = self.preprocess(batch)
            raw = self.forward(prepared, deadline)
            for index, result in zip(runnable, self.postprocess(batch, prepared, raw), strict=True):
                results[index] = result

        latency_ms = (time.perf_counter() - started) * 1000 / max(1, len(items))
        finished = [result for result in results if result is not None]
        for result in finished:
            result.latency_ms = latency_ms
        return finished


@contextlib.contextmanager
def model_call(device: str) -> Iterator[None]:
    """Run a block under torch.inference_mode(), turning a device OOM into llmjobs' OutOfMemory."""
    import torch

    try:
        with torch.inference_mode():
            yield
    except torch.OutOfMemoryError as error:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        raise OutOfMemory(f"micro-batch does not fit in {device} memory: {error}") from error


def check_deadline(deadline: float | None) -> None:
    """Raise GenerationTimeout when time.monotonic() has passed deadline."""
    if deadline is not None and time.monotonic() > deadline:
        raise GenerationTimeout("the micro-batch ran past its generation time limit")


KindClass = TypeVar("KindClass", bound=type[JobKind])

# Kind name -> class, filled by @register_kind when a kind module is imported.
KINDS: dict[str, type[JobKind]] = {}


def register_kind(cls: KindClass) -> KindClass:
    """Class decorator that adds a JobKind subclass to KINDS under its ``name``."""
    if cls.name in KINDS and KINDS[cls.name] is not cls:
        raise ValueError(f"kind {cls.name!r} is registered twice: {KINDS[cls.name]!r} and {cls!r}")
    KINDS[cls.name] = cls
    return cls
