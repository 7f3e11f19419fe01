"""A byte-level BPE tokenizer trained locally on generated Chinese and English text.

Byte-level BPE can encode any string, so the tiny checkpoints accept every input that a
real checkpoint does, including emoji and rare Han characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmjobs.checkpoints.corpus import training_lines

BASE_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def train_byte_level_bpe(vocab_size: int = 2000, lines: Sequence[str] | None = None) -> Any:
    """Train a byte-level BPE ``tokenizers.Tokenizer`` with <s>, <pad>, </s>, <unk> as ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BASE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines if lines is not None else training_lines(), trainer)
    return tokenizer


def wrap_tokenizer(
    tokenizer: Any,
    *,
    template: str,
    special_tokens: dict[str, str],
    extra_special_tokens: Sequence[str] = (),
    model_max_length: int = 512,
    chat_template: str | None = None,
) -> Any:
    """Return a transformers fast tokenizer over a copy of tokenizer.

    template is a ``TemplateProcessing`` single-sequence template such as "<s> $A </s>"
    (or "$A" for none); special_tokens maps roles (bos_token, eos_token, pad_token, ...)
    to token strings.
    """
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.add_special_tokens([*special_tokens.values(), *extra_special_tokens])
    used = [token for token in template.split() if not token.startswith("$")]
    copy.post_processor = processors.TemplateProcessing(
        single=template,
        pair=f"{template} $B" if "$A" in template else "$A $B",
        special_tokens=[(token, copy.token_to_id(token)) for token in dict.fromkeys(used)],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=copy, model_max_length=model_max_length, **special_tokens
    )
    if extra_special_tokens:
        wrapped.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    if chat_template is not None:
        wrapped.chat_template = chat_template
    return wrapped
