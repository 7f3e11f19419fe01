"""The llmjobs moderation taxonomy, its default thresholds, and the mapping from checkpoint labels.

Categories follow OpenAI's moderation categories and extend them with the hazards of Llama
Guard 3 (S1-S14) that OpenAI's list lacks. docs/taxonomy.md documents both tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """Scores at or above ``review`` flag an item for review; at or above ``block`` block it."""

    review: float
    block: float


CATEGORIES: dict[str, str] = {
    "harassment": "harassing, insulting or demeaning language aimed at a person",
    "harassment/threatening": "harassment that threatens violence or serious harm",
    "hate": "hatred or demeaning language based on a protected attribute",
    "hate/threatening": "hateful content that also threatens violence",
    "self-harm": "content that promotes or depicts self-harm, suicide or eating disorders",
    "self-harm/intent": "a statement that the speaker intends to harm themselves",
    "self-harm/instructions": "instructions or advice for self-harm",
    "sexual": "sexually explicit content",
    "sexual/minors": "sexual content involving anyone under 18, or child exploitation",
    "sex-crimes": "content that enables or endorses sex crimes such as trafficking or assault",
    "violence": "content that depicts or promotes violence",
    "violence/graphic": "graphic depictions of death, injury or gore",
    "illicit": "advice or encouragement for non-violent crimes (fraud, theft, drugs, hacking)",
    "illicit/violent": "advice or encouragement for violent crimes",
    "indiscriminate-weapons": "chemical, biological, radiological, nuclear or explosive weapons",
    "defamation": "false statements that damage a real person's reputation",
    "specialized-advice": "unqualified financial, medical or legal advice",
    "privacy": "sensitive personal information about a private person",
    "intellectual-property": "content that infringes copyright or other intellectual property",
    "elections": "false information about electoral processes",
    "code-interpreter-abuse": "attempts to abuse a code interpreter or tool",
    "toxicity": "rude, offensive or abusive content that a classifier does not attribute further",
    "profanity": "obscene or vulgar words",
    "unsafe": "content a binary safety classifier marks unsafe without naming a category",
}

DEFAULT_THRESHOLDS = Thresholds(review=0.5, block=0.8)
# Categories where a missed item costs more than a false alarm get lower thresholds.
CATEGORY_THRESHOLDS: dict[str, Thresholds] = {
    "sexual/minors": Thresholds(review=0.2, block=0.5),
    "self-harm/intent": Thresholds(review=0.3, block=0.7),
    "self-harm/instructions": Thresholds(review=0.3, block=0.7),
    "indiscriminate-weapons": Thresholds(review=0.3, block=0.6),
    "profanity": Thresholds(review=0.6, block=0.95),
}

# Normalised label name -> category; None marks a benign label that maps to no category.
LABEL_CATEGORIES: dict[str, str | None] = {
    # Jigsaw toxic comment labels (unitary/toxic-bert, multilingual toxicity classifiers).
    "toxic": "toxicity",
    "toxicity": "toxicity",
    "severe_toxic": "toxicity",
    "severe_toxicity": "toxicity",
    "obscene": "profanity",
    "profanity": "profanity",
    "threat": "harassment/threatening",
    "insult": "harassment",
    "identity_hate": "hate",
    "identity_attack": "hate",
    "sexual_explicit": "sexual",
    # Offensive / hate speech classifiers (COLD, TweetEval, HateXplain, Chinese offensive).
    "offensive": "toxicity",
    "offense": "toxicity",
    "abusive": "harassment",
    "hate": "hate",
    "hateful": "hate",
    "hate_speech": "hate",
    "harassment": "harassment",
    "sexism": "hate",
    "racism": "hate",
    "spam": None,
    # Binary safety classifiers.
    "unsafe": "unsafe",
    "safe": None,
    # Benign classes.
    "non_toxic": None,
    "not_toxic": None,
    "neutral": None,
    "normal": None,
    "none": None,
    "clean": None,
    "non_offensive": None,
    "not_offensive": None,
    "non_hate": None,
    "not_hate": None,
    "ok": None,
    # Llama Guard 3 hazard codes.
    "s1": "illicit/violent",
    "s2": "illicit",
    "s3": "sex-crimes",
    "s4": "sexual/minors",
    "s5": "defamation",
    "s6": "specialized-advice",
    "s7": "privacy",
    "s8": "intellectual-property",
    "s9": "indiscriminate-weapons",
    "s10": "hate",
    "s11": "self-harm",
    "s12": "sexual",
    "s13": "elections",
    "s14": "code-interpreter-abuse",
}
# The taxonomy's own names map to themselves, so a checkpoint trained on them needs no table.
LABEL_CATEGORIES.update({name: name for name in CATEGORIES})


def normalise_label(label: str) -> str:
    """Lower-case a label and turn spaces and hyphens into underscores ("Severe Toxic" -> "severe_toxic")."""
    return re.sub(r"[\s\-]+", "_", label.strip().lower())


def map_labels(
    id2label: Mapping[int, str], overrides: Mapping[str, str | None] | None = None
) -> dict[str, str | None]:
    """Return raw label -> category (or None) for a checkpoint's labels.

    Binary checkpoints with the default names LABEL_0 / LABEL_1 (or "0" / "1") follow the
    usual convention: class 1 is the harmful class, mapped to "toxicity". Labels that
    neither the table nor overrides know map to None and are reported only as raw labels.
    """
    labels = [id2label[index] for index in sorted(id2label)]
    mapping: dict[str, str | None] = {}
    generic = {normalise_label(label) for label in labels} <= {"label_0", "label_1", "0", "1"}
    for label in labels:
        key = normalise_label(label)
        if overrides is not None and label in overrides:
            mapping[label] = overrides[label]
        elif generic and len(labels) == 2:
            mapping[label] = "toxicity" if key in ("label_1", "1") else None
        elif key in LABEL_CATEGORIES:
            mapping[label] = LABEL_CATEGORIES[key]
        elif key.replace("_", "-") in CATEGORIES:
            mapping[label] = key.replace("_", "-")
        else:
            mapping[label] = None
    return mapping


def unknown_labels(id2label: Mapping[int, str]) -> list[str]:
    """Return the labels that are neither in the mapping table nor the generic binary names."""
    known = set(LABEL_CATEGORIES) | {"label_0", "label_1", "0", "1"}
    return [
        label for label in id2label.values()
        if normalise_label(label) not in known and normalise_label(label).replace("_", "-") not in CATEGORIES
    ]


def thresholds_for(category: str, overrides: Mapping[str, Thresholds] | None = None) -> Thresholds:
    """Return the thresholds in force for a category: the override, else its default."""
    if overrides and category in overrides:
        return overrides[category]
    return CATEGORY_THRESHOLDS.get(category, DEFAULT_THRESHOLDS)


def parse_thresholds(raw: object) -> dict[str, Thresholds]:
    """Validate the "thresholds" parameter: {category: {"review": x, "block": y}}.

    Either bound may be omitted and keeps its default. Raises ValueError naming the first
    unknown category or invalid value.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"thresholds must be an object of category -> {{review, block}}, got {raw!r}")
    parsed: dict[str, Thresholds] = {}
    for category, bounds in raw.items():
        if category not in CATEGORIES:
            raise ValueError(f"thresholds: unknown category {category!r}; see docs/taxonomy.md")
        if not isinstance(bounds, Mapping) or not set(bounds) <= {"review", "block"}:
            raise ValueError(
                f"thresholds[{category!r}] must be {{\"review\": x, \"block\": y}}, got {bounds!r}"
            )
        default = thresholds_for(category)
        review = bounds.get("review", default.review)
        block = bounds.get("block", default.block)
        for name, value in (("review", review), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"thresholds[{category!r}].{name} must be a number from 0 to 1, got {value!r}"
                )
        if review > block:
            raise ValueError(f"thresholds[{category!r}]: review ({review}) must not exceed block ({block})")
        parsed[category] = Thresholds(review=float(review), block=float(block))
    return parsed


def decide(
    categories: Mapping[str, float], overrides: Mapping[str, Thresholds] | None = None
) -> tuple[str, bool, str | None]:
    """Return (decision, flagged, top category) for category scores.

    The decision is "block" when any score reaches its block threshold, "review" when any
    reaches its review threshold, else "allow". The top category is the highest-scoring
    category at or above its review threshold, or None when nothing is flagged.
    """
    flagged_scores = {
        name: score for name, score in categories.items()
        if score >= thresholds_for(name, overrides).review
    }
    if not flagged_scores:
        return "allow", False, None
    blocked = any(score >= thresholds_for(name, overrides).block for name, score in flagged_scores.items())
    top = max(flagged_scores, key=lambda name: flagged_scores[name])
    return ("block" if blocked else "review"), True, top
