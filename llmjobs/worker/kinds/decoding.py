"""Turn generated token ids into clean text: no U+FFFD, no lone surrogates, no special tokens.

For byte-level BPE tokenizers (GPT-2, Qwen, the tiny checkpoints) the tokens are mapped back
to raw bytes and decoded with incomplete UTF-8 sequences dropped. Other tokenizers decode
as usual and lose any U+FFFD they produce.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from llmjobs.text.clean import clean_decoded, decode_utf8_dropping_incomplete


def decode_tokens(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Decode token_ids to text, skipping special tokens and dropping incomplete characters."""
    special = set(tokenizer.all_special_ids)
    kept = [int(token_id) for token_id in token_ids if int(token_id) not in special]
    if not _is_byte_level(tokenizer):
        return clean_decoded(tokenizer.decode(kept, skip_special_tokens=True))

    added = tokenizer.added_tokens_decoder
    byte_values = _unicode_to_byte()
    data = bytearray()
    for token_id, token in zip(kept, tokenizer.convert_ids_to_tokens(kept), strict=True):
        if token_id in added:
            data += added[token_id].content.encode("utf-8")
            continue
        for char in token or "":
            value = byte_values.get(char)
            data += bytes((value,)) if value is not None else char.encode("utf-8")
    return clean_decoded(decode_utf8_dropping_incomplete(bytes(data)))


def _is_byte_level(tokenizer: Any) -> bool:
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and isinstance(backend.decoder, decoders.ByteLevel)


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    # Byte-level BPE spells each byte as one printable character: printable Latin-1 bytes
    # stand for themselves, and the other bytes take code points from 256 upwards in order.
    printable = [
        *range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)
    ]
    mapping = {chr(value): value for value in printable}
    extra = 0
    for value in range(256):
        if value not in printable:
            mapping[chr(256 + extra)] = value
            extra += 1
    return mapping
