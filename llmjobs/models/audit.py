"""The append-only audit trail, chained by hashes so that edits can be detected."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from llmjobs.models.base import utcnow
from llmjobs.models.tables import AuditEvent

GENESIS_HASH = "0" * 64
# Any constant works: it names the PostgreSQL advisory lock that serialises appends.
_AUDIT_LOCK_KEY = 0x6C6C6D6A6F6273
_AUDIT_EVENTS = cast(Table, AuditEvent.__table__)


@dataclass
class NewEvent:
    actor: str
    action: str
    batch_id: str | None = None
    job_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def event_hash(
    prev_hash: str,
    created_at: datetime,
    actor: str,
    action: str,
    batch_id: str | None,
    job_id: int | None,
    details: dict[str, Any],
) -> str:
    """Hash one event's content together with the previous event's hash."""
    payload = json.dumps(
        [prev_hash, created_at.isoformat(), actor, action, batch_id, job_id, details],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Append events in order inside the caller's transaction.

    On SQLite the write transaction already holds the database lock. On PostgreSQL a
    transaction-scoped advisory lock keeps two writers from chaining onto the same row.
    """
    if not events:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK_KEY})
    prev_hash = session.scalar(
        select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
    ) or GENESIS_HASH

    rows = []
    created_at = utcnow()
    for event in events:
        digest = event_hash(
            prev_hash, created_at, event.actor, event.action, event.batch_id, event.job_id,
            event.details,
        )
        rows.append({
            "created_at": created_at,
            "actor": event.actor,
            "action": event.action,
            "batch_id": event.batch_id,
            "job_id": event.job_id,
            "details": event.details,
            "prev_hash": prev_hash,
            "hash": digest,
        })
        prev_hash = digest
    # The Core table: the ORM's bulk insert costs bookkeeping per row on the worker's hot path.
    session.execute(insert(_AUDIT_EVENTS), rows)


@dataclass
class VerifyReport:
    checked: int
    first_bad_id: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


def verify_chain(session: Session, batch_size: int = 5000) -> VerifyReport:
    """Recompute every hash in id order and report the first event that does not match."""
    prev_hash = GENESIS_HASH
    checked = 0
    rows: Iterable[AuditEvent] = session.scalars(
        select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=batch_size)
    )
    for row in rows:
        if row.prev_hash != prev_hash:
            return VerifyReport(checked, row.id, "prev_hash does not match the previous event")
        expected = event_hash(
            row.prev_hash, row.created_at, row.actor, row.action, row.batch_id, row.job_id,
            row.details,
        )
        if expected != row.hash:
            return VerifyReport(checked, row.id, "content does not match its hash")
        prev_hash = row.hash
        checked += 1
    return VerifyReport(checked, None, None)
