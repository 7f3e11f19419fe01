"""cancel, retry and requeue against a real store and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from click.testing import Result as CliResult
from sqlalchemy import func, select

from llmjobs.broker import create_celery_app
from llmjobs.cli.main import _register_commands, cli
from llmjobs.config import Settings
from llmjobs.errors import OperationError
from llmjobs.models import (
    AuditEvent,
    Batch,
    BatchStatus,
    CategoryScore,
    Job,
    JobStatus,
    Result,
    Store,
    utcnow,
)
from llmjobs.operations import cancel_batch, requeue_jobs, retry_jobs
from tests.integration.stored_batches import Item, add_batch, queued_chunks, queued_job_ids

Invoke = Callable[..., CliResult]

FINISHED_ITEMS = [
    Item("ok-1", "hello", JobStatus.SUCCEEDED, {"decision": "allow", "flagged": False}, "allow",
         {"hate": 0.1}, attempts=1),
    Item("bad-1", "timeout", JobStatus.FAILED, error=("generation_timeout", "300 s"), attempts=3),
    Item("ok-2", "world", JobStatus.SUCCEEDED, {"decision": "block", "flagged": True}, "block",
         {"hate": 0.9}, attempts=1),
    Item("bad-2", "oom", JobStatus.FAILED, error=("out_of_memory", "alone"), attempts=1),
    Item("skip-1", "", JobStatus.SKIPPED),
]


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    _register_commands()


@pytest.fixture()
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings.load(environ={
        "LLMJOBS_HOME": str(tmp_path / "home"),
        "LLMJOBS_DATABASE_URL": database_url,
        "LLMJOBS_BROKER_URL": redis_url,
        "LLMJOBS_CHUNK_SIZE": "2",
    })


@pytest.fixture()
def store(settings: Settings) -> Store:
    return Store(settings.database_url)


@pytest.fixture()
def app(settings: Settings, redis_url: str) -> Iterator[Celery]:
    celery_app = create_celery_app(settings, redis_url)
    yield celery_app
    celery_app.close()


@pytest.fixture()
def invoke(database_url: str, redis_url: str, llmjobs_home: Path) -> Invoke:
    runner = CliRunner()
    env = {"LLMJOBS_DATABASE_URL": database_url, "LLMJOBS_BROKER_URL": redis_url}

    def run(*args: str) -> CliResult:
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    return run


def _statuses(store: Store, batch_id: str) -> dict[str, str]:
    with store.read() as session:
        rows = session.execute(select(Job.item_id, Job.status).where(Job.batch_id == batch_id))
        return {item_id: JobStatus(status).value for item_id, status in rows}


def _actions(store: Store, batch_id: str) -> list[str]:
    with store.read() as session:
        return list(session.scalars(
            select(AuditEvent.action).where(AuditEvent.batch_id == batch_id).order_by(AuditEvent.id)
        ))


def _batch(store: Store, batch_id: str) -> Batch:
    with store.read() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        return batch


def test_cancel_keeps_finished_results(store: Store) -> None:
    batch_id, _ = add_batch(store, "moderate", [
        Item("done", "a", JobStatus.SUCCEEDED, {"decision": "allow"}, "allow"),
        Item("busy", "b", JobStatus.RUNNING),
        Item("wait-1", "c"),
        Item("wait-2", "d"),
    ])

    report = cancel_batch(store, batch_id, "cli:test")

    assert report.cancelled == 2
    assert report.running == 1
    assert report.final_status is None
    assert _statuses(store, batch_id) == {
        "done": "succeeded", "busy": "running", "wait-1": "cancelled", "wait-2": "cancelled",
    }
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 1
    # A running job remains, so its worker finalises the batch later.
    assert _batch(store, batch_id).status == BatchStatus.RUNNING
    assert _actions(store, batch_id) == ["batch.cancelled"]


def test_cancel_finalises_idle_batch(store: Store) -> None:
    batch_id, _ = add_batch(store, "moderate", [
        Item("done", "a", JobStatus.SUCCEEDED, {"decision": "allow"}, "allow"),
        Item("wait", "b"),
    ])

    report = cancel_batch(store, batch_id[:8], "cli:test")

    batch = _batch(store, batch_id)
    assert report.final_status == BatchStatus.CANCELLED
    assert batch.status == BatchStatus.CANCELLED
    assert batch.counts is not None
    assert batch.counts["cancelled"] == 1
    assert batch.counts["succeeded"] == 1
    assert batch.finished_at is not None
    assert _actions(store, batch_id) == ["batch.cancelled", "batch.finished"]


def test_cancel_finished_batch_noop(store: Store) -> None:
    batch_id, _ = add_batch(store, "moderate", FINISHED_ITEMS, status=BatchStatus.COMPLETED)

    report = cancel_batch(store, batch_id, "cli:test")

    assert report.already_finished
    assert report.cancelled == 0
    assert _actions(store, batch_id) == []


def test_retry_only_failed_jobs(store: Store, app: Celery, settings: Settings,
                                redis_url: str) -> None:
    batch_id, jobs = add_batch(store, "moderate", FINISHED_ITEMS,
                               status=BatchStatus.COMPLETED_WITH_ERRORS)

    report = retry_jobs(store, app, settings, batch_id, "cli:test")

    assert report.retried == 2
    assert sorted(report.job_ids) == sorted([jobs["bad-1"], jobs["bad-2"]])
    assert _statuses(store, batch_id) == {
        "ok-1": "succeeded", "bad-1": "queued", "ok-2": "succeeded", "bad-2": "queued",
        "skip-1": "skipped",
    }
    assert queued_job_ids(redis_url, "moderate") == sorted([jobs["bad-1"], jobs["bad-2"]])
    assert {batch for batch, _ in queued_chunks(redis_url, "moderate")} == {batch_id}
    with store.read() as session:
        retried = session.get(Job, jobs["bad-1"])
        assert retried is not None
        assert retried.error_code is None
        assert retried.error_message is None
        assert retried.attempts == 3
        assert retried.finished_at is None
        assert session.scalar(select(func.count()).select_from(Result)) == 2
        assert session.scalar(select(func.count()).select_from(CategoryScore)) == 2
    batch = _batch(store, batch_id)
    assert batch.status == BatchStatus.RUNNING
    assert batch.finished_at is None
    assert batch.counts is None
    assert _actions(store, batch_id).count("job.retried") == 2
    assert _actions(store, batch_id)[-1] == "batch.retried"


def test_retry_succeeded_needs_explicit_status(store: Store, app: Celery, settings: Settings,
                                               redis_url: str) -> None:
    batch_id, jobs = add_batch(store, "moderate", FINISHED_ITEMS, status=BatchStatus.COMPLETED)

    report = retry_jobs(store, app, settings, batch_id, "cli:test", ["succeeded"])

    assert report.retried == 2
    assert queued_job_ids(redis_url, "moderate") == sorted([jobs["ok-1"], jobs["ok-2"]])
    assert _statuses(store, batch_id)["bad-1"] == "failed"
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 0
        assert session.scalar(select(func.count()).select_from(CategoryScore)) == 0
        events = session.scalars(select(AuditEvent).where(
            AuditEvent.job_id == jobs["ok-2"], AuditEvent.action == "job.retried")).all()
    assert len(events) == 1
    previous = events[0].details["previous_result"]
    assert previous["output"]["decision"] == "block"
    assert previous["decision"] == "block"


def test_retry_succeeded_rejected_while_running(store: Store, app: Celery,
                                                settings: Settings) -> None:
    batch_id, _ = add_batch(store, "moderate", FINISHED_ITEMS)

    with pytest.raises(OperationError, match="still running"):
        retry_jobs(store, app, settings, batch_id, "cli:test", ["succeeded"])


def test_retry_nothing_selected(store: Store, app: Celery, settings: Settings,
                                redis_url: str) -> None:
    batch_id, _ = add_batch(store, "translate", [Item("a", "x", JobStatus.SUCCEEDED,
                                                      {"text": "y"})],
                            status=BatchStatus.COMPLETED)

    report = retry_jobs(store, app, settings, batch_id, "cli:test")

    assert report.retried == 0
    assert queued_chunks(redis_url, "translate") == []
    assert _batch(store, batch_id).status == BatchStatus.COMPLETED


def test_retry_unknown_status_rejected(store: Store, app: Celery, settings: Settings) -> None:
    batch_id, _ = add_batch(store, "moderate", FINISHED_ITEMS)

    with pytest.raises(OperationError, match="'queued'"):
        retry_jobs(store, app, settings, batch_id, "cli:test", ["queued"])


def test_requeue_publishes_queued_jobs(store: Store, app: Celery, settings: Settings,
                                       redis_url: str) -> None:
    batch_id, jobs = add_batch(store, "translate", [
        Item("q-1", "a"), Item("run", "b", JobStatus.RUNNING), Item("q-2", "c"),
        Item("done", "d", JobStatus.SUCCEEDED, {"text": "D"}), Item("q-3", "e"),
    ])

    report = requeue_jobs(store, app, settings, "cli:test", batch_id=batch_id)

    assert report.total == 3
    assert report.republished == {batch_id: 3}
    # Chunk size 2: three jobs need two messages.
    assert report.messages == 2
    assert queued_job_ids(redis_url, "translate") == sorted(
        [jobs["q-1"], jobs["q-2"], jobs["q-3"]]
    )
    assert _actions(store, batch_id) == ["batch.requeued"]


def test_requeue_all_open_batches_by_age(store: Store, app: Celery, settings: Settings,
                                         redis_url: str) -> None:
    hour_ago = utcnow() - timedelta(hours=1)
    old_id, old_jobs = add_batch(store, "write", [Item("a", "x"), Item("b", "y")],
                                 created_at=hour_ago)
    new_id, _ = add_batch(store, "write", [Item("c", "z")])
    closed_id, _ = add_batch(store, "write", [Item("d", "w")], status=BatchStatus.CANCELLED,
                             created_at=hour_ago)

    report = requeue_jobs(store, app, settings, "cli:test", older_than_s=600)

    assert report.republished == {old_id: 2}
    assert queued_job_ids(redis_url, "write") == sorted(old_jobs.values())
    assert new_id not in report.republished
    assert closed_id not in report.republished


def test_requeue_skips_delayed_and_reserved(store: Store, app: Celery, settings: Settings,
                                            redis_url: str) -> None:
    batch_id, jobs = add_batch(store, "moderate", [
        Item("now", "a"), Item("later", "b"), Item("reserved", "c"), Item("lost", "d"),
    ])
    with store.write() as session:
        delayed = session.get(Job, jobs["later"])
        reserved = session.get(Job, jobs["reserved"])
        lost = session.get(Job, jobs["lost"])
        assert delayed is not None and reserved is not None and lost is not None
        delayed.not_before = utcnow() + timedelta(hours=1)
        reserved.lease_owner = "worker-2"
        reserved.lease_expires_at = utcnow() + timedelta(minutes=5)
        lost.lease_owner = "worker-dead"
        lost.lease_expires_at = utcnow() - timedelta(minutes=5)

    report = requeue_jobs(store, app, settings, "cli:test", batch_id=batch_id)

    assert report.total == 2
    assert queued_job_ids(redis_url, "moderate") == sorted([jobs["now"], jobs["lost"]])


def test_cli_cancel_retry_requeue(store: Store, invoke: Invoke, redis_url: str) -> None:
    batch_id, jobs = add_batch(store, "moderate", [
        Item("ok", "a", JobStatus.SUCCEEDED, {"decision": "allow"}, "allow"),
        Item("bad", "b", JobStatus.FAILED, error=("out_of_memory", "alone")),
        Item("wait", "c"),
    ])

    cancelled = invoke("cancel", batch_id, "--json")
    retried = invoke("retry", batch_id, "--failed", "--status", "cancelled", "--json")
    requeued = invoke("requeue", batch_id)

    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["cancelled"] == 1
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["retried"] == 2
    assert json.loads(retried.stdout)["statuses"] == ["failed", "cancelled"]
    assert requeued.exit_code == 0, requeued.output
    assert "Republished 2 queued jobs" in requeued.stdout
    # Each retried job is published twice: once by retry, once by requeue.
    expected = sorted([jobs["bad"], jobs["wait"]] * 2)
    assert queued_job_ids(redis_url, "moderate") == expected
    assert _statuses(store, batch_id)["ok"] == "succeeded"


def test_cli_retry_rejects_queued_status(store: Store, invoke: Invoke) -> None:
    batch_id, _ = add_batch(store, "moderate", FINISHED_ITEMS)

    result = invoke("retry", batch_id, "--status", "queued")

    assert result.exit_code == 2
    assert "--status" in result.output
