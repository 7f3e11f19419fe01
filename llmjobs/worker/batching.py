"""Micro-batch formation: group, sort by length, cut under a row limit and a padded-token budget."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")


def form_micro_batches(
    items: Sequence[T],
    token_counts: Sequence[int],
    group_key: Callable[[T], Hashable],
    max_batch_size: int,
    max_batch_tokens: int,
) -> list[list[T]]:
    """Cut items into micro-batches that never mix groups and fit the padded-token budget.

    A micro-batch is padded to its longest row, so its cost is rows x longest row. Sorting
    by length keeps rows of similar length together and wastes little on padding. An item
    longer than the budget on its own still gets a micro-batch of one, so that the kind can
    split it, truncate it, or fail it with a reason. token_counts[i] is the length of items[i].
    """
    if len(token_counts) != len(items):
        raise ValueError(f"got {len(token_counts)} token counts for {len(items)} items")
    groups: dict[Hashable, list[tuple[int, T]]] = defaultdict(list)
    for item, tokens in zip(items, token_counts, strict=True):
        groups[group_key(item)].append((max(1, tokens), item))

    batches: list[list[T]] = []
    for members in groups.values():
        # Longest first: the first micro-batch shows at once whether the longest rows fit.
        members.sort(key=lambda pair: pair[0], reverse=True)
        current: list[T] = []
        longest = 0
        for tokens, item in members:
            longest_if_added = max(longest, tokens)
            fits = (
                len(current) < max_batch_size
                and longest_if_added * (len(current) + 1) <= max_batch_tokens
            )
            if current and not fits:
                batches.append(current)
                current, longest_if_added = [], tokens
            current.append(item)
            longest = longest_if_added
        if current:
            batches.append(current)
    return batches
