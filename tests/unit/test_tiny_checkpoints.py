"""Tiny checkpoints: the build, its determinism, the CLI, and the shared session fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmjobs.checkpoints.tiny import (
    BUILDERS,
    DEFAULT_FOR_KIND,
    MANIFEST,
    build_tiny_checkpoints,
    ensure_tiny_checkpoints,
)
from llmjobs.config import Settings
from llmjobs.worker.engine import content_revision


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny checkpoint, built once per test session: name -> folder."""
    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings on CPU in float32 with each kind pointed at its default tiny checkpoint."""
    home = tmp_path_factory.mktemp("home")
    checkpoints = {kind: str(tiny_checkpoints[name]) for kind, name in DEFAULT_FOR_KIND.items()}
    return Settings.load(
        environ={"LLMJOBS_HOME": str(home)}, device="cpu", dtype="float32", checkpoints=checkpoints
    )


def test_build_makes_every_checkpoint(tiny_checkpoints: dict[str, Path]) -> None:
    assert set(tiny_checkpoints) == set(BUILDERS)
    for folder in tiny_checkpoints.values():
        assert (folder / "config.json").is_file()
        assert (folder / "model.safetensors").is_file()
        assert (folder / "tokenizer.json").is_file()
        assert json.loads((folder / MANIFEST).read_text())["note"].endswith("meaningless")


def test_build_is_deterministic(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    again = build_tiny_checkpoints(tmp_path / "again", ["classifier", "causal-qwen2"])
    for name, folder in again.items():
        assert content_revision(folder) == content_revision(tiny_checkpoints[name])


def test_ensure_is_idempotent(tmp_path: Path) -> None:
    first = ensure_tiny_checkpoints(tmp_path)
    stamps = {kind: (path / MANIFEST).stat().st_mtime_ns for kind, path in first.items()}
    second = ensure_tiny_checkpoints(tmp_path)
    assert first == second
    assert set(first) == {"moderate", "translate", "write"}
    assert first["translate"] == tmp_path / "checkpoints" / "tiny" / "m2m100-nllb"
    assert {kind: (path / MANIFEST).stat().st_mtime_ns for kind, path in second.items()} == stamps


def test_losing_build_race_keeps_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmjobs.checkpoints.tiny as tiny

    target = tmp_path / "classifier"
    real_builder = tiny.BUILDERS["classifier"]

    def build_while_another_process_finishes(folder: Path, tokenizer: object) -> None:
        # The other process renames its finished build into place while this one still builds.
        winner = tmp_path / "winner"
        winner.mkdir()
        (winner / MANIFEST).write_text("{}")
        (winner / "config.json").write_text("{}")
        winner.rename(target)
        real_builder(folder, tokenizer)

    monkeypatch.setitem(tiny.BUILDERS, "classifier", build_while_another_process_finishes)
    built = build_tiny_checkpoints(tmp_path, ["classifier"])
    assert built["classifier"] == target
    assert (target / MANIFEST).read_text() == "{}"
    assert [path.name for path in tmp_path.iterdir()] == ["classifier"]


def test_unknown_name_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny checkpoint 'nope'"):
        build_tiny_checkpoints(tmp_path, ["nope"])


def test_cli_make_tiny(tmp_path: Path) -> None:
    from llmjobs.cli.main import _register_commands, cli

    _register_commands()
    result = CliRunner().invoke(cli, ["checkpoints", "make-tiny", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(result.stdout)) == sorted(BUILDERS)


def test_cli_list_shows_tiny_fallback(llmjobs_home: Path) -> None:
    from llmjobs.cli.main import _register_commands, cli

    _register_commands()
    result = CliRunner(env={"LLMJOBS_CHECKPOINT_WRITE": "Qwen/Qwen2.5-1.5B-Instruct"}).invoke(
        cli, ["checkpoints", "list", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = {row["kind"]: row for row in json.loads(result.stdout)}
    assert rows["write"]["checkpoint"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert rows["write"]["origin"] == "configured"
    assert rows["moderate"]["origin"].startswith("tiny fallback")
    assert rows["moderate"]["checkpoint"] == str(llmjobs_home / "checkpoints" / "tiny" / "classifier")


def test_make_tiny_help_says_meaningless() -> None:
    from llmjobs.cli.main import _register_commands, cli

    _register_commands()
    result = CliRunner().invoke(cli, ["checkpoints", "make-tiny", "--help"])
    assert "meaningless" in result.output
