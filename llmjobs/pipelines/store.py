"""Pipeline run rows: claim a (pipeline, date) once, record its stages, hand it over on resume.

The unique (pipeline, scheduled_for) constraint decides who runs a night: whoever inserts
the row first. Every later write names the owner in its WHERE clause, so a process whose
run was taken over by `pipeline resume` can no longer change it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llmjobs.errors import NotFoundError, PipelineError
from llmjobs.models.session import Store
from llmjobs.models.tables import PipelineRun

log = logging.getLogger(__name__)

RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
# Stopped on purpose (scheduler shutdown, Ctrl-C) between polls; the next scheduler resumes it.
INTERRUPTED = "interrupted"
# A run on another host whose owner has not written a heartbeat for this long is presumed dead.
STALE_AFTER_S = 300.0


def new_owner() -> str:
    """Return an owner id for this process: host, pid and a random token."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str | None, heartbeat_at: datetime | None, now: datetime) -> bool:
    """Guess whether the owner process still runs: by pid on this host, and by heartbeat age."""
    if owner is None:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    # A live pid alone proves little: a restarted container's scheduler is often PID 1
    # again, on the same host name. The owner must also have written a heartbeat lately.
    if heartbeat_at is None:
        return False
    return (now - heartbeat_at).total_seconds() < STALE_AFTER_S


def claim_run(store: Store, pipeline: str, day: date, owner: str, now: datetime) -> int | None:
    """Insert the run row for (pipeline, day) and return its id; None when it already exists."""
    try:
        with store.write() as session:
            run = PipelineRun(
                pipeline=pipeline, scheduled_for=day, status=RUNNING, steps=[],
                created_at=now, started_at=now, owner=owner, heartbeat_at=now,
            )
            session.add(run)
            session.flush()
            return int(run.id)
    except IntegrityError:
        return None


def take_over(store: Store, run_id: int, owner: str, now: datetime, force: bool = False) -> PipelineRun:
    """Make `owner` the owner of a failed or interrupted run, or of a running one whose owner is gone.

    Raises PipelineError for a completed run, and for a running one whose owner still looks
    alive unless `force` is set.
    """
    with store.write() as session:
        run = get_run(session, run_id)
        if run.status == COMPLETED:
            raise PipelineError(f"run {run_id} of {run.pipeline} for {run.scheduled_for} is "
                                "already completed; there is nothing to resume")
        if run.status == RUNNING and owner_alive(run.owner, run.heartbeat_at, now) and not force:
            raise PipelineError(
                f"run {run_id} is running in {run.owner} (last heartbeat {run.heartbeat_at}); "
                "wait for it, or pass --force if that process is gone"
            )
        previous_owner, previous_status = run.owner, run.status
        result = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id, PipelineRun.status == previous_status,
                   _same_owner(previous_owner))
            .values(status=RUNNING, owner=owner, heartbeat_at=now, error_message=None,
                    finished_at=None)
        )
        changed = cast("CursorResult[Any]", result).rowcount
        if not changed:
            raise PipelineError(f"run {run_id} changed while it was being resumed; try again")
        log.info("Run %d of %s for %s taken over by %s from %s (%s).", run_id, run.pipeline,
                 run.scheduled_for, owner, previous_owner or "no owner", previous_status)
        session.refresh(run)
        return run


def save_steps(store: Store, run_id: int, owner: str, steps: Sequence[dict[str, Any]],
               now: datetime) -> None:
    """Store the run's stage records; raise PipelineError when another owner took the run."""
    _owned_update(store, run_id, owner, steps=list(steps), heartbeat_at=now)


def release_run(store: Store, run_id: int, owner: str, now: datetime, message: str) -> None:
    """Mark an owned run interrupted and drop the owner, so that any process may resume it."""
    _owned_update(store, run_id, owner, status=INTERRUPTED, owner=None, heartbeat_at=now,
                  error_message=message)


def abandoned(run: PipelineRun, now: datetime) -> bool:
    """Return True for a run that no live process is running: interrupted, or owned by a dead one."""
    if run.status == INTERRUPTED:
        return True
    return run.status == RUNNING and not owner_alive(run.owner, run.heartbeat_at, now)


def heartbeat(store: Store, run_id: int, owner: str, now: datetime) -> None:
    _owned_update(store, run_id, owner, heartbeat_at=now)


def finish_run(store: Store, run_id: int, owner: str, status: str, now: datetime,
               error_message: str | None = None) -> None:
    _owned_update(store, run_id, owner, status=status, finished_at=now, heartbeat_at=now,
                  error_message=error_message)


def _owned_update(store: Store, run_id: int, owner: str, /, **values: Any) -> None:
    with store.write() as session:
        result = session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id, PipelineRun.owner == owner)
            .values(**values)
        )
        changed = cast("CursorResult[Any]", result).rowcount
    if not changed:
        raise PipelineError(f"run {run_id} is no longer owned by this process ({owner}); "
                            "another process resumed it")


def _same_owner(owner: str | None) -> Any:
    return PipelineRun.owner.is_(None) if owner is None else PipelineRun.owner == owner


def get_run(session: Session, run_id: int) -> PipelineRun:
    run = session.get(PipelineRun, run_id)
    if run is None:
        raise NotFoundError(f"pipeline run {run_id} not found; list runs with `llmjobs pipeline runs`")
    return run


def find_run(session: Session, pipeline: str, day: date) -> PipelineRun | None:
    return session.scalars(
        select(PipelineRun).where(PipelineRun.pipeline == pipeline, PipelineRun.scheduled_for == day)
    ).first()


def latest_run_date(session: Session, pipeline: str) -> date | None:
    return session.scalars(
        select(PipelineRun.scheduled_for)
        .where(PipelineRun.pipeline == pipeline)
        .order_by(PipelineRun.scheduled_for.desc())
        .limit(1)
    ).first()


def list_runs(session: Session, pipeline: str | None = None, limit: int = 50) -> Sequence[PipelineRun]:
    query = select(PipelineRun).order_by(PipelineRun.scheduled_for.desc(), PipelineRun.id.desc())
    if pipeline is not None:
        query = query.where(PipelineRun.pipeline == pipeline)
    return session.scalars(query.limit(limit)).all()


def run_as_dict(run: PipelineRun) -> dict[str, Any]:
    """Return a run row as plain JSON-ready values."""
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "scheduled_for": run.scheduled_for.isoformat(),
        "status": run.status,
        "error_message": run.error_message,
        "owner": run.owner,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "heartbeat_at": _iso(run.heartbeat_at),
        "steps": run.steps,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
