"""Character-safe cut points: never inside a surrogate pair, a combining sequence or an emoji.

The rules are a subset of Unicode's extended grapheme clusters (UAX #29) that covers the
cases met in practice: CR LF, combining marks, variation selectors, emoji modifiers and
tags, zero-width-joiner sequences, regional-indicator flags and Hangul jamo.
"""

from __future__ import annotations

import unicodedata

ZERO_WIDTH_JOINER = "\u200d"


def is_boundary(text: str, index: int) -> bool:
    """Return whether text may be cut before ``text[index]`` without splitting a character."""
    if index <= 0 or index >= len(text):
        return True
    previous, current = text[index - 1], text[index]
    if previous == "\r" and current == "\n":
        return False
    if _is_high_surrogate(previous) and _is_low_surrogate(current):
        return False
    if ZERO_WIDTH_JOINER in (previous, current) or _extends(current):
        return False
    if _is_regional_indicator(current) and _is_regional_indicator(previous):
        # Flags are pairs of regional indicators: cut only after an even-length run.
        run = 0
        position = index - 1
        while position >= 0 and _is_regional_indicator(text[position]):
            run += 1
            position -= 1
        return run % 2 == 0
    return True


def previous_boundary(text: str, index: int) -> int:
    """Return the largest safe cut point at or before index."""
    index = max(0, min(index, len(text)))
    while index > 0 and not is_boundary(text, index):
        index -= 1
    return index


def boundaries(text: str) -> list[int]:
    """Return every safe cut point of text after the start, ending with len(text)."""
    return [index for index in range(1, len(text) + 1) if is_boundary(text, index)]


def truncate_chars(text: str, max_chars: int) -> str:
    """Return the longest prefix of at most max_chars code points that ends at a safe cut point."""
    if len(text) <= max_chars:
        return text
    return text[: previous_boundary(text, max_chars)]


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Return the longest prefix whose UTF-8 encoding fits in max_bytes, cut at a safe point."""
    if len(text.encode("utf-8", errors="surrogatepass")) <= max_bytes:
        return text
    size = 0
    end = 0
    for index, char in enumerate(text):
        size += len(char.encode("utf-8", errors="surrogatepass"))
        if size > max_bytes:
            break
        end = index + 1
    return text[: previous_boundary(text, end)]


def _extends(char: str) -> bool:
    code = ord(char)
    if unicodedata.category(char) in ("Mn", "Me", "Mc"):
        return True
    return (
        0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
        or 0x1160 <= code <= 0x11FF  # Hangul medial vowels and final consonants
        or 0xD7B0 <= code <= 0xD7FF  # Hangul jamo extended-B
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _is_high_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDBFF


def _is_low_surrogate(char: str) -> bool:
    return 0xDC00 <= ord(char) <= 0xDFFF
