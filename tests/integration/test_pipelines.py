"""Pipelines against real Redis, real databases and real worker processes."""

from __future__ import annotations

import base64
import csv
import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, insert, select

from llmjobs.client import Client
from llmjobs.config import Settings
from llmjobs.models import Batch, PipelineRun, PipelineSourceFile, Store
from llmjobs.operations import cancel_batch
from llmjobs.pipelines import store as runs
from llmjobs.pipelines.beat import pipeline_queue
from llmjobs.pipelines.runner import PipelineRunner, RunOutcome
from llmjobs.pipelines.schedule import plan_catch_up
from llmjobs.pipelines.scheduler import catch_up, create_scheduler_app, trigger_run
from llmjobs.pipelines.sources import TableSource
from llmjobs.pipelines.spec import PipelineSpec, load_pipeline_file
from tests.workers import LLMJOBS, LlmjobsProcess, WorkerProcess, wait_until, worker_env

NIGHT = date(2026, 12, 5)
COLD_ROWS = 60
# Tiny checkpoints fail some write items (input too long), so a step may end with errors.
FINISHED = ("completed", "completed_with_errors")

PIPELINE = """\
pipelines:
  comments:
    schedule: "0 2 * * *"
    timezone: Asia/Shanghai
    catch_up: {catch_up}
    source:
      files: {{glob: "inbox/*.csv", text_column: TEXT}}
    steps:
      - kind: moderate
      - kind: translate
        target_lang: en
        filter: {filter}
      - kind: write
        name: headline
        template: headline
        max_tokens: 8
    exports:
      - jsonl: "out/{{date}}/headlines.jsonl"
      - csv: "out/{{date}}/headlines.csv"
"""
# Tiny random checkpoints decide arbitrarily; the test compares with the stored decisions.
FLAGGED_FILTER = "{decision: {in: [review, block]}}"


def write_pipelines(folder: Path, filter_text: str = FLAGGED_FILTER, catch_up: str = "latest") -> Path:
    path = folder / "pipelines.yaml"
    path.write_text(PIPELINE.format(filter=filter_text, catch_up=catch_up), encoding="utf-8")
    (folder / "inbox").mkdir(exist_ok=True)
    return path


def copy_cold_slice(shared_data: Path, target: Path, start: int, count: int) -> list[str]:
    """Copy the header and `count` data rows of COLD's test split; return their texts."""
    import csv

    source = shared_data / "cold_zh_offensive" / "test.csv"
    with source.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1 + start:1 + start + count]
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(body)
    return [row[header.index("TEXT")] for row in body]


@pytest.fixture()
def settings(llmjobs_home: Path, database_url: str, redis_url: str) -> Settings:
    return Settings.load(environ={
        "LLMJOBS_HOME": str(llmjobs_home),
        "LLMJOBS_DATABASE_URL": database_url,
        "LLMJOBS_BROKER_URL": redis_url,
    })


@pytest.fixture()
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings) as opened:
        yield opened


def start_worker(tmp_path: Path, settings: Settings, checkpoint_env: dict[str, str], name: str,
                 *args: str) -> WorkerProcess:
    # Short generations: tiny checkpoints write noise, and CPU decoding is the slow part.
    env = worker_env(settings.home, settings.database_url, str(settings.broker_url),
                     LLMJOBS_MAX_NEW_TOKENS="8", LLMJOBS_TRANSLATE_MAX_NEW_TOKENS="16",
                     **checkpoint_env)
    return WorkerProcess(env, tmp_path / f"{name}.log", *args)


def step_records(client: Client, run_id: int) -> list[dict[str, Any]]:
    with client.store.read() as session:
        run = runs.get_run(session, run_id)
        return [record for record in run.steps if record.get("stage") == "step"]


def export_lines(spec: PipelineSpec, settings: Settings, day: date) -> list[dict[str, Any]]:
    path = spec.resolve_path("out/{date}/headlines.jsonl", settings.home, day)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path: Path, shared_data: Path, settings: Settings, client: Client,
                             checkpoint_env: dict[str, str]) -> None:
    spec = load_pipeline_file(write_pipelines(tmp_path)).get("comments")
    texts = copy_cold_slice(shared_data, tmp_path / "inbox" / "night1.csv", 0, COLD_ROWS)
    worker = start_worker(tmp_path, settings, checkpoint_env, "worker")
    try:
        first = PipelineRunner(spec, settings, client, poll_s=0.2).run(NIGHT)
        second_night = PipelineRunner(spec, settings, client, poll_s=0.2).run(date(2026, 12, 6))
        new_texts = copy_cold_slice(shared_data, tmp_path / "inbox" / "night3.csv", COLD_ROWS, 20)
        third_night = PipelineRunner(spec, settings, client, poll_s=0.2).run(date(2026, 12, 7))
    finally:
        worker.stop()

    assert first.status == "completed", first.error_message
    steps = step_records(client, int(first.run_id or 0))
    assert all(record["status"] in FINISHED for record in steps)
    moderate_batch, translate_batch, write_batch = (record["batch_id"] for record in steps)

    # The export contains exactly the items that passed the filter and the last two steps.
    flagged = {row.item_id for row in client.results(moderate_batch)
               if (row.output or {}).get("decision") in ("review", "block")}
    translated = {row.item_id for row in client.results(translate_batch, status="succeeded")}
    written = {row.item_id for row in client.results(write_batch, status="succeeded")}
    assert {row.item_id for row in client.results(translate_batch)} == flagged
    lines = export_lines(spec, settings, NIGHT)
    assert {line["id"] for line in lines} == flagged & translated & written
    assert len(lines) == len(flagged & translated & written)
    assert len(lines) > 0

    # Each line has the original text and every step's output; translate feeds write.
    translations = {row.item_id: row.output for row in client.results(translate_batch)}
    headline_inputs = {row.item_id: row.input_text for row in client.results(write_batch)}
    for line in lines:
        assert line["text"] in texts
        assert line["moderate"]["decision"] in ("review", "block")
        assert line["translate"] == translations[line["id"]]
        assert headline_inputs[line["id"]] == translations[line["id"]]["text"]
        assert "finish_reason" in line["headline"]
    csv_path = spec.resolve_path("out/{date}/headlines.csv", settings.home, NIGHT)
    # Parsed as CSV: generated text may hold newlines and the separators that
    # str.splitlines() also splits on (U+001C to U+001E, U+0085, U+2028).
    with csv_path.open(encoding="utf-8", newline="") as handle:
        records = list(csv.reader(handle))
    assert len(records) == len(lines) + 1

    # The step batches are linked to the run.
    with client.store.read() as session:
        linked = set(session.scalars(select(Batch.id).where(Batch.pipeline_run_id == first.run_id)))
    assert linked == {moderate_batch, translate_batch, write_batch}

    # The next night finds no new file and reads nothing.
    assert second_night.status == "completed", second_night.error_message
    second_steps = step_records(client, int(second_night.run_id or 0))
    assert [record["status"] for record in second_steps] == ["skipped"] * 3
    assert export_lines(spec, settings, date(2026, 12, 6)) == []

    # A new file is read the night after, and only the new file.
    assert third_night.status == "completed", third_night.error_message
    third_moderate = step_records(client, int(third_night.run_id or 0))[0]["batch_id"]
    third_inputs = [row.input_text for row in client.results(third_moderate)]
    assert sorted(third_inputs) == sorted(new_texts)
    with client.store.read() as session:
        claimed = session.execute(select(PipelineSourceFile.path, PipelineSourceFile.run_id)).all()
    assert sorted((Path(path).name, run_id) for path, run_id in claimed) == [
        ("night1.csv", first.run_id), ("night3.csv", third_night.run_id)]


@pytest.mark.slow
def test_failed_step_resumes(tmp_path: Path, shared_data: Path, settings: Settings, client: Client,
                             checkpoint_env: dict[str, str]) -> None:
    spec = load_pipeline_file(write_pipelines(tmp_path, "{status: succeeded}")).get("comments")
    copy_cold_slice(shared_data, tmp_path / "inbox" / "night1.csv", 0, 12)
    outcomes: list[RunOutcome] = []

    # Only moderation is served, so the translate batch waits until the test cancels it.
    moderator = start_worker(tmp_path, settings, checkpoint_env, "moderator", "--kinds", "moderate")
    try:
        runner = PipelineRunner(spec, settings, client, poll_s=0.2)
        thread = threading.Thread(target=lambda: outcomes.append(runner.run(NIGHT)))
        thread.start()

        def translate_batch() -> str | None:
            with client.store.read() as session:
                run = runs.find_run(session, "comments", NIGHT)
                records = [r for r in (run.steps if run else []) if r.get("index") == 1]
            return records[0].get("batch_id") if records else None

        wait_until(lambda: translate_batch() is not None, 300, "the translate batch")
        cancelled_batch = str(translate_batch())
        cancel_batch(client.store, cancelled_batch, "test")
        thread.join(timeout=300)
    finally:
        moderator.stop()

    failed = outcomes[0]
    assert failed.status == "failed"
    assert "translate" in str(failed.error_message)
    assert "cancelled" in str(failed.error_message)
    before = step_records(client, int(failed.run_id or 0))
    with client.store.read() as session:
        assert runs.get_run(session, int(failed.run_id or 0)).status == "failed"

    worker = start_worker(tmp_path, settings, checkpoint_env, "worker")
    try:
        resumed = PipelineRunner(spec, settings, client, poll_s=0.2).resume(int(failed.run_id or 0))
    finally:
        worker.stop()

    assert resumed.status == "completed", resumed.error_message
    assert resumed.run_id == failed.run_id
    after = step_records(client, int(resumed.run_id or 0))
    assert after[0]["batch_id"] == before[0]["batch_id"]
    assert after[1]["batch_id"] != cancelled_batch
    assert after[1]["previous_batch_ids"] == [cancelled_batch]
    assert all(record["status"] in FINISHED for record in after)
    with client.store.read() as session:
        moderate_batches = session.scalars(
            select(Batch.id).where(Batch.pipeline_run_id == resumed.run_id, Batch.kind == "moderate")
        ).all()
    assert list(moderate_batches) == [before[0]["batch_id"]]


def test_resume_refuses_completed_run(tmp_path: Path, settings: Settings, client: Client) -> None:
    spec = load_pipeline_file(write_pipelines(tmp_path)).get("comments")
    outcome = PipelineRunner(spec, settings, client).run(NIGHT)

    with pytest.raises(runs.PipelineError, match="already completed"):
        PipelineRunner(spec, settings, client).resume(int(outcome.run_id or 0))


def test_concurrent_triggers_one_run(tmp_path: Path, settings: Settings) -> None:
    spec = load_pipeline_file(write_pipelines(tmp_path)).get("comments")
    barrier = threading.Barrier(3)
    outcomes: list[RunOutcome] = []
    lock = threading.Lock()

    def scheduler_trigger() -> None:
        barrier.wait()
        outcome = trigger_run(spec, settings, NIGHT)
        with lock:
            outcomes.append(outcome)

    def manual_trigger() -> None:
        with Client(settings) as own_client:
            runner = PipelineRunner(spec, settings, own_client)
            barrier.wait()
            outcome = runner.run(NIGHT)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=scheduler_trigger), threading.Thread(target=scheduler_trigger),
               threading.Thread(target=manual_trigger)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    statuses = sorted(outcome.status for outcome in outcomes)
    assert statuses == ["completed", "exists", "exists"]
    assert len({outcome.run_id for outcome in outcomes}) == 1
    store = Store(settings.database_url)
    try:
        with store.read() as session:
            rows = session.scalars(select(PipelineRun).where(PipelineRun.pipeline == "comments")).all()
    finally:
        store.dispose()
    assert [(row.scheduled_for, row.status) for row in rows] == [(NIGHT, "completed")]


def start_scheduler(tmp_path: Path, settings: Settings, path: Path, name: str,
                    **extra: str) -> LlmjobsProcess:
    env = worker_env(settings.home, settings.database_url, str(settings.broker_url), **extra)
    return LlmjobsProcess(env, tmp_path / f"{name}.log", "scheduler", "--pipelines", str(path))


def stop_cleanly(process: LlmjobsProcess) -> None:
    """SIGTERM a scheduler and require exit status 0, showing its log otherwise."""
    code = process.stop(timeout_s=90)
    assert code == 0, f"{process.log_path.name} exited with {code}:\n{process.log_text[-6000:]}"


@pytest.mark.slow
def test_two_scheduler_processes_one_run(tmp_path: Path, settings: Settings) -> None:
    path = write_pipelines(tmp_path)
    processes = [start_scheduler(tmp_path, settings, path, name) for name in ("scheduler-a", "scheduler-b")]
    store = Store(settings.database_url)
    queue = redis.Redis.from_url(str(settings.broker_url))
    try:
        def finished_runs() -> list[PipelineRun]:
            with store.read() as session:
                return [run for run in runs.list_runs(session, "comments") if run.status == "completed"]

        # Each scheduler catches up at start, so two run messages are sent for one night.
        wait_until(lambda: all("catch_up=latest runs" in p.log_text for p in processes), 120,
                   "both schedulers to send their catch-up run")
        wait_until(lambda: len(finished_runs()) == 1 and queue.llen(pipeline_queue("comments")) == 0, 120,
                   "the caught-up run")
        wait_until(lambda: any("already has run" in p.log_text for p in processes), 120,
                   "the second run message to find the run row")
        # SIGTERM before Celery installs its handlers would end a scheduler with -15.
        wait_until(lambda: all(" ready." in p.log_text for p in processes), 120,
                   "both schedulers to consume")
    finally:
        for process in processes:
            stop_cleanly(process)
        queue.close()
    with store.read() as session:
        all_runs = runs.list_runs(session, "comments")
    store.dispose()
    assert len(all_runs) == 1


@pytest.mark.slow
def test_scheduler_leaves_other_pipelines_runs(tmp_path: Path, settings: Settings) -> None:
    path = write_pipelines(tmp_path, catch_up="skip")
    other = tmp_path / "other.yaml"
    other.write_text(path.read_text(encoding="utf-8").replace("  comments:", "  other:"),
                     encoding="utf-8")
    sender = create_scheduler_app(settings, str(settings.broker_url), load_pipeline_file(other))
    scheduler = start_scheduler(tmp_path, settings, path, "scheduler")
    queue = redis.Redis.from_url(str(settings.broker_url))
    try:
        wait_until(lambda: " ready." in scheduler.log_text, 120, "the scheduler to consume")
        sender.send_task("llmjobs.run_pipeline", args=["other", NIGHT.isoformat()],
                         queue=pipeline_queue("other"), routing_key=pipeline_queue("other"))
        time.sleep(3)
        waiting = queue.llen(pipeline_queue("other"))
    finally:
        stop_cleanly(scheduler)
        queue.close()
    assert waiting == 1
    assert "does not define" not in scheduler.log_text


@pytest.mark.slow
def test_ctrl_c_interrupts_pipeline_run(tmp_path: Path, shared_data: Path, settings: Settings,
                                        client: Client) -> None:
    path = write_pipelines(tmp_path)
    copy_cold_slice(shared_data, tmp_path / "inbox" / "night1.csv", 0, 4)
    env = worker_env(settings.home, settings.database_url, str(settings.broker_url))
    # No worker runs, so the run waits on its first batch until the signal.
    process = subprocess.Popen(
        [*LLMJOBS, "pipeline", "run", "comments", "--pipelines", str(path), "--date", NIGHT.isoformat()],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def waiting() -> bool:
        with client.store.read() as session:
            run = runs.find_run(session, "comments", NIGHT)
            return bool(run and any(r.get("status") == "running" for r in run.steps))

    wait_until(waiting, 120, "the run to wait on its first batch")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    with client.store.read() as session:
        run = runs.find_run(session, "comments", NIGHT)

    assert process.returncode == 130, stderr[-3000:]
    assert "continue it with `llmjobs pipeline resume" in stderr
    assert run is not None
    assert run.status == "interrupted"


@pytest.mark.slow
def test_stopped_scheduler_interrupts_and_next_resumes(
        tmp_path: Path, shared_data: Path, settings: Settings, client: Client,
        checkpoint_env: dict[str, str]) -> None:
    path = write_pipelines(tmp_path, "{status: succeeded}")
    copy_cold_slice(shared_data, tmp_path / "inbox" / "night1.csv", 0, 8)

    def run_row() -> PipelineRun | None:
        with client.store.read() as session:
            found = runs.list_runs(session, "comments")
        return found[0] if found else None

    def first_step() -> dict[str, Any]:
        row = run_row()
        return next((r for r in (row.steps if row else []) if r.get("index") == 0), {})

    # No worker yet: the caught-up run submits its moderation batch and waits for it.
    first = start_scheduler(tmp_path, settings, path, "scheduler-a")
    try:
        wait_until(lambda: first_step().get("status") == "running", 120, "the run to wait on step 1")
    finally:
        stop_cleanly(first)
    interrupted = run_row()
    assert interrupted is not None
    assert (interrupted.status, interrupted.owner) == ("interrupted", None)
    assert "this process is stopping" in str(interrupted.error_message)
    waited_batch = first_step()["batch_id"]

    worker = start_worker(tmp_path, settings, checkpoint_env, "worker")
    second = start_scheduler(tmp_path, settings, path, "scheduler-b")
    try:
        wait_until(lambda: getattr(run_row(), "status", None) in ("completed", "failed"), 300,
                   "the resumed run to finish")
    finally:
        stop_cleanly(second)
        worker.stop()
    finished = run_row()
    assert finished is not None and finished.id == interrupted.id
    assert finished.status == "completed", finished.error_message
    assert "is interrupted; resuming it" in second.log_text
    assert first_step()["batch_id"] == waited_batch
    with client.store.read() as session:
        moderate_batches = session.scalars(
            select(Batch.id).where(Batch.pipeline_run_id == finished.id, Batch.kind == "moderate")
        ).all()
    assert list(moderate_batches) == [waited_batch]


@pytest.mark.parametrize(
    ("policy", "latest_run", "action", "missed"),
    [
        pytest.param("latest", None, "run", 1, id="latest-never-ran"),
        pytest.param("latest", date(2026, 12, 2), "run", 3, id="latest-three-missed"),
        pytest.param("latest", NIGHT, "none", 0, id="latest-nothing-missed"),
        pytest.param("skip", date(2026, 12, 2), "skip", 3, id="skip-three-missed"),
    ],
)
def test_catch_up_plan(tmp_path: Path, policy: str, latest_run: date | None, action: str,
                       missed: int) -> None:
    spec = load_pipeline_file(write_pipelines(tmp_path, catch_up=policy)).get("comments")
    # 09:00 in Shanghai on 5 December: that night's 02:00 run is due.
    now = datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc)

    decision = plan_catch_up(spec, now, latest_run)

    assert decision.action == action
    assert decision.missed == missed
    assert decision.day == (NIGHT if action != "none" else None)
    assert decision.next_fire.isoformat() == "2026-12-06T02:00:00+08:00"


@pytest.mark.parametrize(
    ("policy", "messages", "logged"),
    [
        pytest.param("latest", 1, "catch_up=latest runs 2026-12-05 now", id="latest"),
        pytest.param("skip", 0, "catch_up=skip waits for the next run", id="skip"),
    ],
)
def test_catch_up_at_start(tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture,
                           policy: str, messages: int, logged: str) -> None:
    pipelines = load_pipeline_file(write_pipelines(tmp_path, catch_up=policy))
    app = create_scheduler_app(settings, str(settings.broker_url), pipelines)
    store = Store(settings.database_url)
    queue = redis.Redis.from_url(str(settings.broker_url))
    # The scheduler was down from 3 to 5 December, 09:00 in Shanghai.
    with store.write() as session:
        session.add(PipelineRun(pipeline="comments", scheduled_for=date(2026, 12, 2),
                                status="completed", steps=[]))
    now = datetime(2026, 12, 5, 1, 0, tzinfo=timezone.utc)

    with caplog.at_level(logging.INFO, logger="llmjobs"):
        sent = catch_up(pipelines, store, app, now)

    assert len(sent) == messages
    assert queue.llen(pipeline_queue("comments")) == messages
    assert logged in caplog.text
    assert "3 scheduled run(s) missed" in caplog.text
    if messages:
        message = json.loads(queue.lindex(pipeline_queue("comments"), 0) or b"{}")
        args = json.loads(base64.b64decode(message["body"]))[0]
        assert args == ["comments", "2026-12-05"]
    queue.close()
    store.dispose()


def test_sql_source_watermark(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    source_url = f"sqlite:///{tmp_path / 'comments.db'}"
    monkeypatch.setenv("COMMENTS_DB", source_url)
    engine = create_engine(source_url)
    table = Table("comments", MetaData(), Column("id", Integer, primary_key=True),
                  Column("body", String(200)), Column("updated_at", DateTime))
    table.metadata.create_all(engine)

    def add(item_id: int, hour: int) -> None:
        with engine.begin() as connection:
            connection.execute(insert(table), [{"id": item_id, "body": f"comment {item_id}",
                                                "updated_at": datetime(2026, 12, 4, hour)}])

    path = tmp_path / "sql.yaml"
    path.write_text(
        "pipelines:\n  table:\n    schedule: '0 2 * * *'\n    timezone: UTC\n"
        "    source:\n      sql: {url_env: COMMENTS_DB, table: comments, id_column: id,\n"
        "            text_column: body, watermark_column: updated_at}\n"
        "    steps:\n      - kind: moderate\n", encoding="utf-8")
    spec = load_pipeline_file(path).get("table")
    store = Store(settings.database_url)
    source = TableSource(spec, settings)
    run_ids = []
    for day in (1, 2, 3):
        run_ids.append(runs.claim_run(store, "table", date(2026, 12, day), "test-owner",
                                      datetime.now(timezone.utc)))
    add(1, 1)
    add(2, 2)

    first = source.claim(store, int(run_ids[0] or 0))
    second = source.claim(store, int(run_ids[1] or 0))
    add(3, 3)
    third = source.claim(store, int(run_ids[2] or 0))

    assert [row["id"] for row in source.rows(first)] == ["1", "2"]
    assert list(source.rows(second)) == []
    assert [row["id"] for row in source.rows(third)] == ["3"]
    assert [row["text"] for row in source.rows(third)] == ["comment 3"]
    store.dispose()
    engine.dispose()
