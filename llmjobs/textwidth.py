"""Terminal display width of text, where East Asian wide characters take two columns."""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"


def char_width(char: str) -> int:
    """Return the columns one code point takes: 2 for wide and fullwidth, 0 for combining marks."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return 2
    return 1


def display_width(text: str) -> int:
    return sum(char_width(char) for char in text)


def _escape_table() -> dict[int, str]:
    # C0 controls, DEL, C1 controls, and the bidirectional embeddings, overrides and
    # isolates that can make a terminal show text in an order other than the stored one.
    codes = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    return {code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in codes}


_ESCAPES = _escape_table()
_ESCAPES_KEEPING_LINES = {code: text for code, text in _ESCAPES.items() if chr(code) not in "\n\t"}


def printable(text: str, keep_lines: bool = True) -> str:
    """Return text safe to write to a terminal: control characters become visible escapes.

    Stored text is untouched: this is for human-readable output only, where an escape
    sequence in hostile input could otherwise move the cursor or retitle the window.
    keep_lines keeps line feeds and tabs as they are.
    """
    return text.translate(_ESCAPES_KEEPING_LINES if keep_lines else _ESCAPES)


def one_line(text: str) -> str:
    """Replace line breaks and tabs with spaces and escape other control characters."""
    spaced = " ".join(text.split("\n")).replace("\r", " ").replace("\t", " ")
    return printable(spaced, keep_lines=False)


def truncate(text: str, width: int, ellipsis: str = ELLIPSIS) -> str:
    """Cut text to at most `width` columns, ending in `ellipsis` when anything was cut.

    The cut falls between code points, and a combining mark stays with the character
    before it, so a wide character is never split in half and no accent is left behind.
    """
    if display_width(text) <= width:
        return text
    budget = width - display_width(ellipsis)
    if budget < 0:
        return ""
    used = 0
    end = 0
    for index, char in enumerate(text):
        columns = char_width(char)
        if used + columns > budget:
            break
        used += columns
        end = index + 1
    # Zero-width marks always fit, so they stay with their base character. A trailing
    # zero-width joiner would join the ellipsis to an emoji sequence, so it is dropped.
    return text[:end].rstrip("\u200d") + ellipsis


def pad(text: str, width: int) -> str:
    """Truncate, then right-pad with spaces to exactly `width` columns."""
    cut = truncate(text, width)
    return cut + " " * (width - display_width(cut))
