"""Translation: languages per row, long text split at sentence boundaries and rejoined in order.

Each line of the input is split into sentences and packed into pieces that fit the
checkpoint's input limit. All pieces of a micro-batch are translated together, then each
line is rebuilt from its pieces in order, keeping the original line breaks and indentation.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmjobs.config import Settings
from llmjobs.languages import normalise_language
from llmjobs.text.detect import detect_language
from llmjobs.text.segment import join_pieces, pack_sentences, split_lines, split_sentences
from llmjobs.worker.engine import LoadedCheckpoint
from llmjobs.worker.kinds.base import ItemResult, JobKind, WorkItem, failed, register_kind
from llmjobs.worker.kinds.decoding import decode_tokens
from llmjobs.worker.kinds.generation import Generation, GenerationOptions, generate
from llmjobs.worker.kinds.translators import translator_for


@dataclass(frozen=True)
class LanguagePair:
    """Source and target tags of one item, and whether the source was detected."""

    source: str
    target: str
    detected: bool


@dataclass
class Line:
    """One input line: its indentation, the indexes of its pieces, and its line break."""

    indent: str
    pieces: list[int]
    line_break: str


@dataclass
class ItemPlan:
    """The translation plan of one item: its languages, its lines, and its rows in the batch."""

    pair: LanguagePair
    lines: list[Line] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


@dataclass
class TranslationBatch:
    """Encoded pieces of a micro-batch (rows) and the plan of each item."""

    plans: list[ItemPlan]
    rows: list[list[int]]
    targets: list[str]


@register_kind
class TranslateKind(JobKind):
    """Translates text into params["target_lang"] from params["source_lang"] or a detected source."""

    name = "translate"

    def __init__(self, checkpoint: LoadedCheckpoint, settings: Settings) -> None:
        super().__init__(checkpoint, settings)
        self.translator = translator_for(checkpoint)

    @property
    def piece_tokens(self) -> int:
        """Maximum text tokens of one piece, leaving room for the adapter's special tokens."""
        return max(8, self.max_input_tokens - self.translator.overhead_tokens)

    def languages(self, item: WorkItem) -> LanguagePair:
        """Return the item's language pair; raise ValueError for a missing or invalid code."""
        target = _param(item.params, "target_lang", "target")
        if not target:
            raise ValueError("target_lang is missing; set it to a language code such as 'en' or 'zh'")
        source = _param(item.params, "source_lang", "source")
        detected = not source or str(source).lower() == "auto"
        source_tag = _detect(item.text) if detected else normalise_language(str(source))
        return LanguagePair(source_tag, normalise_language(str(target)), detected)

    def group_key(self, item: WorkItem) -> Hashable:
        try:
            pair = self.languages(item)
        except ValueError:
            return ("invalid",)
        return (pair.source, pair.target)

    def token_count(self, item: WorkItem) -> int:
        return self.translator.text_tokens(item.text) + self.translator.overhead_tokens

    def check(self, item: WorkItem) -> ItemResult | None:
        try:
            pair = self.languages(item)
        except ValueError as error:
            return failed(item, "invalid_input", str(error))
        if pair.source == pair.target:
            return None
        reason = self.translator.unsupported(pair.source, pair.target)
        return failed(item, "invalid_input", reason) if reason else None

    def preprocess(self, items: Sequence[WorkItem]) -> TranslationBatch:
        batch = TranslationBatch(plans=[], rows=[], targets=[])
        for item in items:
            plan = ItemPlan(pair=self.languages(item))
            for content, line_break in split_lines(item.text):
                indent = content[: len(content) - len(content.lstrip())]
                line = Line(indent=indent, pieces=[], line_break=line_break)
                if plan.pair.source != plan.pair.target:
                    for piece in self.split(content.strip()):
                        line.pieces.append(len(batch.rows))
                        plan.rows.append(len(batch.rows))
                        batch.rows.append(self.translator.encode(piece, plan.pair.source, plan.pair.target))
                        batch.targets.append(plan.pair.target)
                plan.lines.append(line)
            batch.plans.append(plan)
        return batch

    def split(self, text: str) -> list[str]:
        """Split one line of text into pieces that fit the checkpoint; empty text gives no pieces."""
        if not text:
            return []
        pieces = pack_sentences(split_sentences(text), self.piece_tokens, self.translator.text_tokens)
        return [piece.strip() for piece in pieces if piece.strip()]

    def forward(self, prepared: TranslationBatch, deadline: float | None) -> list[Generation]:
        results: list[Generation | None] = [None] * len(prepared.rows)
        for indexes in self._sub_batches(prepared):
            rows = [prepared.rows[index] for index in indexes]
            # Translations need room to grow: Chinese to English often takes more tokens.
            limit = min(self.max_input_tokens, 2 * max(len(row) for row in rows) + 16)
            if self.settings.translate_max_new_tokens:
                limit = min(limit, self.settings.translate_max_new_tokens)
            options = [GenerationOptions(max_new_tokens=limit)] * len(rows)
            forced = self.translator.forced_bos_token_id(prepared.targets[indexes[0]])
            generated = generate(self.checkpoint, rows, options, deadline, forced)
            for index, generation in zip(indexes, generated, strict=True):
                results[index] = generation
        return [result for result in results if result is not None]

    def postprocess(
        self, items: Sequence[WorkItem], prepared: TranslationBatch, raw: list[Generation]
    ) -> list[ItemResult]:
        texts = [decode_tokens(self.checkpoint.tokenizer, generation.token_ids) for generation in raw]
        results = []
        for item, plan in zip(items, prepared.plans, strict=True):
            if plan.pair.source == plan.pair.target:
                text = item.text
            else:
                text = "".join(
                    (line.indent + join_pieces([texts[row] for row in line.pieces]) if line.pieces else "")
                    + line.line_break
                    for line in plan.lines
                )
            output = {
                "text": text,
                "source_lang": plan.pair.source,
                "target_lang": plan.pair.target,
                "pieces": len(plan.rows),
                "detected_source": plan.pair.detected,
            }
            results.append(ItemResult(
                job_id=item.job_id, status="succeeded", output=output,
                input_tokens=sum(len(prepared.rows[row]) for row in plan.rows),
                output_tokens=sum(raw[row].output_tokens for row in plan.rows),
            ))
        return results

    def _sub_batches(self, prepared: TranslationBatch) -> list[list[int]]:
        # One item can give many pieces, so the pieces are re-batched under the same limits as
        # items: the same target (one forced first token), at most max_batch_size rows, and
        # rows x longest row within max_batch_tokens.
        order = sorted(
            range(len(prepared.rows)),
            key=lambda index: (prepared.targets[index], len(prepared.rows[index])),
        )
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            width = max([len(prepared.rows[index])] + [len(prepared.rows[i]) for i in current])
            same_target = not current or prepared.targets[current[0]] == prepared.targets[index]
            fits = len(current) < self.settings.max_batch_size and width * (len(current) + 1) <= max(
                self.settings.max_batch_tokens, width
            )
            if current and not (same_target and fits):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches


def _param(params: Mapping[str, Any], name: str, alias: str) -> Any:
    value = params.get(name)
    return value if value not in (None, "") else params.get(alias)


@functools.lru_cache(maxsize=4096)
def _detect(text: str) -> str:
    try:
        return normalise_language(detect_language(text))
    except ValueError:
        raise ValueError(
            "source_lang is missing and cannot be detected from text without letters; set source_lang"
        ) from None


