"""`llmjobs batches`, `status`, `results` and `jobs show` on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from llmjobs.cli.main import _register_commands, cli
from llmjobs.export import FORMULA_ESCAPE
from llmjobs.models import BatchStatus, JobStatus, Store
from llmjobs.models.audit import NewEvent, append_events
from tests.integration.stored_batches import Item, add_batch

Invoke = Callable[..., Result]

MODERATION_ITEMS = [
    Item("c-1", "今天天气很好", JobStatus.SUCCEEDED, {"decision": "allow", "flagged": False},
         "allow", {"hate": 0.01, "violence": 0.02}, attempts=1),
    Item("c-2", "=HYPERLINK(\"http://x\")\tand\n\"quotes\"", JobStatus.SUCCEEDED,
         {"decision": "block", "flagged": True}, "block", {"hate": 0.93, "violence": 0.10},
         attempts=1),
    Item("c-3", "you people are awful", JobStatus.SUCCEEDED,
         {"decision": "review", "flagged": True}, "review", {"hate": 0.79, "violence": 0.05},
         attempts=1),
    Item("c-4", "x" * 40_000, JobStatus.FAILED, error=("input_too_long", "40000 characters"),
         attempts=1),
    Item("c-5", "还没处理", JobStatus.QUEUED),
]


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    _register_commands()


@pytest.fixture()
def invoke(database_url: str, llmjobs_home: Path) -> Invoke:
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, list(args), env={"LLMJOBS_DATABASE_URL": database_url},
                             catch_exceptions=False)

    return run


@pytest.fixture()
def store(database_url: str) -> Store:
    return Store(database_url)


def _jsonl(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def test_results_jsonl_input_order(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("results", batch_id, "--format", "jsonl")

    assert result.exit_code == 0, result.output
    records = _jsonl(result.stdout)
    assert [record["id"] for record in records] == ["c-1", "c-2", "c-3", "c-4", "c-5"]
    assert records[0] == {"id": "c-1", "status": "succeeded", "input": "今天天气很好",
                          "output": {"decision": "allow", "flagged": False}, "error": None}
    assert records[3]["error"] == {"code": "input_too_long", "message": "40000 characters"}
    assert records[4]["output"] is None
    assert "今天天气很好" in result.stdout


def test_results_filter_status(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("results", batch_id, "--format", "jsonl", "--status", "failed")

    assert [record["id"] for record in _jsonl(result.stdout)] == ["c-4"]


def test_results_filter_decision(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("results", batch_id, "--format", "jsonl", "--decision", "block")

    assert [record["id"] for record in _jsonl(result.stdout)] == ["c-2"]


@pytest.mark.parametrize(
    ("min_score", "expected"),
    [
        pytest.param(None, ["c-1", "c-2", "c-3"], id="any-score"),
        pytest.param("0.79", ["c-2", "c-3"], id="inclusive-bound"),
        pytest.param("0.8", ["c-2"], id="above"),
        pytest.param("0.99", [], id="none"),
    ],
)
def test_results_filter_category_score(store: Store, invoke: Invoke, min_score: str | None,
                                       expected: list[str]) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)
    args = ["results", batch_id, "--format", "jsonl", "--category", "hate"]
    if min_score is not None:
        args += ["--min-score", min_score]

    result = invoke(*args)

    assert result.exit_code == 0, result.output
    assert [record["id"] for record in _jsonl(result.stdout)] == expected


def test_results_limit(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("results", batch_id, "--format", "jsonl", "--limit", "2")

    assert [record["id"] for record in _jsonl(result.stdout)] == ["c-1", "c-2"]


def test_results_min_score_needs_category(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("results", batch_id, "--min-score", "0.5")

    assert result.exit_code == 2
    assert "--min-score" in result.output
    assert "--category" in result.output


def test_results_category_needs_moderate(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "translate", [Item("t-1", "你好", JobStatus.SUCCEEDED,
                                                      {"text": "hello"})])

    result = invoke("results", batch_id, "--category", "hate")

    assert result.exit_code == 2
    assert "--category" in result.output
    assert "translate" in result.output


def test_results_csv_file_round_trip(store: Store, invoke: Invoke, tmp_path: Path) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)
    target = tmp_path / "results.csv"

    result = invoke("results", batch_id, "--output", str(target), "--excel")

    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [row["id"] for row in rows] == ["c-1", "c-2", "c-3", "c-4", "c-5"]
    assert rows[0]["input"] == "今天天气很好"
    # The one neutralised cell: its text started with "=".
    assert rows[1]["input"] == FORMULA_ESCAPE + MODERATION_ITEMS[1].text
    assert rows[1]["decision"] == "block"
    assert rows[1]["top_category"] == "hate"
    assert float(rows[1]["score_hate"]) == 0.93
    assert rows[3]["error_code"] == "input_too_long"
    assert rows[3]["input"] == "x" * 40_000


def test_results_table_default(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("results", batch_id)

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "OUTPUT", "INPUT"]
    assert len(lines) == 6
    assert "block hate 0.93" in lines[2]
    assert "input_too_long" in lines[4]


def test_terminal_output_escapes_controls(store: Store, invoke: Invoke) -> None:
    hostile = "\x1b[31mRED\x1b]0;title\x07 \r=cr \u202eevil"
    items = [Item("esc\x1b[2J", hostile, JobStatus.SUCCEEDED, {"decision": "allow"}, "allow", {})]
    batch_id, _ = add_batch(store, "moderate", items)

    table = invoke("results", batch_id).stdout
    job_text = invoke("jobs", "show", f"{batch_id}:esc\x1b[2J").stdout
    jsonl = invoke("results", batch_id, "--format", "jsonl").stdout

    for output in (table, job_text):
        assert "\x1b" not in output
        assert "\x07" not in output
        assert "\r" not in output
        assert "\u202e" not in output
        assert "\\x1b[31mRED" in output
    assert json.loads(jsonl)["input"] == hostile


def test_status_json_counts(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", MODERATION_ITEMS)

    result = invoke("status", batch_id[:8], "--json")

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["status"] == "running"
    assert status["total"] == 5
    assert status["counts"]["succeeded"] == 3
    assert status["counts"]["failed"] == 1
    assert status["counts"]["queued"] == 1
    assert status["progress"] == pytest.approx(0.8)
    assert status["decisions"] == {"allow": 1, "block": 1, "review": 1}
    assert status["checkpoint"] == "tiny-moderate"


def test_status_finished_throughput(store: Store, invoke: Invoke) -> None:
    items = [Item(str(n), "t", JobStatus.SUCCEEDED, {"text": "u"}) for n in range(4)]
    batch_id, _ = add_batch(store, "translate", items, status=BatchStatus.COMPLETED)

    summary = json.loads(invoke("status", batch_id, "--json").stdout)
    text = invoke("status", batch_id).stdout

    assert summary["elapsed_s"] == pytest.approx(10.0)
    assert summary["throughput_per_s"] == pytest.approx(0.4)
    assert "Throughput  0.40 jobs/s" in text
    assert "Checkpoint  tiny-translate" in text


def test_batches_filter_and_table(store: Store, invoke: Invoke) -> None:
    first, _ = add_batch(store, "moderate", MODERATION_ITEMS[:1])
    second, _ = add_batch(store, "translate", [], status=BatchStatus.COMPLETED)

    listed = json.loads(invoke("batches", "--json").stdout)
    completed = json.loads(invoke("batches", "--status", "completed", "--json").stdout)
    table = invoke("batches").stdout

    assert {batch["id"] for batch in listed} == {first, second}
    assert [batch["id"] for batch in completed] == [second]
    assert first in table
    assert table.splitlines()[0].split() == ["ID", "KIND", "STATUS", "TOTAL", "CREATED", "NAME"]


def test_jobs_show_by_item(store: Store, invoke: Invoke) -> None:
    batch_id, jobs = add_batch(store, "moderate", MODERATION_ITEMS)
    with store.write() as session:
        append_events(session, [NewEvent("cli:alice", "job.retried", batch_id, jobs["c-2"],
                                         {"previous_status": "failed"})])

    details = json.loads(invoke("jobs", "show", f"{batch_id}:c-2", "--json").stdout)
    text = invoke("jobs", "show", str(jobs["c-2"])).stdout

    assert details["job"]["id"] == jobs["c-2"]
    assert details["job"]["input"] == MODERATION_ITEMS[1].text
    assert details["result"]["checkpoint_revision"] == "r1"
    assert details["result"]["worker_host"] == "gpu-host"
    assert details["scores"] == {"hate": 0.93, "violence": 0.10}
    assert [event["action"] for event in details["audit"]] == ["job.retried"]
    assert details["audit"][0]["actor"] == "cli:alice"
    assert "job.retried" in text
    assert "gpu-host on cuda:0" in text


def test_jobs_show_failed_job(store: Store, invoke: Invoke) -> None:
    _, jobs = add_batch(store, "moderate", MODERATION_ITEMS)

    text = invoke("jobs", "show", str(jobs["c-4"])).stdout

    assert "Error       input_too_long: 40000 characters" in text
    assert "Result      -" in text


def test_jobs_show_invalid_reference(invoke: Invoke) -> None:
    result = invoke("jobs", "show", "not-a-job")

    assert result.exit_code == 2
    assert "BATCH:ITEM_ID" in result.output
