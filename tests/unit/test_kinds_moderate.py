"""The moderate kind: label mapping, sigmoid vs softmax, thresholds and truncation."""

from __future__ import annotations

import pytest

from llmjobs.checkpoints.tiny import build_classifier
from llmjobs.checkpoints.tokenizer import train_byte_level_bpe
from llmjobs.config import Settings
from llmjobs.worker.kinds.base import WorkItem
from llmjobs.worker.kinds.moderate import ModerateKind, category_scores
from llmjobs.worker.kinds.registry import create_kind
from llmjobs.worker.taxonomy import (
    CATEGORIES,
    Thresholds,
    decide,
    map_labels,
    parse_thresholds,
)
from tests.unit.test_tiny_checkpoints import tiny_checkpoints, tiny_settings

__all__ = ["tiny_checkpoints", "tiny_settings"]


@pytest.fixture(scope="module")
def moderate(tiny_settings: Settings) -> ModerateKind:
    kind = create_kind("moderate", tiny_settings)
    assert isinstance(kind, ModerateKind)
    return kind


@pytest.fixture(scope="module")
def binary_softmax(tmp_path_factory: pytest.TempPathFactory, tiny_settings: Settings) -> ModerateKind:
    folder = tmp_path_factory.mktemp("binary") / "classifier"
    build_classifier(folder, train_byte_level_bpe(), labels=("LABEL_0", "LABEL_1"), multi_label=False)
    settings = tiny_settings.replace(checkpoints={**tiny_settings.checkpoints, "moderate": str(folder)})
    kind = create_kind("moderate", settings)
    assert isinstance(kind, ModerateKind)
    return kind


def item(text: str, **params: object) -> WorkItem:
    return WorkItem(job_id=1, batch_id="b", text=text, params=params)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param(
            ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"],
            ["toxicity", "toxicity", "profanity", "harassment/threatening", "harassment", "hate"],
            id="jigsaw",
        ),
        pytest.param(["LABEL_0", "LABEL_1"], [None, "toxicity"], id="generic-binary"),
        pytest.param(["safe", "unsafe"], [None, "unsafe"], id="guard-binary"),
        pytest.param(["non-offensive", "Offensive"], [None, "toxicity"], id="cold"),
        pytest.param(["normal", "hate speech", "abusive"], [None, "hate", "harassment"], id="hatexplain"),
        pytest.param(
            ["S1", "S4", "S10", "S14"],
            ["illicit/violent", "sexual/minors", "hate", "code-interpreter-abuse"],
            id="llama-guard",
        ),
        pytest.param(["self-harm/intent", "weird"], ["self-harm/intent", None], id="taxonomy-and-unknown"),
    ],
)
def test_map_labels(labels: list[str], expected: list[str | None]) -> None:
    mapping = map_labels(dict(enumerate(labels)))
    assert [mapping[label] for label in labels] == expected


def test_every_mapped_category_exists() -> None:
    labels = ["toxic", "obscene", "insult", "threat", "S9", "unsafe", "offensive"]
    assert all(
        category in CATEGORIES for category in map_labels(dict(enumerate(labels))).values() if category
    )


def test_category_takes_max_of_labels() -> None:
    mapping = {"toxic": "toxicity", "severe_toxic": "toxicity", "safe": None}
    scores = category_scores({"toxic": 0.3, "severe_toxic": 0.7, "safe": 0.9}, mapping)
    assert scores == {"toxicity": 0.7}


@pytest.mark.parametrize(
    ("scores", "overrides", "expected"),
    [
        pytest.param({"hate": 0.2}, {}, ("allow", False, None), id="allow"),
        pytest.param({"hate": 0.6, "toxicity": 0.55}, {}, ("review", True, "hate"), id="review"),
        pytest.param({"hate": 0.85}, {}, ("block", True, "hate"), id="block"),
        pytest.param({"sexual/minors": 0.3}, {}, ("review", True, "sexual/minors"), id="strict-default"),
        pytest.param({"hate": 0.6}, {"hate": Thresholds(0.7, 0.9)}, ("allow", False, None), id="override"),
        pytest.param(
            {"hate": 0.6}, {"hate": Thresholds(0.1, 0.5)}, ("block", True, "hate"), id="override-block"
        ),
    ],
)
def test_decide(
    scores: dict[str, float], overrides: dict[str, Thresholds], expected: tuple[object, ...]
) -> None:
    assert decide(scores, overrides) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"nope": {"review": 0.1}}, "unknown category 'nope'", id="category"),
        pytest.param({"hate": {"review": 2}}, "from 0 to 1", id="range"),
        pytest.param({"hate": {"review": 0.9, "block": 0.5}}, "must not exceed", id="order"),
        pytest.param({"hate": {"warn": 0.1}}, "must be", id="key"),
        pytest.param([0.5], "must be an object", id="type"),
    ],
)
def test_parse_thresholds_rejects(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_thresholds(raw)


def test_parse_thresholds_keeps_default_bound() -> None:
    assert parse_thresholds({"hate": {"block": 0.9}}) == {"hate": Thresholds(0.5, 0.9)}


def test_multi_label_scores_are_sigmoids(moderate: ModerateKind) -> None:
    [result] = moderate.run([item("你这个人真是太过分了，滚出去！")])
    assert moderate.multi_label
    assert result.status == "succeeded"
    assert result.output is not None
    labels = result.output["labels"]
    assert set(labels) == {"toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"}
    assert all(0 < score < 1 for score in labels.values())
    assert sum(labels.values()) > 1.0  # independent sigmoids, not a distribution
    assert result.scores == result.output["categories"]
    assert result.decision == result.output["decision"]
    assert result.output["truncated"] is False


def test_single_label_scores_are_softmax(binary_softmax: ModerateKind) -> None:
    [result] = binary_softmax.run([item("You are an idiot.")])
    assert not binary_softmax.multi_label
    assert result.output is not None
    labels = result.output["labels"]
    assert sum(labels.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.output["categories"] == {"toxicity": labels["LABEL_1"]}


def test_thresholds_param_sets_decision(moderate: ModerateKind) -> None:
    everything = {name: {"review": 0.0, "block": 0.0} for name in CATEGORIES}
    nothing = {name: {"review": 1.0, "block": 1.0} for name in CATEGORIES}
    blocked, allowed = moderate.run([item("hello", thresholds=everything), item("hello", thresholds=nothing)])
    assert blocked.decision == "block"
    assert blocked.output is not None
    assert blocked.output["flagged"] is True
    assert blocked.output["top_category"] == max(
        blocked.output["categories"], key=blocked.output["categories"].get
    )
    assert allowed.decision == "allow"
    assert allowed.output is not None
    assert allowed.output["flagged"] is False
    assert allowed.output["top_category"] is None


def test_invalid_thresholds_fail_without_model(
    moderate: ModerateKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moderate, "forward", _no_model_call)
    [result] = moderate.run([item("hello", thresholds={"nope": {}})])
    assert result.status == "failed"
    assert result.error_code == "invalid_input"


def test_label_map_param(moderate: ModerateKind) -> None:
    [result] = moderate.run([item("hello", label_map={"obscene": "sexual"})])
    assert result.output is not None
    assert "sexual" in result.output["categories"]
    assert "profanity" not in result.output["categories"]


def test_long_input_truncated(moderate: ModerateKind) -> None:
    long_text = "这是一段很长的评论，" * 400
    short, long = moderate.run([item("短评论"), item(long_text)])
    assert short.output is not None
    assert long.output is not None
    assert short.output["truncated"] is False
    assert long.output["truncated"] is True
    assert long.input_tokens == moderate.max_input_tokens


def test_moderation_batch_matches_single(moderate: ModerateKind) -> None:
    texts = ["短", "A somewhat longer English sentence about nothing.", "混合 mixed 文本 😀" * 5]
    batched = moderate.run([item(text) for text in texts])
    for text, result in zip(texts, batched, strict=True):
        [single] = moderate.run([item(text)])
        assert single.output is not None
        assert result.output is not None
        assert single.output["labels"] == pytest.approx(result.output["labels"], abs=1e-5)


def _no_model_call(prepared: object, deadline: float | None) -> object:
    raise AssertionError("the model was called")


def test_token_counts_match_single(moderate: ModerateKind) -> None:
    texts = ["短", "一条很长的中文评论，" * 400, "mixed 中英 text", "   padded   "]
    items = [WorkItem(n, "b", text, {}) for n, text in enumerate(texts)]

    counts = moderate.token_counts(items)

    assert counts == [moderate.token_count(item) for item in items]
    assert counts[1] == moderate.max_input_tokens
    assert moderate.token_counts([]) == []


def test_padded_encodings_match_truncating_path(moderate: ModerateKind) -> None:
    texts = ["短", "A somewhat longer English sentence about nothing.", "混合 mixed 文本 😀" * 5]
    items = [item(text) for text in texts]
    padded = moderate.preprocess(items).encoded
    tokenized = moderate.checkpoint.tokenizer(texts, truncation=True, max_length=moderate.max_input_tokens,
                                              padding=True, return_tensors="pt")

    assert sorted(padded.keys()) == sorted(tokenized.keys())
    for name in tokenized:
        assert padded[name].tolist() == tokenized[name].tolist()
