"""Sentence splitting for Chinese, Japanese and Latin-script text, and packing into pieces.

Every function here is lossless: joining what it returns gives back its input, so a
caller can translate pieces and rebuild the text without dropping anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from llmjobs.text.graphemes import boundaries

# Full-width terminators end a sentence wherever they stand.
_CJK_TERMINATORS = "。！？；…｡！？；．"
# ASCII terminators end a sentence only before whitespace or the end of the text.
_LATIN_TERMINATORS = ".!?;"
_CLOSING = "\"'”’」』）)]】》〉»"
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "jr", "sr",
     "no", "fig", "approx", "dept"]
)
# Cut an over-long sentence after one of these when one is near the limit.
_SOFT_BREAKS = " \t，、,：:）)」』"
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def split_lines(text: str) -> list[tuple[str, str]]:
    """Split text into (line, line break) pairs; the last pair's line break may be ""."""
    lines: list[tuple[str, str]] = []
    for match in _LINE.finditer(text):
        whole = match.group(0)
        if not whole and match.start() == len(text) and lines:
            break
        content = whole.rstrip("\r\n")
        lines.append((content, whole[len(content):]))
        if match.end() == len(text):
            break
    return lines


def split_sentences(text: str) -> list[str]:
    """Split text after sentence terminators (。！？；… .!?;) and line breaks, keeping every character.

    Closing quotes and brackets after a terminator, and the whitespace after it, stay with
    the sentence they close.
    """
    sentences: list[str] = []
    start = 0
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        end = None
        if char in "\r\n":
            end = index + 1
        elif char in _CJK_TERMINATORS or (
            char in _LATIN_TERMINATORS and _ends_latin_sentence(text, start, index)
        ):
            end = _skip_closers(text, index + 1)
        if end is None:
            index += 1
            continue
        while end < length and text[end] in " \t\r\n\u3000":
            if text[end] in "\r\n":
                end += 2 if text[end] == "\r" and text[end + 1: end + 2] == "\n" else 1
                break
            end += 1
        sentences.append(text[start:end])
        start = index = end
    if start < length:
        sentences.append(text[start:])
    return sentences


def pack_sentences(
    sentences: list[str], max_tokens: int, count_tokens: Callable[[str], int]
) -> list[str]:
    """Join consecutive sentences into pieces of at most max_tokens tokens each.

    A sentence longer than max_tokens on its own is cut at character-safe points by
    ``split_to_fit``. Joining the pieces gives back the joined sentences.
    """
    pieces: list[str] = []
    current = ""
    for sentence in sentences:
        if count_tokens(sentence) > max_tokens:
            if current:
                pieces.append(current)
                current = ""
            pieces.extend(split_to_fit(sentence, max_tokens, count_tokens))
            continue
        candidate = current + sentence
        if current and count_tokens(candidate) > max_tokens:
            pieces.append(current)
            current = sentence
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def split_to_fit(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Cut text into consecutive parts of at most max_tokens tokens, never inside a character.

    Each cut prefers a comma or a space in the second half of the part. A single character
    that alone exceeds max_tokens still becomes a part of its own, so the loop always ends.
    """
    parts: list[str] = []
    rest = text
    while rest:
        if count_tokens(rest) <= max_tokens:
            parts.append(rest)
            break
        cut = _longest_fitting_prefix(rest, max_tokens, count_tokens)
        parts.append(rest[:cut])
        rest = rest[cut:]
    return parts


def _longest_fitting_prefix(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> int:
    cuts = boundaries(text)
    low, high = 0, len(cuts) - 1
    best = cuts[0]
    while low <= high:
        middle = (low + high) // 2
        if count_tokens(text[: cuts[middle]]) <= max_tokens:
            best = cuts[middle]
            low = middle + 1
        else:
            high = middle - 1
    safe = set(cuts)
    for position in range(best, best // 2, -1):
        if text[position - 1] in _SOFT_BREAKS and position in safe:
            return position
    return best


def _ends_latin_sentence(text: str, start: int, index: int) -> bool:
    after = _skip_closers(text, index + 1)
    if after < len(text) and not text[after].isspace():
        return False
    if text[index] != ".":
        return True
    words = text[start:index].split()
    last_word = words[-1].lower() if words else ""
    if last_word in _ABBREVIATIONS:
        return False
    # A single capital letter before the dot is usually an initial, as in "J. Smith".
    return not (len(last_word) == 1 and text[index - 1].isupper())


def _skip_closers(text: str, index: int) -> int:
    while index < len(text) and (
        text[index] in _CLOSING or text[index] in _CJK_TERMINATORS or text[index] in "!?."
    ):
        index += 1
    return index


def join_pieces(pieces: list[str]) -> str:
    """Join translated pieces of one line: no space next to CJK text, one space between Latin pieces."""
    joined = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if joined and not (is_cjk(joined[-1]) or is_cjk(piece[0])):
            joined += " "
        joined += piece
    return joined


def is_cjk(char: str) -> bool:
    """Return whether char is a Han, kana or hangul character or CJK / full-width punctuation."""
    code = ord(char)
    return (
        0x2E80 <= code <= 0x9FFF  # CJK radicals, punctuation, kana, Han
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x20000 <= code <= 0x3FFFF  # Han extensions B and later
    )
