"""The translate kind: languages, splitting long text, rejoining in order, adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmjobs.config import Settings
from llmjobs.text.segment import join_pieces
from llmjobs.worker.kinds import translate as translate_module
from llmjobs.worker.kinds.base import WorkItem
from llmjobs.worker.kinds.decoding import decode_tokens
from llmjobs.worker.kinds.registry import create_kind
from llmjobs.worker.kinds.translate import TranslateKind
from llmjobs.worker.kinds.translators import MarianTranslator, MultilingualTranslator
from tests.unit.test_tiny_checkpoints import tiny_checkpoints, tiny_settings

__all__ = ["tiny_checkpoints", "tiny_settings"]

SENTENCE = "今天下午三点，我们团队在市中心的老图书馆讨论了年度报告和明年的计划。"


def make_kind(settings: Settings, folder: Path | None = None, **changes: Any) -> TranslateKind:
    if folder is not None:
        changes["checkpoints"] = {**settings.checkpoints, "translate": str(folder)}
    kind = create_kind("translate", settings.replace(**changes))
    assert isinstance(kind, TranslateKind)
    return kind


@pytest.fixture(scope="module")
def nllb(tiny_settings: Settings) -> TranslateKind:
    # A small input limit makes a few hundred characters split into many pieces, quickly.
    return make_kind(tiny_settings, max_input_tokens=64)


def item(text: str, job_id: int = 1, **params: Any) -> WorkItem:
    return WorkItem(job_id=job_id, batch_id="b", text=text, params=params)


def test_nllb_convention_from_tokens(nllb: TranslateKind) -> None:
    translator = nllb.translator
    assert isinstance(translator, MultilingualTranslator)
    assert translator.convention == "flores"
    assert translator.language_token("zh") == "zho_Hans"
    assert translator.language_token("zh-TW") == "zho_Hant"


def test_source_detected_when_missing(nllb: TranslateKind) -> None:
    [result] = nllb.run([item("你好，世界。", target_lang="en")])
    assert result.status == "succeeded"
    assert result.output is not None
    assert result.output["source_lang"] == "zh"
    assert result.output["target_lang"] == "en"
    assert result.output["detected_source"] is True


def test_source_given_is_not_detected(nllb: TranslateKind) -> None:
    [result] = nllb.run([item("Hello.", source_lang="eng_Latn", target_lang="zh-Hans")])
    assert result.output is not None
    assert result.output["source_lang"] == "en"
    assert result.output["target_lang"] == "zh"
    assert result.output["detected_source"] is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({}, "target_lang is missing", id="no-target"),
        pytest.param({"target_lang": "xx-nope-1"}, "", id="bad-target"),
        pytest.param({"target_lang": "en", "source_lang": "klingon!"}, "", id="bad-source"),
        pytest.param({"target_lang": "sw"}, "no language token", id="unsupported"),
    ],
)
def test_invalid_languages_fail(nllb: TranslateKind, params: dict[str, Any], message: str) -> None:
    [result] = nllb.run([item("你好。", **params)])
    assert result.status == "failed"
    assert result.error_code == "invalid_input"
    assert message in (result.error_message or "")


def test_same_language_passes_through(nllb: TranslateKind) -> None:
    [result] = nllb.run([item("Already English.", source_lang="en", target_lang="en")])
    assert result.output is not None
    assert result.output["text"] == "Already English."
    assert result.output["pieces"] == 0


def test_long_chinese_split_in_order(nllb: TranslateKind) -> None:
    paragraph = (SENTENCE * 100)[:3000]
    pieces = nllb.split(paragraph)
    assert len(paragraph) == 3000
    assert len(pieces) > 10
    assert "".join(pieces) == paragraph
    assert all(nllb.translator.text_tokens(piece) <= nllb.piece_tokens for piece in pieces)
    assert all(piece.endswith("。") for piece in pieces[:-1])  # cut at sentence ends

    work = item(paragraph, target_lang="en")
    prepared = nllb.preprocess([work])
    # Each encoded row is [zho_Hans] piece </s>, in the order of the pieces.
    tokenizer = nllb.checkpoint.tokenizer
    assert [decode_tokens(tokenizer, row) for row in prepared.rows] == pieces
    raw = nllb.forward(prepared, None)
    [result] = nllb.postprocess([work], prepared, raw)
    assert result.output is not None
    assert result.output["pieces"] == len(pieces)
    translations = [decode_tokens(tokenizer, generation.token_ids) for generation in raw]
    assert result.output["text"] == join_pieces(translations)


def test_line_breaks_kept(nllb: TranslateKind) -> None:
    text = "第一行。\n\n  第二行！\r\n第三行"
    [result] = nllb.run([item(text, target_lang="en")])
    assert result.output is not None
    output = result.output["text"]
    assert output.count("\n") == 3
    assert "\r\n" in output
    assert output.split("\n")[1] == ""
    assert output.split("\n")[2].startswith("  ")
    assert result.output["pieces"] == 3


def test_mixed_targets_in_one_micro_batch(nllb: TranslateKind, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int | None, int]] = []
    real_generate = translate_module.generate

    def spy(checkpoint: Any, rows: Any, options: Any, deadline: Any, forced: Any = None) -> Any:
        calls.append((forced, len(rows)))
        return real_generate(checkpoint, rows, options, deadline, forced)

    monkeypatch.setattr(translate_module, "generate", spy)
    items = [
        item("你好。", 1, target_lang="en"),
        item("你好。", 2, target_lang="ja"),
        item("谢谢。", 3, target_lang="en"),
        item("Hello.", 4, target_lang="zh"),
    ]
    keys = [nllb.group_key(work) for work in items]
    assert keys == [("zh", "en"), ("zh", "ja"), ("zh", "en"), ("en", "zh")]

    results = nllb.run(items)
    vocabulary = nllb.checkpoint.tokenizer.get_vocab()
    assert sorted(calls) == sorted([
        (vocabulary["eng_Latn"], 2), (vocabulary["jpn_Jpan"], 1), (vocabulary["zho_Hans"], 1)
    ])
    assert [result.output["target_lang"] for result in results if result.output] == ["en", "ja", "en", "zh"]


def test_sub_batches_respect_limits(tiny_settings: Settings) -> None:
    kind = make_kind(tiny_settings, max_input_tokens=32, max_batch_size=3)
    prepared = kind.preprocess([item(SENTENCE * 6, target_lang="en")])
    batches = kind._sub_batches(prepared)
    assert sorted(index for batch in batches for index in batch) == list(range(len(prepared.rows)))
    assert all(len(batch) <= 3 for batch in batches)


def test_marian_fixed_pair(tiny_checkpoints: dict[str, Path], tiny_settings: Settings) -> None:
    kind = make_kind(tiny_settings, tiny_checkpoints["marian-en-zh"])
    assert isinstance(kind.translator, MarianTranslator)
    good, wrong_target, wrong_source = kind.run([
        item("Hello world. How are you?", 1, target_lang="zh"),
        item("Hello world.", 2, target_lang="ja"),
        item("你好。", 3, source_lang="zh", target_lang="en"),
    ])
    assert good.status == "succeeded"
    assert wrong_target.error_code == "invalid_input"
    assert "into 'zh' only" in (wrong_target.error_message or "")
    assert wrong_source.error_code == "invalid_input"
    assert "from 'en' only" in (wrong_source.error_message or "")


def test_causal_translator(tiny_checkpoints: dict[str, Path], tiny_settings: Settings) -> None:
    kind = make_kind(tiny_settings, tiny_checkpoints["causal-qwen2"], max_input_tokens=96)
    [result] = kind.run([item(SENTENCE * 4, target_lang="en")])
    assert result.status == "succeeded"
    assert result.output is not None
    assert result.output["pieces"] > 1
    prompt = kind.translator.encode("你好", "zh", "en")
    text = kind.checkpoint.tokenizer.decode(prompt)
    assert "Chinese (Simplified)" in text
    assert "<|im_start|>assistant" in text
