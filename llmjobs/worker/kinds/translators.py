"""Translation adapters: how each kind of checkpoint gets its source and target languages.

- Multilingual seq2seq (NLLB, M2M100): the source language token starts the input and the
  target language token is forced as the first generated token. The tokenizer's special
  tokens tell the convention: FLORES-200 codes ("zho_Hans") or M2M100 codes ("__zh__").
- Marian pair models (opus-mt-en-zh): fixed languages; multi-target ones take a ">>cmn_Hans<<"
  style token in front of the input.
- Instruction-tuned causal LMs: a prompt in the checkpoint's chat template.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from llmjobs.errors import CheckpointError
from llmjobs.languages import language_name, normalise_language, to_flores
from llmjobs.worker.engine import LoadedCheckpoint
from llmjobs.worker.kinds.prompts import encode_prompt

_FLORES_TOKEN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_M2M100_TOKEN = re.compile(r"^__([a-z]{2,3})__$")
_MARIAN_TARGET_TOKEN = re.compile(r"^>>([a-z]{2,3}(?:_[A-Z][a-z]{3})?)<<$")
_OPUS_NAME = re.compile(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})\b")
# FLORES-200 spells Mandarin "zho"; OPUS-MT target tokens spell it "cmn".
_MARIAN_ALIASES = {"zho_Hans": "cmn_Hans", "zho_Hant": "cmn_Hant"}
PROMPT = (
    "Translate the following {source} text into {target}. "
    "Reply with the translation only.\n\n{text}"
)


class Translator(ABC):
    """Encodes pieces for one checkpoint and names the forced first token of the target."""

    def __init__(self, checkpoint: LoadedCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer

    def text_tokens(self, text: str) -> int:
        """Return the number of tokens of text without any special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    @abstractmethod
    def overhead_tokens(self) -> int:
        """Tokens that encode() adds around a piece."""

    @abstractmethod
    def unsupported(self, source: str, target: str) -> str | None:
        """Return why the checkpoint cannot translate source -> target, or None when it can."""

    @abstractmethod
    def encode(self, piece: str, source: str, target: str) -> list[int]:
        """Return the model input ids for one piece."""

    def forced_bos_token_id(self, target: str) -> int | None:
        """Return the token that generation must start with for target, if the model needs one."""
        return None


class MultilingualTranslator(Translator):
    """NLLB and M2M100 checkpoints: input is [source token] text </s>; target token forced first."""

    def __init__(self, checkpoint: LoadedCheckpoint) -> None:
        super().__init__(checkpoint)
        vocabulary = self.tokenizer.get_vocab()
        if any(_FLORES_TOKEN.match(token) for token in vocabulary):
            self.convention = "flores"
        elif any(_M2M100_TOKEN.match(token) for token in vocabulary):
            self.convention = "m2m100"
        else:
            raise CheckpointError(
                f"checkpoint {checkpoint.source!r} is a multilingual seq2seq model, but its tokenizer "
                "has no language tokens in FLORES-200 (eng_Latn) or M2M100 (__en__) style"
            )
        self.vocabulary = vocabulary

    @property
    def overhead_tokens(self) -> int:
        return 2

    def language_token(self, code: str) -> str:
        """Return the tokenizer's token for a language tag ("zh" -> "zho_Hans" or "__zh__")."""
        if self.convention == "flores":
            return to_flores(code)
        return f"__{normalise_language(code).split('-')[0]}__"

    def unsupported(self, source: str, target: str) -> str | None:
        for code in (source, target):
            token = self.language_token(code)
            if token not in self.vocabulary:
                return f"checkpoint {self.checkpoint.source!r} has no language token {token!r} for {code!r}"
        return None

    def encode(self, piece: str, source: str, target: str) -> list[int]:
        ids = self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        return [self.vocabulary[self.language_token(source)], *ids, self.tokenizer.eos_token_id]

    def forced_bos_token_id(self, target: str) -> int | None:
        return int(self.vocabulary[self.language_token(target)])


class MarianTranslator(Translator):
    """Marian pair checkpoints; the pair comes from config source_lang/target_lang or an opus-mt name."""

    def __init__(self, checkpoint: LoadedCheckpoint) -> None:
        super().__init__(checkpoint)
        config = checkpoint.model.config
        pair = (getattr(config, "source_lang", None), getattr(config, "target_lang", None))
        if not all(pair):
            match = _OPUS_NAME.search(f"{checkpoint.source} {getattr(config, '_name_or_path', '')}")
            pair = (match.group(1), match.group(2)) if match else (None, None)
        self.source_family = _family(pair[0]) if pair[0] else None
        self.target_family = _family(pair[1]) if pair[1] else None
        self.target_tokens = {
            match.group(1): token_id
            for token, token_id in self.tokenizer.get_vocab().items()
            if (match := _MARIAN_TARGET_TOKEN.match(token))
        }

    @property
    def overhead_tokens(self) -> int:
        return 2 if self.target_tokens else 1

    def unsupported(self, source: str, target: str) -> str | None:
        if self.source_family and _family(source) != self.source_family:
            return (
                f"checkpoint {self.checkpoint.source!r} translates from "
                f"{self.source_family!r} only, not {source!r}"
            )
        if self.target_family and _family(target) != self.target_family and not self.target_tokens:
            return (
                f"checkpoint {self.checkpoint.source!r} translates into "
                f"{self.target_family!r} only, not {target!r}"
            )
        if self.target_tokens and self._target_token(target) is None:
            return f"checkpoint {self.checkpoint.source!r} has no target token for {target!r}"
        return None

    def encode(self, piece: str, source: str, target: str) -> list[int]:
        ids = self.tokenizer(piece, add_special_tokens=False)["input_ids"]
        token = self._target_token(target)
        prefix = [token] if token is not None else []
        return [*prefix, *ids, self.tokenizer.eos_token_id]

    def _target_token(self, target: str) -> int | None:
        flores = to_flores(target)
        for name in (flores, _MARIAN_ALIASES.get(flores), flores.split("_")[0], _family(target)):
            if name and name in self.target_tokens:
                return self.target_tokens[name]
        return None


class CausalTranslator(Translator):
    """Instruction-tuned causal LMs, prompted through the checkpoint's chat template."""

    @property
    def overhead_tokens(self) -> int:
        return len(self.encode("", "en", "zh"))

    def unsupported(self, source: str, target: str) -> str | None:
        return None

    def encode(self, piece: str, source: str, target: str) -> list[int]:
        prompt = PROMPT.format(source=language_name(source), target=language_name(target), text=piece)
        return encode_prompt(self.tokenizer, [{"role": "user", "content": prompt}])


def translator_for(checkpoint: LoadedCheckpoint) -> Translator:
    """Pick the adapter for a loaded checkpoint."""
    if checkpoint.architecture == "causal":
        return CausalTranslator(checkpoint)
    if checkpoint.model.config.model_type == "marian":
        return MarianTranslator(checkpoint)
    return MultilingualTranslator(checkpoint)


def _family(code: str) -> str:
    return normalise_language(code).split("-")[0]
