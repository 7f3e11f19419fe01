"""Build tiny random-weight checkpoints for every adapter; their outputs are meaningless.

Each checkpoint is saved with ``save_pretrained``, so it loads through the same code as a
real one. Builds are seeded and give the same files, and so the same revision, each time.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llmjobs.checkpoints.tokenizer import train_byte_level_bpe, wrap_tokenizer

log = logging.getLogger(__name__)

SEED = 1234
# Random weights at the usual 0.02 make greedy decoding repeat one token, which would hide
# batching bugs. At 0.3 the tiny models give varied tokens and scores.
INITIALIZER_RANGE = 0.3
# Written last inside a checkpoint folder: its presence means the build finished.
MANIFEST = "llmjobs-tiny.json"

# The tiny checkpoint each kind uses when no real checkpoint is configured.
DEFAULT_FOR_KIND = {"moderate": "classifier", "translate": "m2m100-nllb", "write": "causal-qwen2"}

TOXICITY_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
FLORES_CODES = (
    "eng_Latn", "zho_Hans", "zho_Hant", "jpn_Jpan", "kor_Hang", "fra_Latn", "deu_Latn",
    "spa_Latn", "por_Latn", "ita_Latn", "rus_Cyrl", "arb_Arab", "vie_Latn", "tha_Thai",
    "ind_Latn",
)
# ChatML, the conversation format of Qwen2 instruct checkpoints.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
_BASE_SPECIAL = {
    "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"
}


def build_tiny_checkpoints(directory: Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """Build the named tiny checkpoints (default: all) into directory; return name -> folder.

    Folders that already hold a finished build are kept. Each build goes to a temporary
    folder first and is renamed into place, so two processes building at once never leave
    a half-written checkpoint: the slower one drops its copy.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer: Any = None
    built: dict[str, Path] = {}
    for name in names if names is not None else BUILDERS:
        if name not in BUILDERS:
            raise ValueError(f"unknown tiny checkpoint {name!r}; expected one of {', '.join(BUILDERS)}")
        target = directory / name
        if not (target / MANIFEST).is_file():
            if tokenizer is None:
                tokenizer = train_byte_level_bpe()
            _build_into_place(target, functools.partial(_call_builder, BUILDERS[name], tokenizer))
        built[name] = target
    return built


def ensure_tiny_checkpoints(home: Path) -> dict[str, Path]:
    """Build, once, the tiny checkpoints under home/checkpoints/tiny; return kind -> folder."""
    folders = build_tiny_checkpoints(home / "checkpoints" / "tiny", DEFAULT_FOR_KIND.values())
    return {kind: folders[name] for kind, name in DEFAULT_FOR_KIND.items()}


def build_classifier(
    folder: Path, tokenizer: Any, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
    labels: tuple[str, ...] = TOXICITY_LABELS, multi_label: bool = True,
) -> None:
    """Save an XLM-RoBERTa classifier (multi-label sigmoid, or single-label softmax) into folder."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    wrapped = wrap_tokenizer(tokenizer, template="<s> $A </s>", special_tokens=_BASE_SPECIAL)
    config = XLMRobertaConfig(
        vocab_size=len(wrapped), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=hidden_size * 4,
        max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
        initializer_range=INITIALIZER_RANGE,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    _seed()
    model = XLMRobertaForSequenceClassification(config)
    _save(folder, model, wrapped, "classifier")


def build_marian(folder: Path, tokenizer: Any) -> None:
    """Save a Marian en->zh pair model; config.json names the pair in source_lang/target_lang."""
    from transformers import MarianConfig, MarianMTModel

    wrapped = wrap_tokenizer(tokenizer, template="$A </s>", special_tokens=_BASE_SPECIAL)
    config = MarianConfig(
        vocab_size=len(wrapped), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=512, pad_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, forced_eos_token_id=2, init_std=INITIALIZER_RANGE,
    )
    # Marian configs do not name their languages; MarianTranslator reads these two attributes.
    config.source_lang = "en"
    config.target_lang = "zh"
    _seed()
    _save(folder, MarianMTModel(config), wrapped, "seq2seq")


def build_m2m100(folder: Path, tokenizer: Any) -> None:
    """Save an M2M100 model whose tokenizer has NLLB's FLORES-200 language tokens."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    wrapped = wrap_tokenizer(
        tokenizer, template="$A </s>", special_tokens=_BASE_SPECIAL,
        extra_special_tokens=FLORES_CODES,
    )
    config = M2M100Config(
        vocab_size=len(wrapped), d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, init_std=INITIALIZER_RANGE,
    )
    _seed()
    _save(folder, M2M100ForConditionalGeneration(config), wrapped, "seq2seq")


def build_causal_lm(
    folder: Path, tokenizer: Any, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
    kv_heads: int = 2, intermediate_size: int | None = None,
) -> None:
    """Save a Qwen2 causal LM with a ChatML chat template into folder."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    wrapped = wrap_tokenizer(
        tokenizer, template="$A",
        special_tokens={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"},
        extra_special_tokens=("<|im_start|>",), model_max_length=4096, chat_template=CHAT_TEMPLATE,
    )
    end_of_text = wrapped.convert_tokens_to_ids("<|endoftext|>")
    end_of_turn = wrapped.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(wrapped), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        intermediate_size=intermediate_size or hidden_size * 4, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=end_of_turn,
        pad_token_id=end_of_text, initializer_range=INITIALIZER_RANGE,
    )
    _seed()
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = [end_of_turn, end_of_text]
    model.generation_config.pad_token_id = end_of_text
    _save(folder, model, wrapped, "causal")


BUILDERS: dict[str, Callable[[Path, Any], None]] = {
    "classifier": build_classifier,
    "marian-en-zh": build_marian,
    "m2m100-nllb": build_m2m100,
    "causal-qwen2": build_causal_lm,
}


def _build_into_place(target: Path, build: Callable[[Path], None]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same checkpoint first; keep its copy.
            if not (target / MANIFEST).is_file():
                raise
        else:
            log.info("Built tiny checkpoint %s.", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _call_builder(builder: Callable[[Path, Any], None], tokenizer: Any, folder: Path) -> None:
    builder(folder, tokenizer)


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def _save(folder: Path, model: Any, tokenizer: Any, architecture: str) -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    manifest = {
        "architecture": architecture,
        "model_type": model.config.model_type,
        "note": "tiny random weights for tests and demos: outputs are meaningless",
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
