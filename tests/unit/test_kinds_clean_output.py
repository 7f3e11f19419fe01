"""Every kind over Chinese, English, mixed and emoji text: clean output, no broken characters."""

from __future__ import annotations

from typing import Any

import pytest

from llmjobs.config import Settings
from llmjobs.text.clean import is_clean
from llmjobs.worker.kinds.base import JobKind, WorkItem
from llmjobs.worker.kinds.registry import create_kind
from tests.unit.test_tiny_checkpoints import tiny_checkpoints, tiny_settings

__all__ = ["tiny_checkpoints", "tiny_settings"]

TEXTS = {
    "chinese": "今天天气很好，我们去公园散步吧。",
    "english": "The weather is lovely today, let's walk in the park.",
    "mixed": "这个 iPhone 15 的价格是 ¥5999，太贵了!",
    "emoji": "😀😂👍🎉 👨‍👩‍👧 🇨🇳 好开心 ❤️",
    "traditional": "這個問題我們下週再討論。",
}
PARAMS: dict[str, dict[str, Any]] = {
    "moderate": {},
    "translate": {"target_lang": "en"},
    "write": {"generation": {"temperature": 1.0, "max_new_tokens": 24}},
}


@pytest.fixture(scope="module")
def kinds(tiny_settings: Settings) -> dict[str, JobKind]:
    return {name: create_kind(name, tiny_settings.replace(max_new_tokens=24)) for name in PARAMS}


@pytest.mark.parametrize("name", list(PARAMS))
def test_outputs_are_clean(kinds: dict[str, JobKind], name: str) -> None:
    items = []
    for index, text in enumerate(list(TEXTS.values()) * 4):
        params = dict(PARAMS[name])
        if name == "write":
            # Different seeds sample different byte sequences, some ending mid-character.
            params["generation"] = {**params["generation"], "seed": index}
        items.append(WorkItem(job_id=index, batch_id="b", text=text, params=params))
    results = kinds[name].run(items)
    assert [result.status for result in results] == ["succeeded"] * len(items)
    for result in results:
        assert result.output is not None
        for value in _strings(result.output):
            assert is_clean(value), repr(value)


@pytest.mark.parametrize("name", list(PARAMS))
def test_empty_and_blank_skipped(kinds: dict[str, JobKind], name: str) -> None:
    results = kinds[name].run(
        [
            WorkItem(1, "b", "", PARAMS[name]),
            WorkItem(2, "b", " \n ", PARAMS[name]),
            WorkItem(3, "b", "ok", PARAMS[name]),
        ]
    )
    assert [result.status for result in results] == ["skipped", "skipped", "succeeded"]


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in _strings(key) + _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
