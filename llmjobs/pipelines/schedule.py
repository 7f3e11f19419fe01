"""Cron times in a pipeline's time zone, and what to do about runs missed while no scheduler ran.

A run's date is the date, in the pipeline's time zone, of the cron time that triggered
it: "0 2 * * *" in Asia/Shanghai fires at 02:00 local time for that same date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from llmjobs.pipelines.spec import PipelineSpec

log = logging.getLogger(__name__)

# Counting missed nights stops here; the number is only logged.
_MAX_MISSED_COUNTED = 1000


def previous_fire(expression: str, zone: ZoneInfo, now: datetime) -> datetime:
    """Return the latest cron time at or before `now` (aware, in `zone`)."""
    # croniter's get_prev is strictly earlier than its start, so start one second later.
    start = now.astimezone(zone) + timedelta(seconds=1)
    fire: datetime = croniter(expression, start).get_prev(datetime)
    return fire


def next_fire(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    """Return the first cron time strictly after `after` (aware, in `zone`)."""
    fire: datetime = croniter(expression, after.astimezone(zone)).get_next(datetime)
    return fire


def scheduled_date(spec: PipelineSpec, now: datetime) -> date:
    """Return the date of the latest cron time at or before `now`: the night a trigger is for."""
    return previous_fire(spec.schedule, spec.zone, now).date()


@dataclass(frozen=True)
class CatchUp:
    """The action of a starting scheduler for one pipeline: run a missed date now, or nothing."""

    pipeline: str
    # "run": run `day` now; "skip": `day` was missed and stays missed; "none": nothing missed.
    action: str
    day: date | None
    missed: int
    next_fire: datetime


def plan_catch_up(spec: PipelineSpec, now: datetime, latest_run: date | None) -> CatchUp:
    """Decide, at scheduler start, whether the latest cron time before `now` was missed.

    A date is missed when no run row exists for it or for a later date. `catch_up: latest`
    runs only the most recent missed date, once; `skip` leaves it to the next cron time.
    A pipeline that never ran counts its latest cron time as missed.
    """
    zone = spec.zone
    last_fire = previous_fire(spec.schedule, zone, now)
    upcoming = next_fire(spec.schedule, zone, now)
    day = last_fire.date()
    if latest_run is not None and latest_run >= day:
        return CatchUp(spec.name, "none", None, 0, upcoming)
    missed = _count_missed(spec, last_fire, latest_run)
    action = "run" if spec.catch_up == "latest" else "skip"
    return CatchUp(spec.name, action, day, missed, upcoming)


def _count_missed(spec: PipelineSpec, last_fire: datetime, latest_run: date | None) -> int:
    if latest_run is None:
        return 1
    iterator = croniter(spec.schedule, last_fire + timedelta(seconds=1))
    missed = 0
    while missed < _MAX_MISSED_COUNTED:
        fire: datetime = iterator.get_prev(datetime)
        if fire.date() <= latest_run:
            break
        missed += 1
    return missed


def log_catch_up(decision: CatchUp) -> None:
    """Log a catch-up decision; missed dates are always logged, whatever the policy."""
    if decision.action == "none":
        log.info("Pipeline %s: no missed run; next run at %s.", decision.pipeline,
                 decision.next_fire.isoformat())
    elif decision.action == "run":
        log.warning("Pipeline %s: %d scheduled run(s) missed; catch_up=latest runs %s now, "
                    "then the next at %s.", decision.pipeline, decision.missed, decision.day,
                    decision.next_fire.isoformat())
    else:
        log.warning("Pipeline %s: %d scheduled run(s) missed, the latest for %s; catch_up=skip "
                    "waits for the next run at %s.", decision.pipeline, decision.missed,
                    decision.day, decision.next_fire.isoformat())
