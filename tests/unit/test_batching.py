"""Micro-batch formation: groups, length order, row limit and padded-token budget."""

from __future__ import annotations

import pytest

from llmjobs.worker.batching import form_micro_batches


def _cut(lengths: list[int], size: int = 8, tokens: int = 100,
         groups: list[str] | None = None) -> list[list[int]]:
    """Cut item indexes whose lengths are given; return the index lists."""
    keys = groups or ["g"] * len(lengths)
    return form_micro_batches(list(range(len(lengths))), lengths, lambda i: keys[i], size, tokens)


def test_sorted_longest_first() -> None:
    batches = _cut([3, 9, 1, 5])

    assert batches == [[1, 3, 0, 2]]


def test_row_limit() -> None:
    batches = _cut([1] * 5, size=2)

    assert [len(batch) for batch in batches] == [2, 2, 1]


def test_padded_budget() -> None:
    # Padded cost is rows times the longest row: 40 x 2 fits 100, 40 x 3 does not.
    batches = _cut([40, 40, 40, 10, 10])

    assert batches == [[0, 1], [2, 3], [4]]


def test_over_budget_item_alone() -> None:
    batches = _cut([500, 2, 2])

    assert batches[0] == [0]
    assert batches[1:] == [[1, 2]]


def test_groups_never_mix() -> None:
    batches = _cut([5, 5, 5, 5], groups=["zh-en", "en-zh", "zh-en", "en-zh"])

    assert sorted(sorted(batch) for batch in batches) == [[0, 2], [1, 3]]


def test_zero_length_counts_as_one() -> None:
    batches = _cut([0] * 4, size=10, tokens=3)

    assert [len(batch) for batch in batches] == [3, 1]


def test_count_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match="2 token counts for 3 items"):
        form_micro_batches([1, 2, 3], [1, 1], lambda i: None, 8, 100)
