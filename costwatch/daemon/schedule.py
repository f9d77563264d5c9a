"""When cycles run: the APScheduler trigger for `schedule.every` (optionally jittered) or
`schedule.cron`, in `schedule.timezone`, and the time between two cycles (readiness allows 3).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from costwatch.config import ScheduleConfig

__all__ = ["describe", "interval", "trigger"]


def trigger(schedule: ScheduleConfig) -> BaseTrigger:
    """The APScheduler trigger for `schedule`, in its time zone."""
    zone = schedule.zone
    jitter = int(schedule.jitter.total_seconds()) if schedule.jitter else None
    if schedule.cron is not None:
        cron = CronTrigger.from_crontab(schedule.cron, timezone=zone)
        if jitter:
            cron.jitter = jitter
        return cron
    assert schedule.every is not None
    return IntervalTrigger(seconds=schedule.every.total_seconds(), timezone=zone, jitter=jitter)


def interval(schedule: ScheduleConfig, now: datetime | None = None) -> timedelta:
    """The time between two cycles (for a cron line: between its next two fire times)."""
    if schedule.every is not None:
        return schedule.every
    cron = CronTrigger.from_crontab(str(schedule.cron), timezone=schedule.zone)
    moment = now or datetime(2026, 1, 5, tzinfo=schedule.zone)  # a Monday: a typical week
    first: datetime | None = cron.get_next_fire_time(None, moment)
    if first is None:
        return timedelta(days=1)
    second: datetime | None = cron.get_next_fire_time(first, first + timedelta(seconds=1))
    return second - first if second is not None else timedelta(days=1)


def describe(schedule: ScheduleConfig) -> str:
    what = f"cron {schedule.cron!r}" if schedule.cron else f"every {schedule.every}"
    return f"cycles {what} in {schedule.timezone}"
