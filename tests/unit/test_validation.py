"""Row validation: shapes, item ids, duplicates and the rules of each kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmjobs.config import Settings
from llmjobs.errors import ProducerError, UnknownTemplate
from llmjobs.producer.options import SubmitOptions
from llmjobs.producer.plan import plan_batch
from llmjobs.producer.records import Record, Rejection
from llmjobs.producer.rules import rules_for
from llmjobs.producer.validation import JobRow, RowValidator


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'unused.db'}",
                    max_text_chars=100)


def validator(settings: Settings, kind: str = "moderate", **options: Any) -> RowValidator:
    plan = plan_batch(settings, kind, SubmitOptions(**options))
    return RowValidator(rules_for(plan), track_ids=True, compute_sha256=True)


def check(checker: RowValidator, fields: Any, line: int = 1) -> JobRow | Rejection:
    return checker.check(Record(line, line, fields))


def rejected(entry: JobRow | Rejection) -> Rejection:
    assert isinstance(entry, Rejection), entry
    return entry


def accepted(entry: JobRow | Rejection) -> JobRow:
    assert isinstance(entry, JobRow), entry
    return entry


# Shapes and ids.

def test_valid_row_gets_sha256(settings: Settings) -> None:
    row = accepted(check(validator(settings), {"text": "你好"}))
    assert row.item_id == "1"
    assert row.text_sha256 == "670d9743542cae3ea7ebe36af56bd53648b0a1126162e78d81a32934a711302e"
    assert row.params is None


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        pytest.param({"id": "a"}, "text", "missing", id="no-text"),
        pytest.param({"text": None}, "text", "got null", id="null-text"),
        pytest.param({"text": ["a"]}, "text", "got an array", id="array-text"),
        pytest.param({"text": "x" * 101}, "text", "101 characters", id="too-long"),
        pytest.param({"text": "a\x00b"}, "text", "NUL", id="nul"),
        pytest.param({"text": "a\ud800b"}, "text", "unpaired surrogate", id="surrogate"),
        pytest.param({"text": "a", "id": True}, "id", "a boolean", id="bool-id"),
        pytest.param({"text": "a", "id": 1.5}, "id", "the number 1.5", id="float-id"),
        pytest.param({"text": "a", "id": ""}, "id", "empty", id="empty-id"),
        pytest.param({"text": "a", "id": "x" * 201}, "id", "201 characters", id="long-id"),
    ],
)
def test_invalid_fields(settings: Settings, fields: dict[str, Any], field: str, reason: str) -> None:
    rejection = rejected(check(validator(settings), fields, line=7))
    assert rejection.line == 7
    assert rejection.field == field
    assert reason in rejection.reason


def test_empty_text_is_valid(settings: Settings) -> None:
    # The worker marks an empty item skipped without calling the model.
    assert accepted(check(validator(settings), {"text": ""})).text == ""


@pytest.mark.parametrize("value", [[], 42, "text", None], ids=["array", "number", "string", "null"])
def test_non_object_rejected(settings: Settings, value: Any) -> None:
    assert "JSON object" in rejected(check(validator(settings), value)).reason


def test_integer_id_becomes_string(settings: Settings) -> None:
    assert accepted(check(validator(settings), {"text": "a", "id": 12})).item_id == "12"


def test_duplicate_id_rejected(settings: Settings) -> None:
    checker = validator(settings)
    accepted(check(checker, {"text": "a", "id": "same"}, line=1))
    duplicate = rejected(check(checker, {"text": "b", "id": "same"}, line=2))
    assert duplicate.field == "id"
    assert "duplicate id 'same'" in duplicate.reason
    assert duplicate.item_id == "same"


def test_explicit_id_collides_with_record_number(settings: Settings) -> None:
    checker = validator(settings)
    accepted(check(checker, {"text": "a", "id": "2"}, line=1))
    assert rejected(check(checker, {"text": "b"}, line=2)).field == "id"


def test_invalid_row_does_not_claim_its_id(settings: Settings) -> None:
    checker = validator(settings)
    rejected(check(checker, {"id": "k"}, line=1))
    accepted(check(checker, {"text": "b", "id": "k"}, line=2))


def test_parse_problem_passed_through(settings: Settings) -> None:
    problem = Rejection(3, None, "invalid JSON")
    assert validator(settings).check(Record(3, 1, None, problem)) is problem


# Translate.

def test_translate_needs_target(settings: Settings) -> None:
    rejection = rejected(check(validator(settings, "translate"), {"text": "a"}))
    assert rejection.field == "target_lang"
    assert "--target-lang" in rejection.reason


def test_translate_batch_target_not_repeated(settings: Settings) -> None:
    row = accepted(check(validator(settings, "translate", target_lang="zh-CN"), {"text": "a"}))
    assert row.params is None


def test_translate_row_languages_normalised(settings: Settings) -> None:
    checker = validator(settings, "translate", target_lang="en")
    row = accepted(check(checker, {"text": "a", "target_lang": "zh_TW", "source_lang": "eng_Latn"}))
    assert row.params == {"target_lang": "zh-Hant", "source_lang": "en"}


def test_translate_invalid_row_language(settings: Settings) -> None:
    rejection = rejected(check(validator(settings, "translate"), {"text": "a", "target_lang": "zz"}))
    assert rejection.field == "target_lang"
    assert "'zz'" in rejection.reason


def test_translate_same_languages(settings: Settings) -> None:
    checker = validator(settings, "translate", source_lang="en")
    assert "same" in rejected(check(checker, {"text": "a", "target_lang": "en-GB"})).reason


def test_plan_rejects_bad_target(settings: Settings) -> None:
    with pytest.raises(ProducerError, match="--target-lang"):
        plan_batch(settings, "translate", SubmitOptions(target_lang="Chinese"))


def test_plan_stores_canonical_languages(settings: Settings) -> None:
    plan = plan_batch(settings, "translate", SubmitOptions(target_lang="zho_Hant", source_lang="en-US"))
    assert plan.params == {"target_lang": "zh-Hant", "source_lang": "en"}


# Write.

def test_write_template_from_batch(settings: Settings) -> None:
    checker = validator(settings, "write", template="headline", template_language="zh")
    row = accepted(check(checker, {"text": "文章"}))
    assert row.text == "文章"
    assert row.params is None
    assert checker.rules.plan.params["template"] == "headline@1"
    assert checker.rules.plan.params["template_language"] == "zh"


def test_write_template_needs_text(settings: Settings) -> None:
    checker = validator(settings, "write", template="summary")
    assert rejected(check(checker, {"variables": {}})).field == "text"


def test_write_row_template_and_variables(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text('[templates.ad]\nversion = 2\ntext = "{brand}: {text}"\n', encoding="utf-8")
    custom = settings.replace(templates_file=path)
    checker = validator(custom, "write")
    row = accepted(check(checker, {"text": "t", "template": "ad", "variables": {"brand": "B", "x": "y"}}))
    assert row.params == {"template": "ad@2", "variables": {"brand": "B"}}
    missing = rejected(check(checker, {"text": "t", "template": "ad"}, line=2))
    assert missing.field == "variables"
    assert "'brand'" in missing.reason


def test_write_unknown_row_template(settings: Settings) -> None:
    rejection = rejected(check(validator(settings, "write"), {"text": "t", "template": "nope"}))
    assert rejection.field == "template"
    assert "known templates" in rejection.reason


def test_write_unknown_batch_template(settings: Settings) -> None:
    with pytest.raises(UnknownTemplate):
        plan_batch(settings, "write", SubmitOptions(template="nope"))


def test_write_variables_must_be_strings(settings: Settings) -> None:
    checker = validator(settings, "write", template="summary")
    rejection = rejected(check(checker, {"text": "t", "variables": {"n": 3}}))
    assert rejection.field == "variables.n"


def test_write_prompt(settings: Settings) -> None:
    row = accepted(check(validator(settings, "write"), {"prompt": "Write a haiku", "seed": 3}))
    assert row.text == "Write a haiku"
    assert row.params == {"prompt": "Write a haiku", "seed": 3}


def test_write_messages_text_parts(settings: Settings) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}]},
    ]
    row = accepted(check(validator(settings, "write"), {"messages": messages}))
    assert row.text == "你好"
    assert row.params == {"messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "你好"}]}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"messages": []}, "messages", id="empty-messages"),
        pytest.param({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", id="bad-role"),
        pytest.param({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                     "messages[0].content", id="image-part"),
        pytest.param({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt",
                     id="prompt-and-messages"),
        pytest.param({"prompt": 5}, "prompt", id="prompt-number"),
        pytest.param({"prompt": "a", "temperature": 3}, "temperature", id="hot-temperature"),
        pytest.param({"prompt": "a", "max_tokens": 0}, "max_tokens", id="zero-tokens"),
        pytest.param({"prompt": "a", "top_p": 0}, "top_p", id="zero-top-p"),
        pytest.param({"prompt": "a", "seed": -1}, "seed", id="negative-seed"),
        pytest.param({"text": "nothing else"}, None, id="no-template"),
    ],
)
def test_write_invalid_rows(settings: Settings, fields: dict[str, Any], field: str | None) -> None:
    assert rejected(check(validator(settings, "write"), fields)).field == field


def test_write_messages_total_length(settings: Settings) -> None:
    messages = [{"role": "user", "content": "x" * 60}, {"role": "user", "content": "y" * 60}]
    assert "in all" in rejected(check(validator(settings, "write"), {"messages": messages})).reason


@pytest.mark.parametrize(
    ("kind", "options", "flag"),
    [
        pytest.param("moderate", {"target_lang": "zh"}, "--target-lang", id="moderate-target"),
        pytest.param("translate", {"template": "summary"}, "--template", id="translate-template"),
        pytest.param("moderate", {"seed": 1}, "--seed", id="moderate-seed"),
        pytest.param("write", {"source_lang": "en"}, "--source-lang", id="write-source"),
    ],
)
def test_plan_rejects_other_kinds_options(
    settings: Settings, kind: str, options: dict[str, Any], flag: str
) -> None:
    with pytest.raises(ProducerError, match=flag):
        plan_batch(settings, kind, SubmitOptions(**options))


def test_plan_rejects_unknown_kind(settings: Settings) -> None:
    with pytest.raises(ProducerError, match="'classify'"):
        plan_batch(settings, "classify", SubmitOptions())
