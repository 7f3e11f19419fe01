"""Batched generation with left padding equals one-at-a-time generation, token for token (fp32).

transformers 5.x builds position ids from the attention mask when a decoder-only model gets
none. Left-padded rows therefore start at position 0 like unpadded ones, and these tests check it.
"""

from __future__ import annotations

import random

import pytest

from llmjobs.config import Settings
from llmjobs.worker.kinds.base import WorkItem
from llmjobs.worker.kinds.generation import GenerationOptions, generate
from llmjobs.worker.kinds.registry import create_kind
from llmjobs.worker.kinds.write import WriteKind
from tests.unit.test_tiny_checkpoints import tiny_checkpoints, tiny_settings

__all__ = ["tiny_checkpoints", "tiny_settings"]

PROMPT_LENGTHS = [3, 4, 9, 17, 40, 77, 128, 201, 256, 333, 400]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def write(tiny_settings: Settings) -> WriteKind:
    kind = create_kind("write", tiny_settings.replace(max_new_tokens=NEW_TOKENS))
    assert isinstance(kind, WriteKind)
    return kind


def test_batched_ids_equal_single(write: WriteKind) -> None:
    rng = random.Random(3)
    special = set(write.checkpoint.tokenizer.all_special_ids)
    ordinary = [token for token in range(len(write.checkpoint.tokenizer)) if token not in special]
    rows = [[rng.choice(ordinary) for _ in range(length)] for length in PROMPT_LENGTHS]
    options = [GenerationOptions(NEW_TOKENS)] * len(rows)

    batched = generate(write.checkpoint, rows, options, None)
    for length, row, together in zip(PROMPT_LENGTHS, rows, batched, strict=True):
        [alone] = generate(write.checkpoint, [row], [GenerationOptions(NEW_TOKENS)], None)
        assert together.token_ids == alone.token_ids, f"prompt of {length} tokens"
        assert together.finish_reason == alone.finish_reason
    # Distinct continuations show that the prompts steer the model, so equality means something.
    assert len({tuple(generation.token_ids) for generation in batched}) == len(rows)


def test_batched_write_equals_single(write: WriteKind) -> None:
    words = [
        "今天",
        "天气",
        "很好",
        "the",
        "weather",
        "is",
        "fine",
        "我们",
        "去",
        "公园",
        "let's",
        "walk",
        "😀",
    ]
    rng = random.Random(5)
    texts = [" ".join(rng.choice(words) for _ in range(count)) for count in (1, 3, 8, 20, 60, 150)]
    items = [WorkItem(index, "b", text, {}) for index, text in enumerate(texts)]
    lengths = [write.token_count(work) for work in items]
    assert min(lengths) < 20
    assert max(lengths) > 300

    batched = write.run(items)
    for work, together in zip(items, batched, strict=True):
        [alone] = write.run([work])
        assert together.output is not None
        assert alone.output is not None
        assert together.output["text"] == alone.output["text"]
        assert together.output_tokens == alone.output_tokens
