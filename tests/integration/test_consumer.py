"""The chunk consumer against a real store, with a deterministic stand-in for the model.

The stand-in replaces only the checkpoint: claiming, micro-batching, halving, leases and
result writing are the production code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from llmjobs.config import Settings
from llmjobs.models import Batch, BatchStatus, Job, JobStatus, Result, Store, utcnow
from llmjobs.models.audit import verify_chain
from llmjobs.worker.consumer import ChunkConsumer
from llmjobs.worker.faults import Faults
from llmjobs.worker.kinds.base import ItemResult, WorkItem
from llmjobs.worker.reaper import Reaper
from tests.helpers import make_batch


class EchoKind:
    """Returns each text reversed; counts calls so tests can see how micro-batches were cut."""

    name = "moderate"
    checkpoint_id = "test/echo"
    checkpoint_revision = "r1"
    device_name = "cpu"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def token_counts(self, items: Sequence[WorkItem]) -> list[int]:
        return [len(item.text) for item in items]

    def group_key(self, item: WorkItem) -> None:
        return None

    def run(self, items: Sequence[WorkItem], deadline: float | None = None) -> list[ItemResult]:
        self.batch_sizes.append(len(items))
        return [
            ItemResult(job_id=item.job_id, status="succeeded", output={"text": item.text[::-1]},
                       input_tokens=len(item.text), output_tokens=len(item.text), latency_ms=1.0)
            for item in items
        ]


def _settings(tmp_path, database_url: str, **changes) -> Settings:
    return Settings.load({"LLMJOBS_HOME": str(tmp_path)}, database_url=database_url, **changes)


def _consumer(store: Store, settings: Settings, kind: EchoKind, **options) -> ChunkConsumer:
    return ChunkConsumer(store, {"moderate": kind}, settings, "test-worker", **options)


def _statuses(store: Store, batch_id: str) -> dict[str, int]:
    with store.read() as session:
        rows = session.execute(
            select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
        ).all()
    return {JobStatus(status).value: count for status, count in rows}


def test_consumer_stores_one_result_per_job(tmp_path, database_url: str) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, [f"评论 {i}" for i in range(50)])
    kind = EchoKind()
    report = _consumer(store, _settings(tmp_path, database_url, max_batch_size=16), kind).process(
        batch_id, ids
    )
    assert report.succeeded == 50
    assert max(kind.batch_sizes) <= 16
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 50
        batch = session.get(Batch, batch_id)
        assert batch.status == BatchStatus.COMPLETED
        assert batch.counts["succeeded"] == 50
        assert verify_chain(session).ok


def test_duplicate_delivery_is_noop(tmp_path, database_url: str, caplog) -> None:
    store = Store(database_url)
    # The fourth job is not in the chunk, so the batch stays open after the first delivery.
    batch_id, ids = make_batch(store, ["a", "b", "c", "d"])
    consumer = _consumer(store, _settings(tmp_path, database_url), EchoKind())
    consumer.process(batch_id, ids[:3])
    with caplog.at_level(logging.INFO, logger="llmjobs.worker.consumer"):
        second = consumer.process(batch_id, ids[:3])
    assert second.claimed == 0
    assert second.duplicate == 3
    assert "duplicate delivery ignored" in caplog.text
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 3


def test_chunk_of_finished_batch_dropped(tmp_path, database_url: str, caplog) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, ["a", "b"])
    with store.write() as session:
        session.execute(update(Batch).where(Batch.id == batch_id)
                        .values(status=BatchStatus.CANCELLED))
    kind = EchoKind()
    with caplog.at_level(logging.INFO, logger="llmjobs.worker.consumer"):
        report = _consumer(store, _settings(tmp_path, database_url), kind).process(batch_id, ids)
    assert report.claimed == 0
    assert kind.batch_sizes == []
    assert "is cancelled; dropping a chunk of 2 jobs" in caplog.text
    assert _statuses(store, batch_id) == {"queued": 2}


def test_oom_halving_isolates_huge_item(tmp_path, database_url: str) -> None:
    store = Store(database_url)
    texts = [f"short text {i}" for i in range(63)] + ["长" * 500]
    batch_id, ids = make_batch(store, texts)
    settings = _settings(tmp_path, database_url, max_batch_size=64, max_batch_tokens=10**6)
    consumer = _consumer(store, settings, EchoKind(), faults=Faults(oom_above_tokens=100))
    report = consumer.process(batch_id, ids)
    assert report.succeeded == 63
    assert report.failed == 1
    with store.read() as session:
        huge = session.get(Job, ids[-1])
    assert huge.status == JobStatus.FAILED
    assert huge.error_code == "input_too_long"


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty"),
    pytest.param(" \n\t　", id="spaces"),
    pytest.param("\u200b\u200d\ufeff\u202e", id="invisible"),
])
def test_blank_input_skipped(tmp_path, database_url: str, text: str) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, [text, "real"])
    kind = EchoKind()
    _consumer(store, _settings(tmp_path, database_url), kind).process(batch_id, ids)
    assert _statuses(store, batch_id) == {"skipped": 1, "succeeded": 1}
    assert kind.batch_sizes == [1]


def test_cancelled_jobs_are_not_run(tmp_path, database_url: str) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, ["a", "b", "c", "d"])
    with store.write() as session:
        session.execute(update(Job).where(Job.id.in_(ids[:2])).values(status=JobStatus.CANCELLED))
    _consumer(store, _settings(tmp_path, database_url), EchoKind()).process(batch_id, ids)
    assert _statuses(store, batch_id) == {"cancelled": 2, "succeeded": 2}
    with store.read() as session:
        assert session.get(Batch, batch_id).status == BatchStatus.CANCELLED


def test_stop_request_releases_rest(tmp_path, database_url: str) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, [f"t{i}" for i in range(10)])
    kind = EchoKind()
    calls = iter([False, True, True])
    settings = _settings(tmp_path, database_url, max_batch_size=4)
    report = _consumer(store, settings, kind, stop_requested=lambda: next(calls)).process(
        batch_id, ids
    )
    assert report.succeeded == 4
    assert report.released == 6
    with store.read() as session:
        released = session.scalars(select(Job).where(Job.status == JobStatus.QUEUED)).all()
    assert all(job.not_before is not None for job in released)


def test_expired_lease_after_max_attempts_is_poison(tmp_path, database_url: str) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, ["kills the worker", "fine"])
    past = utcnow() - timedelta(seconds=5)
    with store.write() as session:
        session.execute(update(Job).where(Job.id == ids[0]).values(
            status=JobStatus.RUNNING, attempts=3, lease_owner="dead/1", lease_expires_at=past))
    settings = _settings(tmp_path, database_url)
    _consumer(store, settings, EchoKind()).process(batch_id, ids)
    with store.read() as session:
        poisoned = session.get(Job, ids[0])
        batch = session.get(Batch, batch_id)
    assert poisoned.error_code == "poison"
    assert batch.status == BatchStatus.COMPLETED_WITH_ERRORS


def test_reaper_requeues_and_publishes(tmp_path, database_url: str) -> None:
    store = Store(database_url)
    batch_id, ids = make_batch(store, ["a", "b", "c"])
    past = utcnow() - timedelta(seconds=5)
    with store.write() as session:
        session.execute(update(Job).where(Job.id.in_(ids[:2])).values(
            status=JobStatus.RUNNING, attempts=1, lease_owner="dead/1", lease_expires_at=past))
    published: list[tuple[str, list[int]]] = []
    settings = _settings(tmp_path, database_url)
    reaper = Reaper(store, settings, lambda kind, b, job_ids, p: published.append((b, list(job_ids))),
                    "test-reaper")
    report = reaper.reap_once()
    assert report.requeued == 2
    assert published == [(batch_id, ids[:2])]
    assert reaper.reap_once().published == 0
    # A requeued job that was running before runs alone on its next claim.
    kind = EchoKind()
    _consumer(store, settings, kind).process(batch_id, ids)
    assert sorted(kind.batch_sizes) == [1, 1, 1]
