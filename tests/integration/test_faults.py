"""Fault injection on real processes: killed workers, duplicates, Redis restarts, poison, hangs.

Each test runs real `llmjobs worker` processes against a real redis-server and a real
database (SQLite and PostgreSQL), then checks the store: one outcome per job, one result
per succeeded job, and one terminal transition per batch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from llmjobs.broker import create_celery_app, publish_chunks
from llmjobs.config import Settings
from llmjobs.models import AuditEvent, Batch, BatchStatus, Job, JobStatus, Result, Store
from tests.helpers import make_batch
from tests.servers import RedisServer
from tests.workers import LLMJOBS, WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.slow


def _publish(settings: Settings, broker_url: str, batch_id: str, ids: list[int],
             chunk_size: int = 16) -> None:
    app = create_celery_app(settings, broker_url)
    publish_chunks(app, "moderate", batch_id, ids, chunk_size=chunk_size)


def _count(store: Store, query) -> int:
    with store.read() as session:
        return int(session.scalar(query) or 0)


def _results(store: Store, batch_id: str) -> int:
    return _count(store, select(func.count()).select_from(Result).where(Result.batch_id == batch_id))


def _batch(store: Store, batch_id: str) -> Batch:
    with store.read() as session:
        return session.get(Batch, batch_id)


def _finished_events(store: Store, batch_id: str) -> int:
    return _count(store, select(func.count()).select_from(AuditEvent).where(
        AuditEvent.batch_id == batch_id, AuditEvent.action == "batch.finished"))


def _terminal(store: Store, batch_id: str) -> bool:
    return BatchStatus(_batch(store, batch_id).status).terminal


def _texts(count: int) -> list[str]:
    return [f"第 {i} 条评论 comment number {i}" for i in range(count)]


@pytest.fixture()
def setup(tmp_path: Path, database_url: str, redis_url: str, checkpoint_env: dict[str, str]):
    home = tmp_path / "home"
    env = worker_env(home, database_url, redis_url, **checkpoint_env)
    settings = Settings.load(env)
    return settings, Store(database_url), env, tmp_path


def test_sigkill_worker_midway(setup) -> None:
    settings, store, env, tmp_path = setup
    batch_id, ids = make_batch(store, _texts(2000))
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids)
    env = {**env, "LLMJOBS_MAX_BATCH_SIZE": "4"}

    first = WorkerProcess(env, tmp_path / "worker1.log", "--kinds", "moderate")
    wait_until(lambda: _results(store, batch_id) >= 600, 300, "30% of the results")
    first.kill()
    done_at_kill = _results(store, batch_id)
    assert done_at_kill < 2000

    second = WorkerProcess(env, tmp_path / "worker2.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        second.stop()
    batch = _batch(store, batch_id)
    assert batch.status == BatchStatus.COMPLETED
    assert batch.counts["succeeded"] == 2000
    assert _results(store, batch_id) == 2000
    assert _finished_events(store, batch_id) == 1


def test_duplicate_chunks_two_workers(setup) -> None:
    settings, store, env, tmp_path = setup
    batch_id, ids = make_batch(store, _texts(300))
    for _ in range(2):
        _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids)
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log", "--kinds", "moderate")
               for i in range(2)]
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
        # The second copy of each chunk may still be in flight after the batch finished.
        wait_until(lambda: _logged_duplicate("".join(w.log_text for w in workers)),
                   120, "a logged duplicate delivery")
    finally:
        for worker in workers:
            worker.stop()
    assert _results(store, batch_id) == 300
    assert _finished_events(store, batch_id) == 1


def _logged_duplicate(log_text: str) -> bool:
    # A copy that arrives after the batch finished is dropped by the batch status check.
    return "duplicate delivery ignored" in log_text or "dropping a chunk" in log_text


def test_redis_restart_mid_run(setup, redis_server: RedisServer) -> None:
    settings, store, env, tmp_path = setup
    batch_id, ids = make_batch(store, _texts(1500))
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids)
    worker = WorkerProcess({**env, "LLMJOBS_MAX_BATCH_SIZE": "4"}, tmp_path / "worker.log",
                           "--kinds", "moderate")
    try:
        wait_until(lambda: _results(store, batch_id) >= 200, 300, "the first results")
        redis_server.restart(down_s=2.0)
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        worker.stop()
    assert _batch(store, batch_id).status == BatchStatus.COMPLETED
    assert _results(store, batch_id) == 1500


def test_four_workers_one_sqlite(tmp_path: Path, redis_url: str,
                                 checkpoint_env: dict[str, str]) -> None:
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = worker_env(tmp_path / "home", database_url, redis_url, **checkpoint_env,
                     LLMJOBS_MAX_BATCH_SIZE="2")
    settings = Settings.load(env)
    store = Store(database_url)
    batch_id, ids = make_batch(store, _texts(2000))
    _publish(settings, redis_url, batch_id, ids, chunk_size=8)
    workers = [WorkerProcess(env, tmp_path / f"worker{i}.log", "--kinds", "moderate")
               for i in range(4)]
    try:
        wait_until(lambda: _terminal(store, batch_id), 600, "the batch to finish")
    finally:
        for worker in workers:
            worker.stop()
    logs = "".join(worker.log_text for worker in workers)
    assert "database is locked" not in logs
    assert _results(store, batch_id) == 2000
    assert _batch(store, batch_id).status == BatchStatus.COMPLETED


def test_crashing_job_becomes_poison(setup) -> None:
    settings, store, env, tmp_path = setup
    texts = _texts(40)
    texts[17] = "CRASH-THE-WORKER " + texts[17]
    batch_id, ids = make_batch(store, texts)
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids, chunk_size=10)
    env = {**env, "LLMJOBS_FAULT_CRASH_MARKER": "CRASH-THE-WORKER", "LLMJOBS_LEASE_S": "3",
           "LLMJOBS_MAX_ATTEMPTS": "3"}
    worker = WorkerProcess(env, tmp_path / "worker.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        worker.stop()
    with store.read() as session:
        poison = session.get(Job, ids[17])
        others = session.scalars(select(Job).where(Job.batch_id == batch_id, Job.id != ids[17])).all()
    assert poison.status == JobStatus.FAILED
    assert poison.error_code == "poison"
    assert all(job.status == JobStatus.SUCCEEDED for job in others)
    assert _batch(store, batch_id).status == BatchStatus.COMPLETED_WITH_ERRORS


def test_hung_generation_times_out(setup) -> None:
    settings, store, env, tmp_path = setup
    texts = _texts(30)
    texts[5] = "STALL-HERE " + texts[5]
    batch_id, ids = make_batch(store, texts)
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids, chunk_size=10)
    env = {**env, "LLMJOBS_FAULT_STALL_MARKER": "STALL-HERE", "LLMJOBS_GENERATION_TIMEOUT_S": "2",
           "LLMJOBS_WATCHDOG_GRACE_S": "2", "LLMJOBS_LEASE_S": "4", "LLMJOBS_MAX_BATCH_SIZE": "1"}
    worker = WorkerProcess(env, tmp_path / "worker.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        worker.stop()
    with store.read() as session:
        hung = session.get(Job, ids[5])
        succeeded = session.scalar(select(func.count()).select_from(Job).where(
            Job.batch_id == batch_id, Job.status == JobStatus.SUCCEEDED))
    assert hung.error_code == "timeout"
    assert succeeded == 29
    assert "watchdog" in worker.log_text


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLMJOBS, *args], env=env, capture_output=True, text=True, timeout=300)


def test_sigterm_releases_rest_of_chunk(setup) -> None:
    settings, store, env, tmp_path = setup
    batch_id, ids = make_batch(store, _texts(400))
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids, chunk_size=200)
    env = {**env, "LLMJOBS_MAX_BATCH_SIZE": "2"}
    first = WorkerProcess(env, tmp_path / "worker1.log", "--kinds", "moderate")
    wait_until(lambda: _results(store, batch_id) >= 20, 300, "the first results")
    assert first.stop() == 0
    assert "releasing the rest of the chunk" in first.log_text

    second = WorkerProcess(env, tmp_path / "worker2.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        second.stop()
    assert _results(store, batch_id) == 400
    assert _batch(store, batch_id).status == BatchStatus.COMPLETED


def test_cancel_mid_run_then_retry_failed(setup) -> None:
    settings, store, env, tmp_path = setup
    texts = _texts(600)
    for index in range(0, 600, 50):
        texts[index] = "长" * 300
    batch_id, ids = make_batch(store, texts)
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids, chunk_size=8)
    faulty = {**env, "LLMJOBS_MAX_BATCH_SIZE": "2", "LLMJOBS_FAULT_OOM_ABOVE_TOKENS": "200"}
    worker = WorkerProcess(faulty, tmp_path / "worker1.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _results(store, batch_id) >= 100, 300, "the first results")
        cancelled = _cli(env, "cancel", batch_id, "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        worker.stop()

    with store.read() as session:
        counts = {status: session.scalar(select(func.count()).select_from(Job).where(
            Job.batch_id == batch_id, Job.status == status)) for status in JobStatus}
    assert counts[JobStatus.CANCELLED] > 0
    assert counts[JobStatus.QUEUED] == counts[JobStatus.RUNNING] == 0
    assert _results(store, batch_id) == counts[JobStatus.SUCCEEDED]
    assert _batch(store, batch_id).status == BatchStatus.CANCELLED
    failed_ids = _job_ids(store, batch_id, JobStatus.FAILED)
    succeeded_before = _job_ids(store, batch_id, JobStatus.SUCCEEDED)
    assert failed_ids

    retried = _cli(env, "retry", batch_id, "--failed", "--json")
    assert retried.returncode == 0, retried.stderr
    worker = WorkerProcess(env, tmp_path / "worker2.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the retried jobs to finish")
    finally:
        worker.stop()
    assert _job_ids(store, batch_id, JobStatus.SUCCEEDED) == succeeded_before | failed_ids
    assert _job_ids(store, batch_id, JobStatus.FAILED) == set()
    assert len(_job_ids(store, batch_id, JobStatus.CANCELLED)) == counts[JobStatus.CANCELLED]


def test_cancel_after_worker_killed(setup) -> None:
    settings, store, env, tmp_path = setup
    texts = _texts(40)
    texts[10] = "STALL-HERE " + texts[10]
    batch_id, ids = make_batch(store, texts)
    _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids, chunk_size=8)
    stalling = {**env, "LLMJOBS_FAULT_STALL_MARKER": "STALL-HERE", "LLMJOBS_MAX_BATCH_SIZE": "2"}
    first = WorkerProcess(stalling, tmp_path / "worker1.log", "--kinds", "moderate")

    def stalled_job_started() -> bool:
        with store.read() as session:
            job = session.get(Job, ids[10])
            return job.status == JobStatus.RUNNING and job.attempts > 0

    wait_until(stalled_job_started, 300, "the worker to stall on one job")
    first.kill()
    running_at_kill = _job_ids(store, batch_id, JobStatus.RUNNING)
    assert ids[10] in running_at_kill
    assert len(running_at_kill) > 1
    cancelled = _cli(env, "cancel", batch_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr

    # The dead worker's jobs were cancelled after its leases expired, not run again.
    second = WorkerProcess(env, tmp_path / "worker2.log", "--kinds", "moderate")
    try:
        wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
    finally:
        second.stop()
    assert _batch(store, batch_id).status == BatchStatus.CANCELLED
    assert running_at_kill <= _job_ids(store, batch_id, JobStatus.CANCELLED)
    assert _job_ids(store, batch_id, JobStatus.QUEUED) == set()
    assert _job_ids(store, batch_id, JobStatus.RUNNING) == set()
    assert _results(store, batch_id) == len(_job_ids(store, batch_id, JobStatus.SUCCEEDED))
    assert _finished_events(store, batch_id) == 1


def _running(pid: int) -> bool:
    """Return True while pid runs; a zombie left for a parent that does not reap counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_sigkill_launcher_stops_worker(setup) -> None:
    _, _, env, tmp_path = setup
    launcher = WorkerProcess(env, tmp_path / "worker.log", "--kinds", "moderate")
    try:
        wait_until(lambda: " ready." in launcher.log_text, 300, "the worker to start")
        started = re.search(r"^  pid:\s+(\d+)$", launcher.log_text, re.MULTILINE)
        assert started is not None
        child = int(started.group(1))
        os.kill(launcher.process.pid, signal.SIGKILL)
        launcher.process.wait(timeout=30)

        wait_until(lambda: not _running(child), 120, "the orphaned worker process to stop")
    finally:
        launcher.kill()
    assert "The launcher" in launcher.log_text
    assert "is gone; stopping worker process" in launcher.log_text


def _job_ids(store: Store, batch_id: str, status: JobStatus) -> set[int]:
    with store.read() as session:
        return set(session.scalars(select(Job.id).where(Job.batch_id == batch_id,
                                                        Job.status == status)))


def test_pickle_message_rejected(setup) -> None:
    settings, store, env, tmp_path = setup
    batch_id, ids = make_batch(store, _texts(3))
    app = create_celery_app(settings, env["LLMJOBS_BROKER_URL"])
    app.conf.accept_content = ["json", "pickle"]
    app.send_task("llmjobs.run_chunk", args=[batch_id, ids], queue="llmjobs.moderate",
                  serializer="pickle")
    worker = WorkerProcess(env, tmp_path / "worker.log", "--kinds", "moderate")
    try:
        wait_until(lambda: "pickle" in worker.log_text, 120, "the worker to reject the message")
        _publish(settings, env["LLMJOBS_BROKER_URL"], batch_id, ids)
        wait_until(lambda: _terminal(store, batch_id), 120, "the JSON copy to finish")
    finally:
        worker.stop()
    assert "untrusted content" in worker.log_text
    assert _results(store, batch_id) == 3


def test_redis_password_never_printed(tmp_path: Path, checkpoint_env: dict[str, str]) -> None:
    password = "s3cret-Pa55word"
    server = RedisServer(Path(f"/tmp/llmjobs-auth-{os.getpid()}"), password=password)
    server.start()
    try:
        client = server.client()
        client.execute_command("ACL", "SETUSER", "producer", "on", f">{password}", "~*", "&*", "+@all")
        broker_url = f"unix://producer:{password}@{server.socket}"
        database_url = f"sqlite:///{tmp_path / 'auth.db'}"
        env = worker_env(tmp_path / "home", database_url, broker_url, **checkpoint_env)
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(f'{{"text": "第{i}条"}}\n' for i in range(20)), encoding="utf-8")
        submitted = _cli(env, "submit", str(rows), "--kind", "moderate", "--json")
        assert submitted.returncode == 0, submitted.stderr
        batch_id = json.loads(submitted.stdout)["batch_id"]
        worker = WorkerProcess(env, tmp_path / "worker.log", "--kinds", "moderate")
        store = Store(database_url)
        try:
            wait_until(lambda: _terminal(store, batch_id), 300, "the batch to finish")
        finally:
            worker.stop()
        status = _cli(env, "status", batch_id)
    finally:
        server.stop()
    assert "producer:***@" in worker.log_text
    for text in (submitted.stdout, submitted.stderr, worker.log_text, status.stdout, status.stderr):
        assert password not in text
