"""The write kind: prompts, templates, messages, sampling, finish reasons and failures."""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from llmjobs.config import Settings
from llmjobs.errors import GenerationTimeout, OutOfMemory
from llmjobs.worker.kinds.base import WorkItem
from llmjobs.worker.kinds.registry import create_kind
from llmjobs.worker.kinds.write import WriteKind
from tests.unit.test_tiny_checkpoints import tiny_checkpoints, tiny_settings

__all__ = ["tiny_checkpoints", "tiny_settings"]


@pytest.fixture()
def write(tiny_settings: Settings) -> WriteKind:
    kind = create_kind("write", tiny_settings.replace(max_new_tokens=8))
    assert isinstance(kind, WriteKind)
    return kind


def item(text: str, job_id: int = 1, **params: Any) -> WorkItem:
    return WorkItem(job_id=job_id, batch_id="b", text=text, params=params)


@dataclass
class FakeTemplate:
    name: str
    version: int
    language: str | None
    text: str
    description: str
    fields: tuple[str, ...]

    def render(self, values: Mapping[str, str]) -> str:
        return self.text.format(**values)


@pytest.fixture()
def templates(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Replace llmjobs.templates with one "headline" template at version 1; record the calls."""
    calls: list[tuple[str, Any]] = []

    def get_template(name: str, language: str | None = None, templates_file: Any = None) -> FakeTemplate:
        calls.append((name, language))
        if name not in ("headline", "headline@1"):
            raise KeyError(f"template {name!r} not found")
        return FakeTemplate(
            "headline", 1, language, "Headline in {tone} tone for: {text}", "", ("tone", "text")
        )

    module = types.ModuleType("llmjobs.templates")
    module.get_template = get_template  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llmjobs.templates", module)
    return calls


def test_raw_text_prompt(write: WriteKind) -> None:
    [result] = write.run([item("写一个标题")])
    assert result.status == "succeeded"
    assert result.output is not None
    assert result.output["finish_reason"] == "length"
    assert result.output["template"] is None
    assert result.output["generation"] == {
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "seed": None,
        "max_new_tokens": 8,
    }
    assert result.output_tokens == 8
    assert result.input_tokens is not None


def test_chat_template_applied(write: WriteKind) -> None:
    prompt_ids = write.request(item("hello", prompt="Summarise:")).prompt_ids
    text = write.checkpoint.tokenizer.decode(prompt_ids)
    assert text == "<|im_start|>user\nSummarise:\n\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_placeholder(write: WriteKind) -> None:
    messages, _ = write.messages(item("news", prompt="Title for {text} please"))
    assert messages == [{"role": "user", "content": "Title for news please"}]


def test_messages_prefix(write: WriteKind) -> None:
    messages, _ = write.messages(item("hi", messages=[{"role": "system", "content": "be brief"}]))
    assert messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_template_rendered(write: WriteKind, templates: list[tuple[str, Any]]) -> None:
    [result] = write.run(
        [item("本地球队夺冠", template="headline@1", variables={"tone": "calm"}, language="zh")]
    )
    assert result.status == "succeeded"
    assert result.output is not None
    assert result.output["template"] == "headline@1"
    assert set(templates) == {("headline@1", "zh")}
    messages, _ = write.messages(item("x", template="headline", variables={"tone": "calm"}))
    assert messages[0]["content"] == "Headline in calm tone for: x"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"template": "headline@2"}, id="wrong-version"),
        pytest.param({"template": "missing"}, id="unknown-template"),
        pytest.param({"template": "headline", "prompt": "x"}, id="two-sources"),
        pytest.param({"messages": [{"role": "robot", "content": "x"}]}, id="bad-role"),
        pytest.param({"generation": {"temperature": -1}}, id="bad-temperature"),
        pytest.param({"generation": {"top_p": 0}}, id="bad-top-p"),
        pytest.param({"generation": {"max_new_tokens": 0}}, id="bad-max-new-tokens"),
        pytest.param({"generation": {"beams": 4}}, id="unknown-key"),
    ],
)
def test_invalid_params_fail_without_model(
    write: WriteKind,
    templates: list[tuple[str, Any]],
    params: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(write, "forward", _no_model_call)
    [result] = write.run([item("text", **params)])
    assert result.status == "failed"
    assert result.error_code == "invalid_input"


def test_prompt_too_long_fails(write: WriteKind, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write, "forward", _no_model_call)
    [result] = write.run([item("很长的文本" * 400)])
    assert result.status == "failed"
    assert result.error_code == "input_too_long"
    assert result.input_tokens is not None
    assert result.input_tokens > write.max_input_tokens


def test_empty_inputs_skip_model(write: WriteKind, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write, "forward", _no_model_call)
    results = write.run([item("", 1), item("  \n\t", 2), item("\u3000", 3)])
    assert [result.status for result in results] == ["skipped", "skipped", "skipped"]
    assert [result.job_id for result in results] == [1, 2, 3]


def test_seeded_sampling_reproducible(write: WriteKind) -> None:
    sampled = {"generation": {"temperature": 0.9, "top_p": 0.95, "seed": 42, "max_new_tokens": 12}}
    [alone] = write.run([item("写一首诗", 1, **sampled)])
    _, together, _ = write.run([item("other", 2), item("写一首诗", 3, **sampled), item("更多", 4, **sampled)])
    assert alone.output is not None
    assert together.output is not None
    assert alone.output["text"] == together.output["text"]
    assert alone.output["generation"] == {
        "do_sample": True,
        "temperature": 0.9,
        "top_p": 0.95,
        "seed": 42,
        "max_new_tokens": 12,
    }


def test_sampling_without_seed_stores_one(write: WriteKind) -> None:
    [result] = write.run([item("写一首诗", temperature=0.8)])
    assert result.output is not None
    seed = result.output["generation"]["seed"]
    assert isinstance(seed, int)
    [again] = write.run([item("写一首诗", generation={"temperature": 0.8, "seed": seed})])
    assert again.output is not None
    assert again.output["text"] == result.output["text"]


def test_finish_reason_stop(write: WriteKind) -> None:
    prompt = write.request(item("hello")).prompt_ids
    with torch.inference_mode():
        logits = write.checkpoint.model(torch.tensor([prompt])).logits
    first_token = int(logits[0, -1].argmax())
    write.checkpoint.model.generation_config.eos_token_id = [first_token]
    try:
        [result] = write.run([item("hello")])
    finally:
        write.checkpoint.model.generation_config.eos_token_id = [
            write.checkpoint.tokenizer.convert_tokens_to_ids("<|im_end|>"),
            write.checkpoint.tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ]
    assert result.output is not None
    assert result.output["finish_reason"] == "stop"
    assert result.output["text"] == ""
    assert result.output_tokens == 1


def test_passed_deadline_raises_timeout(write: WriteKind) -> None:
    with pytest.raises(GenerationTimeout):
        write.run([item("hello")], deadline=time.monotonic() - 1)


def test_out_of_memory_converted(write: WriteKind, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(write.checkpoint.model, "generate", fail)
    with pytest.raises(OutOfMemory, match="does not fit"):
        write.run([item("hello")])


def test_results_in_item_order(write: WriteKind) -> None:
    items = [
        item("a", 5),
        item("", 6),
        item("b", 7, generation={"temperature": 0.5, "seed": 1}),
        item("c", 8),
    ]
    results = write.run(items)
    assert [result.job_id for result in results] == [5, 6, 7, 8]
    assert [result.status for result in results] == ["succeeded", "skipped", "succeeded", "succeeded"]
    assert all(result.latency_ms is not None for result in results)


def _no_model_call(prepared: object, deadline: float | None) -> object:
    raise AssertionError("the model was called")


def test_built_in_template(write: WriteKind) -> None:
    [result] = write.run([item("本地球队时隔二十年再夺冠军", template="headline", language="zh")])
    assert result.status == "succeeded"
    assert result.output is not None
    assert result.output["template"] == "headline@1"
    [missing] = write.run([item("text", template="headline@9", language="zh")])
    assert missing.status == "failed"
    assert missing.error_code == "invalid_input"
