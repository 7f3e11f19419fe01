"""`llmjobs run` end to end on real public data, with embedded defaults.

Each test runs the CLI in a subprocess as a user would: no broker configured (a private
redis-server starts on a Unix socket), SQLite in LLMJOBS_HOME, tiny checkpoints built on
first use, a CPU worker. Inputs are read in place from the shared data folder, or sliced
into a temporary file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LLMJOBS = [sys.executable, "-m", "llmjobs.cli.main"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One LLMJOBS_HOME for the module, so the tiny checkpoints are built once."""
    return tmp_path_factory.mktemp("e2e-home")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLMJOBS_")}
    env["LLMJOBS_HOME"] = str(home)
    # The test process and the worker share the machine's cores.
    env["LLMJOBS_TORCH_THREADS"] = "1"
    env.update(extra)
    return env


def _llmjobs(home: Path, *args: str, timeout_s: float = 1200,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLMJOBS, *args], env=_env(home, **(env or {})), capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout_s)


def _run(home: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    completed = _llmjobs(home, "run", *args, "--json", env=env)
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    return json.loads(completed.stdout)


def _results(home: Path, batch_id: str) -> list[dict]:
    completed = _llmjobs(home, "results", batch_id, "--format", "jsonl")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(line) for line in completed.stdout.splitlines()]


def _check_job_trail(home: Path, batch_id: str, item_id: str) -> None:
    completed = _llmjobs(home, "jobs", "show", f"{batch_id}:{item_id}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "batch.submitted" in completed.stdout
    assert "job.succeeded" in completed.stdout


def test_moderate_cold(home: Path, shared_data: Path) -> None:
    source = shared_data / "cold_zh_offensive" / "test.csv"
    with source.open(encoding="utf-8-sig", newline="") as handle:
        ids = [row[0] for row in list(csv.reader(handle))[1:]]
    summary = _run(home, str(source), "--kind", "moderate", "--text-column", "TEXT",
                   "--id-column", "1")
    assert summary["status"] == "completed"
    assert summary["counts"]["succeeded"] == 5323

    rows = _results(home, summary["batch_id"])
    assert [row["id"] for row in rows] == ids
    assert all(row["status"] == "succeeded" for row in rows)
    assert all(row["output"]["decision"] in ("allow", "review", "block") for row in rows)
    _check_job_trail(home, summary["batch_id"], ids[0])


def test_moderate_davidson_first_3000(home: Path, shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "davidson_en_hate_offensive" / "labeled_data.csv"
    with source.open(encoding="utf-8", newline="") as handle:
        records = list(csv.reader(handle))[:3001]
    sliced = tmp_path / "davidson_3000.csv"
    with sliced.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(records)
    summary = _run(home, str(sliced), "--kind", "moderate", "--text-column", "tweet",
                   "--id-column", "1")
    assert summary["total"] == 3000

    rows = _results(home, summary["batch_id"])
    assert [row["id"] for row in rows] == [record[0] for record in records[1:]]
    assert [row["input"] for row in rows] == [record[6] for record in records[1:]]
    assert {row["status"] for row in rows} <= {"succeeded", "skipped"}


def test_translate_ntrex_500(home: Path, shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "ntrex128_en_zh" / "en-zh.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()[:500]
    items = [json.loads(line) for line in lines]
    sliced = tmp_path / "ntrex_500.jsonl"
    sliced.write_text("".join(
        json.dumps({"id": item["id"], "text": item["src_en"]}, ensure_ascii=False) + "\n"
        for item in items
    ), encoding="utf-8")
    # A random checkpoint never ends a translation early, so each one runs to the length
    # limit. A lower input limit keeps that short and splits the longer lines into pieces.
    summary = _run(home, str(sliced), "--kind", "translate", "--target-lang", "zh",
                   "--source-lang", "en", env={"LLMJOBS_MAX_INPUT_TOKENS": "48"})
    assert summary["counts"]["succeeded"] == 500

    rows = _results(home, summary["batch_id"])
    assert [row["id"] for row in rows] == [item["id"] for item in items]
    assert all(row["output"]["target_lang"] == "zh" for row in rows)
    assert all("\ufffd" not in row["output"]["text"] for row in rows)
    _check_job_trail(home, summary["batch_id"], items[0]["id"])


def test_write_csl_titles_200(home: Path, shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "csl_zh_title_generation" / "ts_test.tsv"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:200]
    sliced = tmp_path / "csl_200.tsv"
    sliced.write_text("".join(lines), encoding="utf-8")
    summary = _run(home, str(sliced), "--kind", "write", "--text-column", "2",
                   "--template", "headline", "--template-lang", "zh")
    assert summary["counts"]["succeeded"] == 200

    rows = _results(home, summary["batch_id"])
    assert [row["id"] for row in rows] == [str(number) for number in range(1, 201)]
    assert all(row["output"]["finish_reason"] in ("stop", "length") for row in rows)
    assert all(row["output"]["template"] == "headline@1" for row in rows)
    _check_job_trail(home, summary["batch_id"], "1")


def test_run_interrupted_then_rerun(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "comments.jsonl"
    rows = [{"id": f"c{n}", "text": f"第 {n} 条评论, comment {n}" + (" STALL" if n == 200 else "")}
            for n in range(300)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    # The worker stalls on row 200 long enough for the interrupt to land midway, even on a
    # loaded machine. The stop then waits for the stall to end.
    stalling = _env(home, LLMJOBS_FAULT_STALL_MARKER="STALL", LLMJOBS_FAULT_STALL_S="15")
    # A test runner started in the background inherits an ignored SIGINT; Ctrl-C needs it back.
    process = subprocess.Popen([*LLMJOBS, "run", str(path), "--kind", "moderate"], env=stalling,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               encoding="utf-8",
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def done() -> int:
        # Read in-process: a CLI call per poll is too slow on a loaded machine.
        database = home / "llmjobs.db"
        if not database.exists():
            return 0
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection:
            row = connection.execute(
                "SELECT count(*) FROM jobs JOIN batches ON batches.id = jobs.batch_id "
                "WHERE batches.source_name LIKE ? AND jobs.status = 'succeeded'",
                (f"%{path.name}",)).fetchone()
        return int(row[0])

    deadline = time.monotonic() + 600
    while done() < 150 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 130, stderr[-3000:]
    assert "Interrupted. Batch" in stderr
    assert "Run the same command again" in stderr

    again = _run(home, str(path), "--kind", "moderate")
    assert again["status"] == "completed"
    assert again["done_before"] >= 150
    results = _results(home, again["batch_id"])
    assert [result["id"] for result in results] == [row["id"] for row in rows]
    assert all(result["status"] == "succeeded" for result in results)
