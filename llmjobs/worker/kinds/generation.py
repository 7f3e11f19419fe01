"""Generation shared by the kinds: options from item params, batched greedy runs, finish reasons.

Greedy rows of a micro-batch run together. Sampled rows run one at a time, each under its
own seed, so a stored seed reproduces the row whatever else was in its micro-batch.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmjobs.errors import GenerationTimeout
from llmjobs.worker.engine import LoadedCheckpoint
from llmjobs.worker.kinds.base import model_call

MAX_NEW_TOKENS_LIMIT = 8192


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate: greedy when temperature is None, else sampling with a seed."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None

    @property
    def sampling(self) -> bool:
        return self.temperature is not None

    def with_seed(self) -> GenerationOptions:
        """Return these options, with a random seed drawn when sampling has none."""
        if not self.sampling or self.seed is not None:
            return self
        return GenerationOptions(self.max_new_tokens, self.temperature, self.top_p, secrets.randbits(31))

    def to_output(self) -> dict[str, Any]:
        """Return the options as stored with a result."""
        return {
            "do_sample": self.sampling,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
        }


@dataclass
class Generation:
    """Generated token ids of one row (up to, not including, the end-of-sequence token)."""

    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    output_tokens: int  # generated tokens, counting the end-of-sequence token


def parse_generation(params: Mapping[str, Any], default_max_new_tokens: int) -> GenerationOptions:
    """Read params["generation"] ({temperature, top_p, seed, max_new_tokens}); raise ValueError if invalid.

    A temperature of 0 or none means greedy decoding; top_p alone samples at temperature 1.
    """
    raw = params.get("generation") or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"generation must be an object, got {raw!r}")
    unknown = set(raw) - {"temperature", "top_p", "seed", "max_new_tokens"}
    if unknown:
        raise ValueError(
            f"generation has unknown keys {sorted(unknown)}; "
            "expected temperature, top_p, seed, max_new_tokens"
        )

    max_new_tokens = raw.get("max_new_tokens", default_max_new_tokens)
    if not _is_int(max_new_tokens) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
        raise ValueError(
            f"generation.max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS_LIMIT}, "
            f"got {max_new_tokens!r}"
        )
    temperature = raw.get("temperature")
    if temperature is not None and (not _is_number(temperature) or temperature < 0):
        raise ValueError(f"generation.temperature must be a number >= 0, got {temperature!r}")
    top_p = raw.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"generation.top_p must be a number in (0, 1], got {top_p!r}")
    seed = raw.get("seed")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"generation.seed must be a non-negative integer, got {seed!r}")

    if temperature == 0:
        temperature = None
    if temperature is None and top_p is not None:
        temperature = 1.0
    return GenerationOptions(
        max_new_tokens=max_new_tokens,
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        seed=seed if temperature is not None else None,
    )


def generate(
    checkpoint: LoadedCheckpoint,
    rows: Sequence[Sequence[int]],
    options: Sequence[GenerationOptions],
    deadline: float | None,
    forced_bos_token_id: int | None = None,
) -> list[Generation]:
    """Generate for each row of token ids under its options; return one Generation per row.

    Greedy rows with the same max_new_tokens run as one padded batch (left padding for
    decoder-only models). Raises GenerationTimeout once time.monotonic() passes deadline.
    """
    results: list[Generation | None] = [None] * len(rows)
    greedy: dict[int, list[int]] = {}
    for index, option in enumerate(options):
        if option.sampling:
            results[index] = _run(checkpoint, [rows[index]], option, deadline, forced_bos_token_id)[0]
        else:
            greedy.setdefault(option.max_new_tokens, []).append(index)
    for indexes in greedy.values():
        batch = [rows[index] for index in indexes]
        generated = _run(checkpoint, batch, options[indexes[0]], deadline, forced_bos_token_id)
        for index, generation in zip(indexes, generated, strict=True):
            results[index] = generation
    return [result for result in results if result is not None]


def pad_batch(rows: Sequence[Sequence[int]], pad_token_id: int, left: bool) -> tuple[Any, Any]:
    """Return (input_ids, attention_mask) tensors for rows padded to the longest one."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        values = torch.tensor(list(row), dtype=torch.long)
        if left:
            input_ids[index, width - len(row):] = values
            attention_mask[index, width - len(row):] = 1
        else:
            input_ids[index, : len(row)] = values
            attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


def _deadline_criteria(deadline: float) -> Any:
    """Return a stopping criterion that ends every row once time.monotonic() passes deadline."""
    import torch
    from transformers import StoppingCriteria

    class DeadlineCriteria(StoppingCriteria):
        expired = False

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.expired = time.monotonic() > deadline
            return torch.full(
                (input_ids.shape[0],), self.expired, dtype=torch.bool, device=input_ids.device
            )

    return DeadlineCriteria()


def _run(
    checkpoint: LoadedCheckpoint,
    rows: Sequence[Sequence[int]],
    option: GenerationOptions,
    deadline: float | None,
    forced_bos_token_id: int | None,
) -> list[Generation]:
    import torch
    from transformers import StoppingCriteriaList

    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    config = model.generation_config
    decoder_only = checkpoint.architecture == "causal"
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.pad_token_id
    input_ids, attention_mask = pad_batch(rows, pad_token_id, left=decoder_only)

    criteria = StoppingCriteriaList()
    timer = None
    if deadline is not None:
        timer = _deadline_criteria(deadline)
        criteria.append(timer)

    kwargs: dict[str, Any] = {
        "max_new_tokens": option.max_new_tokens,
        "do_sample": option.sampling,
        "pad_token_id": pad_token_id,
        "stopping_criteria": criteria,
    }
    if option.sampling:
        kwargs.update(temperature=option.temperature, top_p=option.top_p or 1.0, top_k=None)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if decoder_only:
        kwargs["num_beams"] = 1
    if forced_bos_token_id is not None:
        kwargs["forced_bos_token_id"] = forced_bos_token_id

    with model_call(checkpoint.device):
        if option.seed is not None:
            torch.manual_seed(option.seed)
        output = model.generate(
            input_ids=input_ids.to(checkpoint.device),
            attention_mask=attention_mask.to(checkpoint.device),
            **kwargs,
        )
    if timer is not None and timer.expired:
        raise GenerationTimeout("generation ran past the micro-batch time limit")

    new_tokens = output[:, input_ids.shape[1]:] if decoder_only else output[:, 1:]
    return [_finish(row.tolist(), _eos_ids(model, tokenizer), option.max_new_tokens) for row in new_tokens]


def _finish(token_ids: list[int], eos_ids: set[int], max_new_tokens: int) -> Generation:
    for position, token_id in enumerate(token_ids):
        if token_id in eos_ids:
            return Generation(token_ids[:position], "stop", position + 1)
    return Generation(token_ids[:max_new_tokens], "length", min(len(token_ids), max_new_tokens))


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    configured = model.generation_config.eos_token_id
    if isinstance(configured, list):
        ids = set(configured)
    elif configured is not None:
        ids = {configured}
    else:
        ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
