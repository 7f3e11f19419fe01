"""Checkpoint loading: devices, dtypes, revisions, architectures and the offline errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from llmjobs.config import Settings
from llmjobs.errors import CheckpointError
from llmjobs.worker.engine import (
    configure_decoder_only,
    content_revision,
    load_checkpoint,
    select_device,
    select_dtype,
)
from tests.unit.test_tiny_checkpoints import tiny_checkpoints, tiny_settings

__all__ = ["tiny_checkpoints", "tiny_settings"]


def test_select_device_auto_on_cpu_machine() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto") == expected
    assert select_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_select_device_cuda_without_gpu() -> None:
    with pytest.raises(CheckpointError, match="LLMJOBS_DEVICE=cpu"):
        select_device("cuda:0")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param("auto", torch.float32, id="auto"),
        pytest.param("float32", torch.float32, id="float32"),
        pytest.param("bfloat16", torch.bfloat16, id="bfloat16"),
    ],
)
def test_select_dtype_on_cpu(setting: str, expected: torch.dtype) -> None:
    assert select_dtype(setting, "cpu") == expected


@pytest.mark.parametrize(
    ("name", "task", "architecture"),
    [
        pytest.param("classifier", "moderate", "classifier", id="classifier"),
        pytest.param("marian-en-zh", "translate", "seq2seq", id="marian"),
        pytest.param("m2m100-nllb", "translate", "seq2seq", id="m2m100"),
        pytest.param("causal-qwen2", "write", "causal", id="causal"),
        pytest.param("causal-qwen2", "translate", "causal", id="causal-translate"),
    ],
)
def test_load_tiny_checkpoint(
    tiny_checkpoints: dict[str, Path], tiny_settings: Settings, name: str, task: str, architecture: str
) -> None:
    loaded = load_checkpoint(str(tiny_checkpoints[name]), task, tiny_settings, "cpu")
    assert loaded.architecture == architecture
    assert loaded.revision == content_revision(tiny_checkpoints[name])
    assert loaded.revision.startswith("sha256:")
    assert len(loaded.revision) == len("sha256:") + 16
    assert loaded.dtype == "float32"
    assert not loaded.model.training


def test_decoder_only_left_padding(tiny_checkpoints: dict[str, Path], tiny_settings: Settings) -> None:
    loaded = load_checkpoint(str(tiny_checkpoints["causal-qwen2"]), "write", tiny_settings, "cpu")
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.max_input_tokens == 4096


def test_pad_token_falls_back_to_eos(tiny_checkpoints: dict[str, Path], tiny_settings: Settings) -> None:
    loaded = load_checkpoint(str(tiny_checkpoints["causal-qwen2"]), "write", tiny_settings, "cpu")
    loaded.tokenizer.pad_token = None
    loaded.model.generation_config.pad_token_id = None
    configure_decoder_only(loaded.model, loaded.tokenizer)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert loaded.model.generation_config.pad_token_id == loaded.tokenizer.eos_token_id


def test_classifier_limit_excludes_roberta_offset(
    tiny_checkpoints: dict[str, Path], tiny_settings: Settings
) -> None:
    loaded = load_checkpoint(str(tiny_checkpoints["classifier"]), "moderate", tiny_settings, "cpu")
    assert loaded.max_input_tokens == 512


def test_revision_changes_with_weights(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoints["classifier"], copy)
    before = content_revision(copy)
    with (copy / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")
    assert content_revision(copy) != before


def test_wrong_architecture_for_kind(tiny_checkpoints: dict[str, Path], tiny_settings: Settings) -> None:
    with pytest.raises(CheckpointError, match=r"needs classifier") as caught:
        load_checkpoint(str(tiny_checkpoints["causal-qwen2"]), "moderate", tiny_settings, "cpu")
    assert "LLMJOBS_CHECKPOINT_MODERATE" in str(caught.value)


def test_missing_folder_names_path_and_fix(tiny_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(str(missing), "translate", tiny_settings, "cpu")
    message = str(caught.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "LLMJOBS_CHECKPOINT_TRANSLATE" in message
    assert "make-tiny" in message


def test_folder_without_config(tiny_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        load_checkpoint(str(tmp_path), "write", tiny_settings, "cpu")


def test_offline_hub_id_not_cached(
    tiny_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint("facebook/nllb-200-distilled-600M", "translate", tiny_settings, "cpu")
    message = str(caught.value)
    assert "'facebook/nllb-200-distilled-600M'" in message
    assert "offline" in message
    assert "huggingface-cli download facebook/nllb-200-distilled-600M" in message
    assert "LLMJOBS_CHECKPOINT_TRANSLATE" in message


def test_hub_snapshot_revision_is_commit(
    tiny_checkpoints: dict[str, Path], tiny_settings: Settings, tmp_path: Path
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / commit
    shutil.copytree(tiny_checkpoints["classifier"], snapshot)
    loaded = load_checkpoint(str(snapshot), "moderate", tiny_settings, "cpu")
    assert loaded.revision == commit
