"""Cleaning decoded output and language detection."""

from __future__ import annotations

import pytest

from llmjobs.text.clean import clean_decoded, decode_utf8_dropping_incomplete, is_clean
from llmjobs.text.detect import chinese_script, detect_language


def test_decode_drops_incomplete_sequences() -> None:
    data = "好".encode()[:2] + b"ok" + "中".encode() + "😀".encode()[:3]
    assert decode_utf8_dropping_incomplete(data) == "ok中"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a\ufffdb", "ab", id="replacement"),
        pytest.param("a\ud800b", "ab", id="lone-high"),
        pytest.param("a\udc00b", "ab", id="lone-low"),
        pytest.param("a\ud83d\ude00b", "a😀b", id="pair-joined"),
        pytest.param("中文😀", "中文😀", id="untouched"),
    ],
)
def test_clean_decoded(text: str, expected: str) -> None:
    assert clean_decoded(text) == expected
    assert is_clean(clean_decoded(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("The weather is lovely today and we are going out.", "en", id="english"),
        pytest.param("今天天气很好，我们出去玩吧。", "zh", id="simplified"),
        pytest.param("這個問題我們下週再討論。", "zh-Hant", id="traditional"),
        pytest.param("今日はとても良い天気ですね。", "ja", id="japanese"),
        pytest.param("오늘 날씨가 정말 좋네요.", "ko", id="korean"),
        pytest.param("Le chat dort sur le canapé pendant que nous mangeons.", "fr", id="french"),
        pytest.param("这个 iPhone 的价格是多少？", "zh", id="chinese-with-latin"),
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_detect_rejects_text_without_letters() -> None:
    with pytest.raises(ValueError, match="no letters"):
        detect_language("123 😀 !!!")


def test_chinese_script_defaults_to_simplified() -> None:
    assert chinese_script("中文") == "zh"
    assert chinese_script("這樣說") == "zh-Hant"
