"""Step filters: structured conditions on the previous step's result, parsed once, never eval'd.

A filter is a mapping. Each key is a field test, or `all`, `any` or `not`; several keys in
one mapping must all hold:

    filter:
      decision: {in: [allow, review]}
      score: {category: hate, below: 0.5}
      any:
        - flagged: false
        - top_category: profanity

A field test is a plain value (equality) or one operator: `eq`, `ne`, `in`, `not_in`.
`score` tests one moderation category with `below` (<), `at_most` (<=), `above` (>) or
`at_least` (>=); a category that the checkpoint does not score counts as 0. A field that
a result lacks (a failed item has no decision) makes its test false.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmjobs.pipelines.document import KeyPath

Report = Callable[[KeyPath, str], None]

JOB_STATUSES = ("succeeded", "failed", "skipped", "cancelled")
DECISIONS = ("allow", "review", "block")
_VALUE_OPERATORS = ("eq", "ne", "in", "not_in")
_SCORE_OPERATORS = {
    "below": lambda score, bound: score < bound,
    "at_most": lambda score, bound: score <= bound,
    "above": lambda score, bound: score > bound,
    "at_least": lambda score, bound: score >= bound,
}


@dataclass(frozen=True)
class StepOutcome:
    """What a filter sees of one item: its job status in the previous step and that step's output."""

    status: str
    output: Mapping[str, Any] | None


class Condition(ABC):
    @abstractmethod
    def matches(self, outcome: StepOutcome) -> bool:
        """Return True when the item passes this condition."""

    @abstractmethod
    def describe(self) -> str:
        """Return the condition as a short readable expression, for logs and `pipeline show`."""


@dataclass(frozen=True)
class AllOf(Condition):
    conditions: tuple[Condition, ...]

    def matches(self, outcome: StepOutcome) -> bool:
        return all(condition.matches(outcome) for condition in self.conditions)

    def describe(self) -> str:
        return "(" + " and ".join(c.describe() for c in self.conditions) + ")"


@dataclass(frozen=True)
class AnyOf(Condition):
    conditions: tuple[Condition, ...]

    def matches(self, outcome: StepOutcome) -> bool:
        return any(condition.matches(outcome) for condition in self.conditions)

    def describe(self) -> str:
        return "(" + " or ".join(c.describe() for c in self.conditions) + ")"


@dataclass(frozen=True)
class Negation(Condition):
    condition: Condition

    def matches(self, outcome: StepOutcome) -> bool:
        return not self.condition.matches(outcome)

    def describe(self) -> str:
        return f"not {self.condition.describe()}"


_MISSING = object()


@dataclass(frozen=True)
class FieldTest(Condition):
    field: str
    operator: str
    value: Any

    def matches(self, outcome: StepOutcome) -> bool:
        if self.field == "status":
            actual: Any = outcome.status
        elif outcome.output is None:
            return False
        else:
            actual = outcome.output.get(self.field, _MISSING)
        if actual is _MISSING:
            return False
        if self.operator == "eq":
            return bool(actual == self.value)
        if self.operator == "ne":
            return bool(actual != self.value)
        if self.operator == "in":
            return actual in self.value
        return actual not in self.value

    def describe(self) -> str:
        symbol = {"eq": "==", "ne": "!=", "in": "in", "not_in": "not in"}[self.operator]
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return f"{self.field} {symbol} {value!r}"


@dataclass(frozen=True)
class ScoreTest(Condition):
    category: str
    operator: str
    bound: float

    def matches(self, outcome: StepOutcome) -> bool:
        if outcome.output is None:
            return False
        categories = outcome.output.get("categories")
        if not isinstance(categories, Mapping):
            return False
        score = categories.get(self.category, 0.0)
        return bool(_SCORE_OPERATORS[self.operator](float(score), self.bound))

    def describe(self) -> str:
        return f"score[{self.category}] {self.operator} {self.bound}"


class _AlwaysTrue(Condition):
    def matches(self, outcome: StepOutcome) -> bool:
        return True

    def describe(self) -> str:
        return "true"


# With no filter, only items whose previous step succeeded move on.
DEFAULT_FILTER: Condition = FieldTest("status", "eq", "succeeded")
ALWAYS: Condition = _AlwaysTrue()


@dataclass(frozen=True)
class _FieldRule:
    """Which values a field accepts in a condition."""

    kinds: tuple[str, ...] | None  # None: every kind
    check: Callable[[Any], str | None]  # returns a reason when the value is invalid


def _one_of(values: Sequence[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in values:
            return None
        return f"invalid value {value!r}; expected one of {', '.join(values)}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"invalid value {value!r}; expected true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"invalid value {value!r}; expected a string"


def _category_or_null(value: Any) -> str | None:
    from llmjobs.worker.taxonomy import CATEGORIES

    if value is None or value in CATEGORIES:
        return None
    return f"unknown category {value!r}; see docs/taxonomy.md for the categories"


_FIELDS: dict[str, _FieldRule] = {
    "status": _FieldRule(None, _one_of(JOB_STATUSES)),
    "decision": _FieldRule(("moderate",), _one_of(DECISIONS)),
    "flagged": _FieldRule(("moderate",), _boolean),
    "top_category": _FieldRule(("moderate",), _category_or_null),
    "source_lang": _FieldRule(("translate",), _text),
    "target_lang": _FieldRule(("translate",), _text),
    "finish_reason": _FieldRule(("write",), _text),
}


def fields_for(kind: str) -> list[str]:
    """Return the fields a filter may test after a step of this kind."""
    names = [name for name, rule in _FIELDS.items() if rule.kinds is None or kind in rule.kinds]
    if kind == "moderate":
        names.append("score")
    return names


def parse_filter(raw: Any, previous_kind: str, key_path: KeyPath, report: Report) -> Condition:
    """Compile a filter mapping into a Condition; report each problem with its key path.

    The returned condition is only meaningful when nothing was reported.
    """
    if not isinstance(raw, Mapping) or not raw:
        report(key_path, f"a filter must be a non-empty mapping of conditions, got {raw!r}")
        return ALWAYS
    conditions: list[Condition] = []
    for key, value in raw.items():
        path = (*key_path, key)
        if key in ("all", "any"):
            conditions.append(_parse_group(key, value, previous_kind, path, report))
        elif key == "not":
            conditions.append(Negation(parse_filter(value, previous_kind, path, report)))
        elif key == "score":
            conditions.append(_parse_scores(value, previous_kind, path, report))
        else:
            conditions.append(_parse_field(key, value, previous_kind, path, report))
    return conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))


def _parse_group(key: str, value: Any, kind: str, key_path: KeyPath, report: Report) -> Condition:
    if not isinstance(value, list) or not value:
        report(key_path, f"{key} must be a non-empty list of conditions")
        return ALWAYS
    parts = tuple(parse_filter(item, kind, (*key_path, index), report) for index, item in enumerate(value))
    return AllOf(parts) if key == "all" else AnyOf(parts)


def _parse_field(field: str, value: Any, kind: str, key_path: KeyPath, report: Report) -> Condition:
    rule = _FIELDS.get(field)
    if rule is None or (rule.kinds is not None and kind not in rule.kinds):
        report(key_path, f"unknown field {field!r} for a filter after a {kind} step; "
                         f"known fields: {', '.join(fields_for(kind))}, all, any, not")
        return ALWAYS
    operator, operand = "eq", value
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in _VALUE_OPERATORS:
            report(key_path, f"expected a value or one operator of {', '.join(_VALUE_OPERATORS)}, "
                             f"got {dict(value)!r}")
            return ALWAYS
        operator, operand = next(iter(value.items()))
        key_path = (*key_path, operator)
    if operator in ("in", "not_in"):
        if not isinstance(operand, list) or not operand:
            report(key_path, f"{operator} must be a non-empty list, got {operand!r}")
            return ALWAYS
        values = operand
    else:
        values = [operand]
    for index, item in enumerate(values):
        reason = rule.check(item)
        if reason is not None:
            report((*key_path, index) if operator in ("in", "not_in") else key_path, reason)
            return ALWAYS
    return FieldTest(field, operator, tuple(operand) if operator in ("in", "not_in") else operand)


def _parse_scores(value: Any, kind: str, key_path: KeyPath, report: Report) -> Condition:
    if kind != "moderate":
        report(key_path, f"unknown field 'score' for a filter after a {kind} step; "
                         f"known fields: {', '.join(fields_for(kind))}, all, any, not")
        return ALWAYS
    if isinstance(value, list) and value:
        tests = tuple(_parse_score(item, (*key_path, index), report) for index, item in enumerate(value))
        return AllOf(tests)
    return _parse_score(value, key_path, report)


def _parse_score(value: Any, key_path: KeyPath, report: Report) -> Condition:
    from llmjobs.worker.taxonomy import CATEGORIES

    if not isinstance(value, Mapping):
        report(key_path, "score must be a mapping such as {category: hate, below: 0.5}")
        return ALWAYS
    category = value.get("category")
    if category not in CATEGORIES:
        report((*key_path, "category"),
               f"unknown category {category!r}; see docs/taxonomy.md for the categories")
        return ALWAYS
    operators = [key for key in value if key != "category"]
    if len(operators) != 1 or operators[0] not in _SCORE_OPERATORS:
        report(key_path, f"score needs exactly one of {', '.join(_SCORE_OPERATORS)}, got {operators!r}")
        return ALWAYS
    operator = operators[0]
    bound = value[operator]
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0.0 <= bound <= 1.0:
        report((*key_path, operator), f"invalid bound {bound!r}; expected a number from 0 to 1")
        return ALWAYS
    return ScoreTest(str(category), operator, float(bound))
