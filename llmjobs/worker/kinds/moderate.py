"""Moderation with a sequence-classification checkpoint, scored on the llmjobs taxonomy.

Multi-label checkpoints (config.problem_type "multi_label_classification") score each label
with a sigmoid; others with a softmax over labels. Each taxonomy category takes the highest
score among the labels mapped to it, and thresholds turn the categories into a decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmjobs.config import Settings
from llmjobs.worker.engine import LoadedCheckpoint
from llmjobs.worker.kinds.base import (
    ItemResult,
    JobKind,
    WorkItem,
    check_deadline,
    failed,
    model_call,
    register_kind,
)
from llmjobs.worker.taxonomy import CATEGORIES, decide, map_labels, parse_thresholds, unknown_labels

log = logging.getLogger(__name__)


@dataclass
class ModerationBatch:
    """Tokenized inputs of a micro-batch, and which items were truncated to fit."""

    encoded: Any
    input_tokens: list[int]
    truncated: list[bool]


@register_kind
class ModerateKind(JobKind):
    """Scores text on the taxonomy and decides allow, review or block."""

    name = "moderate"

    def __init__(self, checkpoint: LoadedCheckpoint, settings: Settings) -> None:
        super().__init__(checkpoint, settings)
        config = checkpoint.model.config
        self.id2label: dict[int, str] = {int(index): str(label) for index, label in config.id2label.items()}
        self.labels = [self.id2label[index] for index in sorted(self.id2label)]
        self.multi_label = config.problem_type == "multi_label_classification"
        self.label_categories = map_labels(self.id2label)
        unknown = unknown_labels(self.id2label)
        if unknown:
            log.warning(
                "Checkpoint %s has labels %s that map to no taxonomy category; they appear only "
                "under output.labels. Pass a label_map parameter to map them.",
                checkpoint.source, unknown,
            )

    def check(self, item: WorkItem) -> ItemResult | None:
        try:
            parse_thresholds(item.params.get("thresholds"))
            _parse_label_map(item.params.get("label_map"))
        except ValueError as error:
            return failed(item, "invalid_input", str(error))
        return None

    def token_count(self, item: WorkItem) -> int:
        return self.token_counts([item])[0]

    def token_counts(self, items: Sequence[WorkItem]) -> list[int]:
        # One tokenizer call for the whole chunk instead of one per item.
        limit = self.max_input_tokens
        return [min(count, limit) for count in self.text_token_counts([item.text for item in items])]

    def preprocess(self, items: Sequence[WorkItem]) -> ModerationBatch:
        tokenizer = self.checkpoint.tokenizer
        texts = [item.text for item in items]
        limit = self.max_input_tokens
        full = tokenizer(texts, verbose=False)
        full_lengths = [len(ids) for ids in full["input_ids"]]
        if max(full_lengths, default=0) > limit:
            # The tokenizer cuts at a token boundary and keeps the closing special token.
            encoded = tokenizer(texts, truncation=True, max_length=limit, padding=True,
                                return_tensors="pt")
        else:
            # Nothing to cut, so the encodings above are padded instead of tokenising again.
            encoded = tokenizer.pad(full, return_tensors="pt")
        return ModerationBatch(
            encoded=encoded,
            input_tokens=[min(length, limit) for length in full_lengths],
            truncated=[length > limit for length in full_lengths],
        )

    def forward(self, prepared: ModerationBatch, deadline: float | None) -> list[list[float]]:
        check_deadline(deadline)
        model = self.checkpoint.model
        with model_call(self.checkpoint.device):
            inputs = {name: tensor.to(self.checkpoint.device) for name, tensor in prepared.encoded.items()}
            logits = model(**inputs).logits.float()
            scores = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
            rows: list[list[float]] = scores.cpu().tolist()
        return rows

    def postprocess(
        self, items: Sequence[WorkItem], prepared: ModerationBatch, raw: list[list[float]]
    ) -> list[ItemResult]:
        results = []
        for index, (item, row) in enumerate(zip(items, raw, strict=True)):
            labels = {label: round(score, 6) for label, score in zip(self.labels, row, strict=True)}
            mapping = {**self.label_categories, **_parse_label_map(item.params.get("label_map"))}
            categories = category_scores(labels, mapping)
            decision, flagged, top = decide(categories, parse_thresholds(item.params.get("thresholds")))
            output = {
                "categories": categories,
                "labels": labels,
                "flagged": flagged,
                "decision": decision,
                "top_category": top,
                "truncated": prepared.truncated[index],
            }
            results.append(ItemResult(
                job_id=item.job_id, status="succeeded", output=output,
                input_tokens=prepared.input_tokens[index], decision=decision, scores=categories,
            ))
        return results


def category_scores(labels: Mapping[str, float], mapping: Mapping[str, str | None]) -> dict[str, float]:
    """Return category -> highest score among the labels mapped to it; unmapped labels are left out."""
    categories: dict[str, float] = {}
    for label, score in labels.items():
        category = mapping.get(label)
        if category is not None:
            categories[category] = max(score, categories.get(category, 0.0))
    return categories


def _parse_label_map(raw: object) -> dict[str, str | None]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"label_map must be an object of checkpoint label -> category, got {raw!r}")
    for label, category in raw.items():
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"label_map[{label!r}]: unknown category {category!r}; see docs/taxonomy.md")
    return {str(label): category for label, category in raw.items()}
