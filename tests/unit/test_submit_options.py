"""Submit options that the worker reads back: moderation thresholds and max tokens."""

from __future__ import annotations

import click
import pytest

from llmjobs.cli.submit import parse_threshold_options
from llmjobs.config import Settings
from llmjobs.errors import ProducerError
from llmjobs.producer import SubmitOptions
from llmjobs.producer.plan import plan_batch


def test_threshold_option_review_and_block() -> None:
    parsed = parse_threshold_options(("hate=0.4:0.7", "violence=0.2"))
    assert parsed == {"hate": {"review": 0.4, "block": 0.7}, "violence": {"review": 0.2}}


def test_threshold_option_none_when_absent() -> None:
    assert parse_threshold_options(()) is None


def test_threshold_option_rejects_text() -> None:
    with pytest.raises(click.BadParameter):
        parse_threshold_options(("hate=high",))


def _settings(tmp_path) -> Settings:
    return Settings.load({"LLMJOBS_HOME": str(tmp_path)})


def test_plan_stores_thresholds(tmp_path) -> None:
    options = SubmitOptions(thresholds={"hate": {"review": 0.4, "block": 0.7}})
    plan = plan_batch(_settings(tmp_path), "moderate", options)
    assert plan.params["thresholds"] == {"hate": {"review": 0.4, "block": 0.7}}


@pytest.mark.parametrize("thresholds", [
    pytest.param({"nope": {"review": 0.4}}, id="unknown-category"),
    pytest.param({"hate": {"review": 0.9, "block": 0.5}}, id="review-above-block"),
    pytest.param({"hate": {"review": 1.5}}, id="above-one"),
])
def test_plan_rejects_bad_thresholds(tmp_path, thresholds) -> None:
    with pytest.raises(ProducerError):
        plan_batch(_settings(tmp_path), "moderate", SubmitOptions(thresholds=thresholds))


def test_thresholds_only_for_moderate(tmp_path) -> None:
    with pytest.raises(ProducerError, match="--threshold applies to --kind moderate"):
        plan_batch(_settings(tmp_path), "translate",
                   SubmitOptions(target_lang="en", thresholds={"hate": {"review": 0.4}}))


def test_write_reads_max_tokens_from_submit() -> None:
    from llmjobs.worker.kinds.write import _generation_params

    assert _generation_params({"max_tokens": 12})["generation"]["max_new_tokens"] == 12
    nested = {"max_tokens": 12, "generation": {"max_new_tokens": 5}}
    assert _generation_params(nested)["generation"]["max_new_tokens"] == 5
