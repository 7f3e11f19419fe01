"""The store on SQLite and PostgreSQL: schema, sessions and the audit chain."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from llmjobs.errors import NotFoundError
from llmjobs.models import Batch, Job, JobStatus, Result, Store
from llmjobs.models.audit import NewEvent, append_events, verify_chain
from llmjobs.models.base import Base
from llmjobs.models.lifecycle import finalise_batch
from llmjobs.models.queries import get_batch, job_counts


def _batch_with_jobs(store: Store, count: int) -> str:
    with store.write() as session:
        session.add(Batch(id="b-0001", kind="moderate", params={}, total=count))
        session.flush()
        session.add_all(
            Job(batch_id="b-0001", item_id=str(i), seq=i, input_text=f"文本 {i}",
                input_sha256="0" * 64)
            for i in range(count)
        )
    return "b-0001"


def test_job_counts_every_status(database_url: str) -> None:
    store = Store(database_url)
    batch_id = _batch_with_jobs(store, 3)
    with store.read() as session:
        counts = job_counts(session, batch_id)
    assert counts["queued"] == 3
    assert counts["succeeded"] == 0
    assert set(counts) == {status.value for status in JobStatus}


def test_result_unique_per_job(database_url: str) -> None:
    store = Store(database_url)
    batch_id = _batch_with_jobs(store, 1)
    with store.read() as session:
        job_id = session.query(Job.id).scalar()
    with store.write() as session:
        session.add(Result(job_id=job_id, batch_id=batch_id, output={"a": 1}))
    with pytest.raises(IntegrityError), store.write() as session:
        session.add(Result(job_id=job_id, batch_id=batch_id, output={"a": 2}))


def test_batch_prefix_lookup(database_url: str) -> None:
    store = Store(database_url)
    _batch_with_jobs(store, 0)
    with store.read() as session:
        assert get_batch(session, "b-00").id == "b-0001"


@pytest.mark.parametrize(("prefix", "message"), [
    ("b-0", "at least 4 characters"),
    ("b-00", "more than one batch"),
    ("zzzz", "not found"),
])
def test_batch_prefix_errors(database_url: str, prefix: str, message: str) -> None:
    store = Store(database_url)
    with store.write() as session:
        session.add_all([Batch(id="b-0001", kind="moderate", params={}),
                         Batch(id="b-0002", kind="moderate", params={})])

    with pytest.raises(NotFoundError, match=message), store.read() as session:
        get_batch(session, prefix)


def test_audit_chain_detects_edit(database_url: str) -> None:
    store = Store(database_url)
    with store.write() as session:
        append_events(session, [NewEvent("alice", "batch.submitted", details={"文件": "评论.csv"})])
    with store.write() as session:
        append_events(session, [NewEvent("bob", "batch.cancelled")])
    with store.read() as session:
        assert verify_chain(session).ok
    from llmjobs.models import AuditEvent

    with store.write() as session:
        session.execute(update(AuditEvent).where(AuditEvent.actor == "alice").values(actor="eve"))
    with store.read() as session:
        report = verify_chain(session)
    assert not report.ok
    assert report.reason == "content does not match its hash"


def test_migrations_match_models(database_url: str) -> None:
    store = Store(database_url)
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    store.dispose()

    assert differences == []


def test_finished_batch_stores_decisions(database_url: str) -> None:
    store = Store(database_url)
    batch_id = _batch_with_jobs(store, 3)
    with store.write() as session:
        jobs = session.query(Job).order_by(Job.seq).all()
        for job, decision in zip(jobs, ["allow", "block", "allow"], strict=True):
            job.status = JobStatus.SUCCEEDED
            session.add(Result(job_id=job.id, batch_id=batch_id, output={}, decision=decision))
    with store.write() as session:
        finalise_batch(session, batch_id, "test")
    with store.read() as session:
        batch = get_batch(session, batch_id)

    assert batch.counts is not None
    assert batch.counts["succeeded"] == 3
    assert batch.decisions == {"allow": 2, "block": 1}
