"""`llmjobs submit` as a user runs it: a subprocess with LLMJOBS_* variables, real Redis and store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from llmjobs.models import Batch, Job, Store

LLMJOBS = str(Path(sys.executable).with_name("llmjobs"))


@pytest.fixture()
def environment(llmjobs_home: Path, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "LLMJOBS_HOME": str(llmjobs_home),
        "LLMJOBS_DATABASE_URL": database_url,
        "LLMJOBS_BROKER_URL": redis_url,
    }


def run_submit(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMJOBS, "submit", *args], env=environment, capture_output=True, text=True, timeout=300
    )


def job_count(database_url: str) -> int:
    store = Store(database_url)
    try:
        with store.read() as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)
    finally:
        store.dispose()


def test_cli_json_output(environment: dict[str, str], tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "one"}\n{"text": "二"}\n', encoding="utf-8")

    result = run_submit(environment, str(path), "--kind", "moderate", "--json")

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["jobs"], outcome["rejected"], outcome["chunks"]) == (2, 0, 1)
    assert outcome["existing"] is False
    assert len(outcome["batch_id"]) == 32
    assert job_count(database_url) == 2


def test_cli_resubmit_says_existing(environment: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "one"}\n', encoding="utf-8")
    first = run_submit(environment, str(path), "--kind", "moderate")
    again = run_submit(environment, str(path), "--kind", "moderate")
    forced = run_submit(environment, str(path), "--kind", "moderate", "--new", "--json")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    batch_id = first.stdout.split()[2].rstrip(":")
    assert f"Batch {batch_id} already exists" in again.stdout
    assert "--new" in again.stdout
    assert json.loads(forced.stdout)["batch_id"] != batch_id


def test_cli_invalid_rows_exit_2(
    environment: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n[]\n{"id": "x"}\n', encoding="utf-8")
    errors = tmp_path / "errors.jsonl"

    result = run_submit(environment, str(path), "--kind", "moderate", "--errors-file", str(errors))

    assert result.returncode == 2
    assert "line 2: row must be a JSON object, got an array" in result.stderr
    assert "line 3: text: missing" in result.stderr
    assert "nothing was stored" in result.stderr
    assert len(errors.read_text(encoding="utf-8").splitlines()) == 2
    assert job_count(database_url) == 0


def test_cli_invalid_rows_json_report(environment: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("42\n", encoding="utf-8")
    result = run_submit(environment, str(path), "--kind", "moderate", "--json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["invalid_rows"] == 1
    assert report["rejections"][0]["line"] == 1


def test_cli_skip_invalid(environment: dict[str, str], tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n[]\n', encoding="utf-8")
    result = run_submit(environment, str(path), "--kind", "moderate", "--skip-invalid", "--json")
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["jobs"], json.loads(result.stdout)["rejected"]) == (1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--kind", "translate"], "target_lang", id="translate-without-target"),
        pytest.param(["--kind", "translate", "--target-lang", "elvish"], "'elvish'", id="bad-language"),
        pytest.param(["--kind", "write", "--template", "nope"], "known templates", id="unknown-template"),
        pytest.param(["--kind", "moderate", "--template", "summary"], "--kind write", id="foreign-option"),
        pytest.param(["--kind", "moderate", "--text-column", "2"], "CSV and TSV", id="column-for-jsonl"),
        pytest.param(["--kind", "summarise"], "summarise", id="unknown-kind"),
    ],
)
def test_cli_usage_errors_exit_2(
    environment: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "hello"}\n', encoding="utf-8")
    result = run_submit(environment, str(path), *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_cli_redis_down_exit_1(
    environment: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "hello"}\n', encoding="utf-8")
    down = {**environment, "LLMJOBS_BROKER_URL": f"unix://{tmp_path / 'absent.sock'}"}

    result = run_submit(down, str(path), "--kind", "moderate")

    assert result.returncode == 1
    assert "publishing to Redis failed" in result.stderr
    assert "llmjobs requeue" in result.stderr
    assert job_count(database_url) == 1


def test_cli_csv_with_columns(
    environment: dict[str, str], shared_data: Path, database_url: str
) -> None:
    path = shared_data / "csl_zh_title_generation" / "ts_test.tsv"
    result = run_submit(environment, str(path), "--kind", "write", "--text-column", "2",
                        "--template", "headline", "--template-lang", "zh", "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["jobs"] == 1000
    assert outcome["format"] == "tsv"
    store = Store(database_url)
    try:
        with store.read() as session:
            batch = session.get(Batch, outcome["batch_id"])
            assert batch is not None
            assert batch.params["template"] == "headline@1"
    finally:
        store.dispose()


def test_cli_embedded_broker(llmjobs_home: Path, tmp_path: Path) -> None:
    # Without LLMJOBS_BROKER_URL the command starts a private redis-server in LLMJOBS_HOME.
    environment = {**os.environ, "LLMJOBS_HOME": str(llmjobs_home)}
    environment.pop("LLMJOBS_BROKER_URL", None)
    environment.pop("LLMJOBS_DATABASE_URL", None)
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "hello"}\n', encoding="utf-8")
    result = run_submit(environment, str(path), "--kind", "moderate", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["published"] is True
    # The server keeps its append-only file there, so the message outlives the command.
    aof = [llmjobs_home / "redis" / "appendonly.aof", llmjobs_home / "redis" / "appendonlydir"]
    assert any(path.exists() for path in aof)
