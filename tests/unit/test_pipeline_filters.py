"""Step filters: parsing with located problems, and matching step outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from llmjobs.pipelines.filters import DEFAULT_FILTER, Condition, StepOutcome, parse_filter

ALLOWED = StepOutcome("succeeded", {"decision": "allow", "flagged": False, "top_category": None,
                                    "categories": {"hate": 0.1, "toxicity": 0.3}})
BLOCKED = StepOutcome("succeeded", {"decision": "block", "flagged": True, "top_category": "hate",
                                    "categories": {"hate": 0.9}})
FAILED = StepOutcome("failed", None)


def compile_filter(raw: Any, kind: str = "moderate") -> tuple[Condition, list[tuple[Any, str]]]:
    problems: list[tuple[Any, str]] = []
    condition = parse_filter(raw, kind, ("filter",), lambda path, message: problems.append((path, message)))
    return condition, problems


@pytest.mark.parametrize(
    ("raw", "allowed", "blocked", "failed"),
    [
        pytest.param({"decision": {"in": ["allow"]}}, True, False, False, id="decision-in"),
        pytest.param({"decision": "block"}, False, True, False, id="decision-equals"),
        pytest.param({"decision": {"not_in": ["block"]}}, True, False, False, id="decision-not-in"),
        pytest.param({"flagged": False}, True, False, False, id="flagged"),
        pytest.param({"status": "succeeded"}, True, True, False, id="status"),
        pytest.param({"status": {"ne": "succeeded"}}, False, False, True, id="status-ne"),
        pytest.param({"score": {"category": "hate", "below": 0.5}}, True, False, False, id="score-below"),
        pytest.param({"score": {"category": "hate", "at_least": 0.9}}, False, True, False,
                     id="score-at-least"),
        pytest.param({"score": {"category": "sexual", "below": 0.5}}, True, True, False,
                     id="unscored-category-is-zero"),
        pytest.param({"any": [{"decision": "allow"}, {"top_category": "hate"}]}, True, True, False,
                     id="any"),
        pytest.param({"all": [{"status": "succeeded"}, {"flagged": True}]}, False, True, False,
                     id="all"),
        pytest.param({"not": {"decision": "allow"}}, False, True, True, id="not"),
        pytest.param({"decision": "allow", "score": {"category": "toxicity", "above": 0.2}},
                     True, False, False, id="implicit-and"),
    ],
)
def test_filter_matches(raw: Any, allowed: bool, blocked: bool, failed: bool) -> None:
    condition, problems = compile_filter(raw)

    assert problems == []
    assert condition.matches(ALLOWED) is allowed
    assert condition.matches(BLOCKED) is blocked
    assert condition.matches(FAILED) is failed


def test_default_filter_keeps_succeeded() -> None:
    assert DEFAULT_FILTER.matches(ALLOWED)
    assert not DEFAULT_FILTER.matches(FAILED)
    assert not DEFAULT_FILTER.matches(StepOutcome("skipped", None))


def test_translate_fields() -> None:
    condition, problems = compile_filter({"target_lang": "en"}, kind="translate")

    assert problems == []
    assert condition.matches(StepOutcome("succeeded", {"text": "hi", "target_lang": "en"}))
    assert not condition.matches(StepOutcome("succeeded", {"text": "hi", "target_lang": "ja"}))


@pytest.mark.parametrize(
    ("raw", "kind", "path", "fragment"),
    [
        pytest.param({"decison": "allow"}, "moderate", ("filter", "decison"), "unknown field",
                     id="unknown-field"),
        pytest.param({"decision": "allow"}, "translate", ("filter", "decision"),
                     "after a translate step", id="field-of-other-kind"),
        pytest.param({"score": {"category": "hate", "below": 0.5}}, "write", ("filter", "score"),
                     "unknown field 'score'", id="score-after-write"),
        pytest.param({"decision": {"in": ["allow", "maybe"]}}, "moderate",
                     ("filter", "decision", "in", 1), "'maybe'", id="bad-decision"),
        pytest.param({"decision": {"like": "a%"}}, "moderate", ("filter", "decision"),
                     "one operator", id="unknown-operator"),
        pytest.param({"flagged": "no"}, "moderate", ("filter", "flagged"), "true or false",
                     id="flagged-not-boolean"),
        pytest.param({"score": {"category": "spite", "below": 0.5}}, "moderate",
                     ("filter", "score", "category"), "unknown category", id="unknown-category"),
        pytest.param({"score": {"category": "hate", "below": 5}}, "moderate",
                     ("filter", "score", "below"), "from 0 to 1", id="bound-out-of-range"),
        pytest.param({"any": []}, "moderate", ("filter", "any"), "non-empty list", id="empty-any"),
        pytest.param({"all": [{"decison": "allow"}]}, "moderate", ("filter", "all", 0, "decison"),
                     "unknown field", id="nested-unknown-field"),
        pytest.param("decision == 'allow'", "moderate", ("filter",), "mapping", id="expression-text"),
    ],
)
def test_filter_problems(raw: Any, kind: str, path: tuple[Any, ...], fragment: str) -> None:
    _condition, problems = compile_filter(raw, kind)

    assert len(problems) == 1
    assert problems[0][0] == path
    assert fragment in problems[0][1]


def test_describe_reads_as_expression() -> None:
    condition, _ = compile_filter({"decision": {"in": ["allow"]}, "score": {"category": "hate",
                                                                           "below": 0.5}})

    assert condition.describe() == "(decision in ['allow'] and score[hate] below 0.5)"
