"""Submitting files and rows into a real store (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select

from llmjobs.broker import create_celery_app, decode_chunk_message
from llmjobs.config import Settings
from llmjobs.errors import ProducerError, ValidationFailed
from llmjobs.models import AuditEvent, Batch, Job, RejectedRow, Store
from llmjobs.models.audit import verify_chain
from llmjobs.producer import SubmitOptions, submit_file, submit_rows
from llmjobs.producer.plan import plan_batch
from llmjobs.producer.rules import rules_for
from llmjobs.producer.sources import FileInput
from llmjobs.producer.spool import Spool
from llmjobs.producer.storage import create_batch, store_blocks
from llmjobs.producer.validation import RowValidator, validate

NORMAL_QUEUE = "llmjobs.moderate:3"


@pytest.fixture()
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, broker_url=redis_url)


@pytest.fixture()
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings.database_url)
    yield store
    store.dispose()


@pytest.fixture()
def app(settings: Settings, redis_url: str) -> Iterator[Celery]:
    app = create_celery_app(settings, redis_url)
    yield app
    app.close()


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def queued_chunks(client: redis.Redis, queue: str = NORMAL_QUEUE) -> list[tuple[str, list[int]]]:
    """Decode every chunk message waiting in a kombu Redis list, oldest first."""
    chunks = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        chunks.append(decode_chunk_message(raw))
    return chunks


def stored_jobs(store: Store, batch_id: str) -> list[Job]:
    with store.read() as session:
        return list(session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.seq)))


def count(store: Store, table: Any) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_submit_stores_then_publishes(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    rows = [{"id": f"c{i}", "text": f"评论 {i} comment"} for i in range(150)]
    path = write_jsonl(tmp_path / "comments.jsonl", rows)

    outcome = submit_file(settings, store, app, path, "moderate",
                          SubmitOptions(name="nightly", actor="alice"))

    assert (outcome.jobs, outcome.rejected, outcome.chunks) == (150, 0, 3)
    assert outcome.published
    assert not outcome.existing
    jobs = stored_jobs(store, outcome.batch_id)
    assert [job.item_id for job in jobs] == [f"c{i}" for i in range(150)]
    assert [job.seq for job in jobs] == list(range(1, 151))
    assert [job.line for job in jobs] == list(range(1, 151))
    assert all(job.status.value == "queued" and job.priority == 3 for job in jobs)
    assert jobs[0].input_text == "评论 0 comment"
    assert len(jobs[0].input_sha256) == 64

    chunks = queued_chunks(redis_client)
    assert [len(ids) for _batch, ids in chunks] == [64, 64, 22]
    assert {batch for batch, _ids in chunks} == {outcome.batch_id}
    assert [job_id for _batch, ids in chunks for job_id in ids] == [job.id for job in jobs]


def test_batch_row_and_audit_event(
    settings: Settings, store: Store, app: Celery, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}, {"text": "b"}])
    outcome = submit_file(settings, store, app, path, "moderate",
                          SubmitOptions(name="n1", actor="alice", priority="low"))
    with store.read() as session:
        batch = session.get(Batch, outcome.batch_id)
        events = list(session.scalars(
            select(AuditEvent).where(AuditEvent.batch_id == outcome.batch_id).order_by(AuditEvent.id)
        ))
        assert verify_chain(session).ok
    assert batch is not None
    assert len(batch.id) == 32
    assert (batch.kind, batch.total, batch.rejected, batch.name) == ("moderate", 2, 0, "n1")
    assert batch.status.value == "queued"
    assert batch.priority.value == "low"
    assert batch.submitted_by == "alice"
    assert batch.source_sha256 == outcome.source_sha256
    assert batch.idempotency_key == outcome.idempotency_key
    assert [event.action for event in events] == ["batch.submitted", "batch.published"]
    submitted = events[0]
    assert submitted.actor == "alice"
    assert submitted.details["source_sha256"] == batch.source_sha256
    assert submitted.details["source_name"].endswith("rows.jsonl")
    assert submitted.details["kind"] == "moderate"
    assert (submitted.details["jobs"], submitted.details["rejected"]) == (2, 0)


def test_invalid_file_stores_nothing(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # A blank line is skipped, not reported: line 2 below is neither a job nor an error.
    path = tmp_path / "defects.jsonl"
    path.write_bytes(
        b'{"text": "good"}\n\n[]\n42\n{"text": "\xff"}\n{"id": "no text"}\n{"text": "cut'
    )
    errors_file = tmp_path / "errors.jsonl"

    with pytest.raises(ValidationFailed) as raised:
        submit_file(settings, store, app, path, "moderate", SubmitOptions(errors_file=errors_file))

    assert [row.line for row in raised.value.rejections] == [3, 4, 5, 6, 7]
    assert raised.value.total == 5
    written = [json.loads(line) for line in errors_file.read_text(encoding="utf-8").splitlines()]
    assert [row["line"] for row in written] == [3, 4, 5, 6, 7]
    assert written[3]["field"] == "text"
    assert count(store, Batch) == 0
    assert count(store, Job) == 0
    assert count(store, AuditEvent) == 0
    assert redis_client.keys("*llmjobs.*") == []


def test_skip_invalid_records_rejected_rows(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "defects.jsonl"
    path.write_bytes(b'{"text": "good"}\n\n[]\n42\n{"text": "\xff"}\n{"id": "x"}\n{"text": "cut')
    outcome = submit_file(settings, store, app, path, "moderate", SubmitOptions(skip_invalid=True))

    assert (outcome.jobs, outcome.rejected) == (1, 5)
    with store.read() as session:
        batch = session.get(Batch, outcome.batch_id)
        rejected = list(session.scalars(select(RejectedRow).order_by(RejectedRow.line)))
    assert batch is not None
    assert (batch.total, batch.rejected) == (1, 5)
    assert [row.line for row in rejected] == [3, 4, 5, 6, 7]
    assert rejected[3].field == "text"
    assert "truncated" in rejected[4].reason
    assert [job.item_id for job in stored_jobs(store, outcome.batch_id)] == ["1"]
    assert len(queued_chunks(redis_client)) == 1


def test_all_rows_invalid_with_skip(
    settings: Settings, store: Store, app: Celery, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1}, {"id": 2}])
    with pytest.raises(ValidationFailed, match="all 2 rows"):
        submit_file(settings, store, app, path, "moderate", SubmitOptions(skip_invalid=True))
    assert count(store, Batch) == 0


def test_resubmit_returns_same_batch(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}, {"text": "b"}])
    first = submit_file(settings, store, app, path, "moderate")
    again = submit_file(settings, store, app, path, "moderate")
    assert again.batch_id == first.batch_id
    assert again.existing
    assert again.chunks == 0
    assert len(queued_chunks(redis_client)) == 1

    forced = submit_file(settings, store, app, path, "moderate", SubmitOptions(new=True))
    assert forced.batch_id != first.batch_id
    assert not forced.existing
    assert forced.idempotency_key is None
    assert len(queued_chunks(redis_client)) == 2


def test_different_parameters_make_new_batch(
    settings: Settings, store: Store, app: Celery, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "hello"}])
    to_zh = submit_file(settings, store, app, path, "translate", SubmitOptions(target_lang="zh"))
    to_ja = submit_file(settings, store, app, path, "translate", SubmitOptions(target_lang="ja"))
    same = submit_file(settings, store, app, path, "translate", SubmitOptions(target_lang="zh-CN"))
    assert to_zh.batch_id != to_ja.batch_id
    assert same.batch_id == to_zh.batch_id


def test_explicit_idempotency_key(
    settings: Settings, store: Store, app: Celery, tmp_path: Path
) -> None:
    first_file = write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    second_file = write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    options = SubmitOptions(idempotency_key="import-2024-06-01")
    first = submit_file(settings, store, app, first_file, "moderate", options)
    second = submit_file(settings, store, app, second_file, "moderate", options)
    assert second.batch_id == first.batch_id
    assert second.existing


def test_high_priority_queue(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": str(i)} for i in range(5)])
    outcome = submit_file(settings, store, app, path, "moderate",
                          SubmitOptions(priority="high", chunk_size=2))
    assert outcome.chunks == 3
    # kombu names the list of priority 0 after the queue alone.
    assert len(queued_chunks(redis_client, "llmjobs.moderate")) == 3
    assert queued_chunks(redis_client) == []
    assert {job.priority for job in stored_jobs(store, outcome.batch_id)} == {0}


def test_translate_and_write_queues(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "hello", "target_lang": "ja"}, {"text": "x"}])
    outcome = submit_file(settings, store, app, path, "translate", SubmitOptions(target_lang="zh"))
    jobs = stored_jobs(store, outcome.batch_id)
    assert [job.params for job in jobs] == [{"target_lang": "ja"}, None]
    with store.read() as session:
        batch = session.get(Batch, outcome.batch_id)
    assert batch is not None
    assert batch.params == {"target_lang": "zh"}
    assert len(queued_chunks(redis_client, "llmjobs.translate:3")) == 1

    write_path = write_jsonl(tmp_path / "articles.jsonl", [{"text": "文章内容"}])
    written = submit_file(settings, store, app, write_path, "write",
                          SubmitOptions(template="headline", template_language="zh", seed=1))
    with store.read() as session:
        write_batch = session.get(Batch, written.batch_id)
    assert write_batch is not None
    assert write_batch.params == {"template": "headline@1", "template_language": "zh", "seed": 1}
    assert len(queued_chunks(redis_client, "llmjobs.write:3")) == 1


def test_redis_down_keeps_jobs_queued(
    settings: Settings, store: Store, redis_client: redis.Redis, tmp_path: Path, redis_url: str
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}, {"text": "b"}])
    absent = f"unix://{tmp_path / 'no-redis.sock'}"
    down_app = create_celery_app(settings, absent)
    try:
        outcome = submit_file(settings, store, down_app, path, "moderate")
    finally:
        down_app.close()
    assert not outcome.published
    assert outcome.publish_error is not None
    assert f"llmjobs requeue {outcome.batch_id}" in outcome.publish_error
    assert [job.status.value for job in stored_jobs(store, outcome.batch_id)] == ["queued", "queued"]

    # Submitting the same file once Redis is reachable publishes the stored jobs.
    up_app = create_celery_app(settings, redis_url)
    try:
        again = submit_file(settings, store, up_app, path, "moderate")
    finally:
        up_app.close()
    assert again.existing
    assert again.published
    assert again.chunks == 1
    assert queued_chunks(redis_client)[0][0] == outcome.batch_id


def test_resume_after_killed_submission(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(12000)])
    options = SubmitOptions(idempotency_key="resume-test")
    # Reproduce what a process killed after its first job transaction leaves behind.
    source = FileInput(path, options, "moderate", settings)
    plan = plan_batch(settings, "moderate", options)
    batch = Batch(id="0" * 32, kind="moderate", params={}, total=12000, rejected=0,
                  idempotency_key="resume-test", submitted_by="test")
    with store.write() as session:
        create_batch(session, batch, {})
    validator = RowValidator(rules_for(plan), track_ids=True, compute_sha256=True)
    with Spool(tmp_path / "spool", 5000) as spool:
        for entry in validate(iter(source.records()), validator):
            spool.add(entry)
        first_block = next(iter(spool.blocks()))
        store_blocks(store, batch.id, 3, [first_block])
    assert len(stored_jobs(store, batch.id)) == 5000

    outcome = submit_file(settings, store, app, path, "moderate", options)

    assert outcome.existing
    assert outcome.batch_id == batch.id
    jobs = stored_jobs(store, batch.id)
    assert [job.item_id for job in jobs] == [f"r{i}" for i in range(12000)]
    published = [job_id for _batch, ids in queued_chunks(redis_client) for job_id in ids]
    assert published == [job.id for job in jobs]


def test_failure_while_storing_deletes_batch(
    settings: Settings, store: Store, app: Celery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmjobs.producer import submit as submit_module

    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}, {"text": "b"}])
    store_blocks_before = submit_module.store_blocks

    def store_then_fail(*args: Any, **kwargs: Any) -> tuple[int, int]:
        # The jobs reach the store, then the submission fails before it finishes.
        store_blocks_before(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(submit_module, "store_blocks", store_then_fail)
    with pytest.raises(KeyboardInterrupt):
        submit_file(settings, store, app, path, "moderate")

    assert count(store, Batch) == 0
    assert count(store, Job) == 0
    with store.read() as session:
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == ["batch.submitted", "batch.submit_aborted"]


def test_file_changed_after_scan(
    settings: Settings, store: Store, app: Celery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmjobs.producer import submit as submit_module

    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}, {"text": "b"}])
    validate_all = submit_module._validate_all

    def append_then_validate(*args: Any, **kwargs: Any) -> tuple[int, int]:
        # Another program appends a row after the file was hashed.
        with path.open("a", encoding="utf-8") as handle:
            handle.write('{"text": "late"}\n')
        return validate_all(*args, **kwargs)

    monkeypatch.setattr(submit_module, "_validate_all", append_then_validate)
    with pytest.raises(ProducerError, match="changed"):
        submit_file(settings, store, app, path, "moderate")
    assert count(store, Batch) == 0


def test_max_items_per_file(settings: Settings, store: Store, app: Celery, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": str(i)} for i in range(4)])
    with pytest.raises(ProducerError, match="more than 3 rows"):
        submit_file(settings.replace(max_items_per_file=3), store, app, path, "moderate")
    assert count(store, Batch) == 0


def test_submit_rows_from_generator(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis
) -> None:
    rows = ({"id": i, "text": f"行 {i}"} for i in range(100))
    outcome = submit_rows(settings, store, app, rows, "moderate",
                          SubmitOptions(idempotency_key="rows-1"), source_name="pipeline:news")
    assert (outcome.jobs, outcome.chunks) == (100, 2)
    jobs = stored_jobs(store, outcome.batch_id)
    assert [job.item_id for job in jobs] == [str(i) for i in range(100)]
    with store.read() as session:
        batch = session.get(Batch, outcome.batch_id)
    assert batch is not None
    assert batch.source_name == "pipeline:news"

    again = submit_rows(settings, store, app, [{"text": "other"}], "moderate",
                        SubmitOptions(idempotency_key="rows-1"))
    assert again.existing


def test_submit_rows_invalid(settings: Settings, store: Store, app: Celery) -> None:
    with pytest.raises(ValidationFailed) as raised:
        submit_rows(settings, store, app, [{"text": "ok"}, "not a row", {"text": 1}], "moderate")
    assert [row.line for row in raised.value.rejections] == [2, 3]
    assert count(store, Batch) == 0


def test_cold_csv_submit(
    settings: Settings, store: Store, app: Celery, redis_client: redis.Redis, shared_data: Path
) -> None:
    path = shared_data / "cold_zh_offensive" / "test.csv"
    outcome = submit_file(settings, store, app, path, "moderate", SubmitOptions(text_column="TEXT"))
    assert outcome.jobs == 5323
    assert outcome.chunks == 84
    assert count(store, Job) == 5323
    assert sum(len(ids) for _batch, ids in queued_chunks(redis_client)) == 5323


def test_gbk_csv_submit(settings: Settings, store: Store, app: Celery, shared_data: Path) -> None:
    path = shared_data / "zh_medical_qa_gbk" / "样例_内科5000-6000.csv"
    outcome = submit_file(settings, store, app, path, "moderate", SubmitOptions(text_column="ask"))
    assert outcome.jobs == 7644
    assert outcome.encoding == "gb18030"
    assert any("GB18030" in note for note in outcome.notes)
    with store.read() as session:
        first = session.scalars(
            select(Job).where(Job.batch_id == outcome.batch_id, Job.seq == 1)
        ).one()
    assert first.input_text.startswith("我有高血压")
