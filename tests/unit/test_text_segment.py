"""Sentence splitting, packing and character-safe cuts."""

from __future__ import annotations

import pytest

from llmjobs.text.graphemes import is_boundary, truncate_chars, truncate_utf8
from llmjobs.text.segment import (
    join_pieces,
    pack_sentences,
    split_lines,
    split_sentences,
    split_to_fit,
)

FAMILY = "👨\u200d👩\u200d👧"
FLAG = "🇨🇳"
THUMBS = "👍🏽"
ACCENT = "e\u0301"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"], id="chinese"),
        pytest.param("先这样；再那样", ["先这样；", "再那样"], id="semicolon"),
        pytest.param("他说：“走吧。”然后走了。", ["他说：“走吧。”", "然后走了。"], id="closing-quote"),
        pytest.param("真的吗？！好吧", ["真的吗？！", "好吧"], id="repeated"),
        pytest.param("Hi there. How are you? Fine!", ["Hi there. ", "How are you? ", "Fine!"], id="english"),
        pytest.param("Mr. Smith paid 3.50 dollars.", ["Mr. Smith paid 3.50 dollars."], id="abbreviation"),
        pytest.param("第一行\n第二行", ["第一行\n", "第二行"], id="line-break"),
        pytest.param("a\r\nb", ["a\r\n", "b"], id="crlf"),
        pytest.param("没有句号", ["没有句号"], id="no-terminator"),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_split_sentences_is_lossless() -> None:
    text = "  开头。 Mixed English. 中文；\n\n  More text?! 「引用。」 end"
    assert "".join(split_sentences(text)) == text


def test_split_lines_keeps_breaks() -> None:
    assert split_lines("a\nb\r\n\nc") == [("a", "\n"), ("b", "\r\n"), ("", "\n"), ("c", "")]
    assert split_lines("a\n") == [("a", "\n")]


def test_pack_sentences_under_limit() -> None:
    sentences = split_sentences("一二三。四五六。七八九。十。")
    pieces = pack_sentences(sentences, 8, len)
    assert pieces == ["一二三。四五六。", "七八九。十。"]
    assert all(len(piece) <= 8 for piece in pieces)


def test_pack_splits_long_sentence() -> None:
    sentence = "这是一个非常长的句子，" * 5 + "结束。"
    pieces = pack_sentences(["短。", sentence, "尾。"], 12, len)
    assert "".join(pieces) == "短。" + sentence + "尾。"
    assert all(len(piece) <= 12 for piece in pieces)
    assert pieces[1].endswith("，")  # cut after a comma where one is near the limit


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7])
def test_split_to_fit_never_splits_character(limit: int) -> None:
    text = f"中{FAMILY}文{FLAG}{FLAG}{THUMBS}{ACCENT}x\ud83d\ude00y"
    parts = split_to_fit(text, limit, len)
    assert "".join(parts) == text
    end = 0
    for part in parts:
        assert part
        end += len(part)
        assert is_boundary(text, end)
    assert any(FAMILY in part for part in parts)
    assert any(THUMBS in part for part in parts)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("中文字", 2, "中文", id="chinese"),
        pytest.param(f"ab{FAMILY}", 4, "ab", id="zwj-family"),
        pytest.param(f"a{FLAG}{FLAG}", 4, f"a{FLAG}", id="flags"),
        pytest.param(f"a{THUMBS}", 2, "a", id="skin-tone"),
        pytest.param(f"a{ACCENT}", 2, "a", id="combining"),
        pytest.param("a\ud83d\ude00", 2, "a", id="surrogate-pair"),
        pytest.param("a\r\nb", 2, "a", id="crlf"),
    ],
)
def test_truncate_chars(text: str, limit: int, expected: str) -> None:
    assert truncate_chars(text, limit) == expected


def test_truncate_utf8_whole_characters() -> None:
    assert truncate_utf8("中文字", 7) == "中文"
    assert truncate_utf8("a😀", 4) == "a"
    assert truncate_utf8("abc", 10) == "abc"


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        pytest.param(["Hello.", "World."], "Hello. World.", id="latin"),
        pytest.param(["你好。", "世界。"], "你好。世界。", id="cjk"),
        pytest.param(["你好。", "World."], "你好。World.", id="mixed"),
        pytest.param([" a ", "", "b"], "a b", id="strips"),
    ],
)
def test_join_pieces(pieces: list[str], expected: str) -> None:
    assert join_pieces(pieces) == expected
