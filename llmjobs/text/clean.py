"""Remove what a model's decoded output must never contain: U+FFFD and lone surrogates.

Small or random byte-level models can stop in the middle of a multi-byte UTF-8 sequence.
Those incomplete sequences are dropped, never replaced, so results stay valid text.
"""

from __future__ import annotations

REPLACEMENT_CHARACTER = "\ufffd"


def decode_utf8_dropping_incomplete(data: bytes) -> str:
    """Decode UTF-8 bytes, dropping every invalid or incomplete byte sequence."""
    return data.decode("utf-8", errors="ignore")


def clean_decoded(text: str) -> str:
    """Return text without U+FFFD and without lone surrogates.

    A high surrogate followed by a low surrogate (text built with ``surrogatepass``) is
    joined into the code point it encodes; any other surrogate is dropped.
    """
    if REPLACEMENT_CHARACTER not in text and not has_surrogates(text):
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        code = ord(char)
        if char == REPLACEMENT_CHARACTER:
            index += 1
            continue
        if 0xD800 <= code <= 0xDBFF and index + 1 < len(text):
            low = ord(text[index + 1])
            if 0xDC00 <= low <= 0xDFFF:
                out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                index += 2
                continue
        if 0xD800 <= code <= 0xDFFF:
            index += 1
            continue
        out.append(char)
        index += 1
    return "".join(out)


def has_surrogates(text: str) -> bool:
    """Return whether text contains any code point in the surrogate range U+D800..U+DFFF."""
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def is_clean(text: str) -> bool:
    """Return whether text has neither U+FFFD nor a surrogate code point."""
    return REPLACEMENT_CHARACTER not in text and not has_surrogates(text)


# Unicode categories that show nothing: separators, controls, format characters such as
# zero-width joiners, byte order marks and direction marks, and unassigned code points.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cn", "Co", "Cs"})


def is_blank(text: str) -> bool:
    """True when text has no visible character: empty, whitespace, or only invisible marks."""
    import unicodedata

    return all(
        char.isspace() or unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text
    )
