"""Celery beat entries for pipelines: a cron schedule in the pipeline's own time zone.

Celery's crontab follows one app-wide time zone, but each pipeline names its own, so
CronSchedule evaluates the cron line with croniter in the pipeline's zone instead.
Beat sends `llmjobs.run_pipeline` with (pipeline name, scheduled date) on the pipeline's
own queue, `llmjobs.pipelines.<name>`; the date is computed when the message is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from celery.beat import BeatLazyFunc
from celery.schedules import BaseSchedule, schedstate

from llmjobs.pipelines.schedule import next_fire, previous_fire
from llmjobs.pipelines.spec import PipelineSpec

RUN_PIPELINE_TASK = "llmjobs.run_pipeline"


def pipeline_queue(name: str) -> str:
    """Return the queue of one pipeline's run messages.

    One queue per pipeline, so that a scheduler consumes only the runs of pipelines its file
    defines. A run of a pipeline that no running scheduler defines waits for one that does.
    """
    return f"llmjobs.pipelines.{name}"


class CronSchedule(BaseSchedule):
    """A five-field cron expression evaluated in an IANA time zone."""

    def __init__(self, expression: str, zone_name: str,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        super().__init__(nowfun=nowfun or _utc_now, app=app)
        self.expression = expression
        self.zone_name = zone_name
        self.zone = ZoneInfo(zone_name)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return next_fire(self.expression, self.zone, _aware(last_run_at)) - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return (due now, seconds until beat should check again)."""
        now = self.now()
        due_at = next_fire(self.expression, self.zone, _aware(last_run_at))
        if now >= due_at:
            following = next_fire(self.expression, self.zone, now)
            return schedstate(True, (following - now).total_seconds())
        return schedstate(False, (due_at - now).total_seconds())

    def scheduled_date_text(self) -> str:
        """Return the ISO date of the latest cron time at or before now, in the pipeline's zone."""
        return previous_fire(self.expression, self.zone, self.now()).date().isoformat()

    def __repr__(self) -> str:
        return f"<CronSchedule {self.expression!r} {self.zone_name}>"

    def __reduce__(self) -> Any:
        return (self.__class__, (self.expression, self.zone_name, None))

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, CronSchedule):
            return (other.expression, other.zone_name) == (self.expression, self.zone_name)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.expression, self.zone_name))


def beat_schedule(
    pipelines: Mapping[str, PipelineSpec], nowfun: Callable[[], datetime] | None = None
) -> dict[str, dict[str, Any]]:
    """Return Celery's beat_schedule setting: one entry per pipeline."""
    entries = {}
    for name, spec in pipelines.items():
        schedule = CronSchedule(spec.schedule, spec.timezone, nowfun)
        entries[f"pipeline:{name}"] = {
            "task": RUN_PIPELINE_TASK,
            "schedule": schedule,
            # Evaluated by beat when it sends the message, not when the entry is built.
            "args": [name, BeatLazyFunc(schedule.scheduled_date_text)],
            "options": {"queue": pipeline_queue(name), "routing_key": pipeline_queue(name)},
        }
    return entries


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)
