"""A budget file replayed over the usage history: what it would have sent, and when.

    points(schedule, first, last, at)   the instants replayed: each day's last cycle, every cycle
                                        of the schedule, or every hour
    needed(config, points)              per zone, the days the replay reads
    HeldDays(store)                     a `fetch.Source` over the days a scratch store holds
                                        (with `workspaces:`, one per workspace's partition)
    replay(config, scratch, points)     the daemon's cycle at each point; what it queued

The replay IS the daemon's cycle (`cycle.run_once`): the same gathering of each period to date
(`gather.py`: stored closed days + the open day), the same forecasts from the stored days
(`recent.py`), evaluation (`budgets.py`), alert lifecycle against the ledger (`alerts.py`,
`lifecycle.py`), detectors (`detecting.py`) and outbox rows with their channels. Only its store
is a scratch one (`costwatch backtest` fills it with the days the replay reads, in a temporary
directory it deletes: the configured state is only read), and its exports come from the days
held there (`HeldDays`), never from Langdock. With `workspaces:`, the scratch store holds each
workspace's days in its own partition (`partitions.py`), as the state does, and each workspace's
usage comes from its own (`HeldDays` over its `Partition`): the cycle gathers and joins them as
the daemon's does (`gather.from_workspaces`). After each point the rows it queued are read and
marked sent; nothing is delivered.

The history holds days, not hours. At a point inside a local day, that open day's usage is
taken to be the day's stored usage times the share of the day gone by at that instant (usage
spread evenly over the day; requests and tokens rounded down): nothing at local midnight, all
of it at the next. A point at local midnight is therefore exactly what the daemon sees there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl
from apscheduler.triggers.cron import CronTrigger

from costwatch import (
    budgets,
    cycle,
    detecting,
    fetch,
    forecast,
    history,
    notices,
    periods,
    recent,
    usage,
)
from costwatch.alerts import Alert
from costwatch.config import Config, ScheduleConfig
from costwatch.errors import UsageError
from costwatch.fetch import Fetched, day_range
from costwatch.partitions import Partition
from costwatch.periods import local_midnight
from costwatch.replayed import Fired, Replay
from costwatch.state import Store
from costwatch.state.base import History
from costwatch.usage.model import TOKEN_COLUMNS

__all__ = ["AT", "Fired", "HeldDays", "Replay", "needed", "points", "replay", "share_of_day"]

At = Literal["day-end", "cycles", "hourly"]
AT: tuple[At, ...] = ("day-end", "cycles", "hourly")
HOUR = timedelta(hours=1)


def points(schedule: ScheduleConfig, first: date, last: date, at: At) -> list[datetime]:
    """The instants (UTC) replayed over the local days [first, last] of the schedule's zone.

    `cycles`: every cycle of the schedule: its cron line's fire times, or every `every` from
    local midnight of `first` (the daemon's own phase is its start; jitter is left out).
    `day-end`: of those, each day's last (a day without a cycle has none: its usage counts
    at the next cycle). `hourly`: every hour from local midnight of `first`."""
    zone = schedule.zone
    start, end = local_midnight(first, zone), local_midnight(last + timedelta(days=1), zone)
    if at == "hourly":
        return _every(start, end, HOUR)
    cycles = _cron(schedule.cron, zone, start, end) if schedule.cron else None
    if cycles is None:
        assert schedule.every is not None
        cycles = _every(start, end, schedule.every)
    if at == "cycles":
        return cycles
    last_of_day: dict[date, datetime] = {}
    for instant in cycles:
        last_of_day[instant.astimezone(zone).date()] = instant
    return list(last_of_day.values())


def _every(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    first, stop = start.astimezone(UTC), end.astimezone(UTC)
    count = -(-(stop - first) // step)  # ceiling
    return [first + n * step for n in range(count)]


def _cron(line: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    trigger = CronTrigger.from_crontab(line, timezone=zone)
    out: list[datetime] = []
    previous: datetime | None = None
    moment = start
    while True:
        fire: datetime | None = trigger.get_next_fire_time(previous, moment)
        if fire is None or fire.astimezone(UTC) >= end.astimezone(UTC):
            return out
        out.append(fire.astimezone(UTC))
        previous, moment = fire, fire + timedelta(seconds=1)


def needed(config: Config, replayed: Sequence[datetime]) -> dict[str, tuple[date, date]]:
    """Per zone name, the local days [first, last] the replay of `replayed` (in order) reads:
    back to the first day of every period running at the first point, the forecasts' windows
    and the window of the detectors (when one is enabled), up to the open day of the last
    point. What a point needs only
    moves forward in time, so the first and the last point say it all."""
    if not replayed:
        return {}
    start, end = replayed[0], replayed[-1]
    days: dict[str, tuple[date, date]] = {}

    def add(zone: ZoneInfo, first: date) -> None:
        last = end.astimezone(zone).date()
        known = days.get(zone.key)
        days[zone.key] = (min(first, known[0]) if known else first, last)

    add(
        config.schedule.zone,
        periods.current(config.defaults.period, config.schedule.zone, start).first_day,
    )
    for rule in budgets.rules(config, start):
        add(rule.period.zone, rule.period.first_day)
        span = forecast.wanted(rule.forecast, rule.period.zone, start)
        if span is not None and config.history.enabled:
            add(rule.period.zone, span[0])
    if config.anomalies.enabled or config.unit_cost.enabled or config.unowned.enabled:
        today = start.astimezone(config.schedule.zone).date()
        add(config.schedule.zone, today - timedelta(days=detecting.window_days(config)))
    return days


def share_of_day(instant: datetime, zone: ZoneInfo) -> tuple[date, float]:
    """The local day of `instant` in `zone` and the share of it gone by (0 at its midnight)."""
    day = instant.astimezone(zone).date()
    midnight, next_midnight = (moment.astimezone(UTC) for moment in day_range(zone, day))
    return day, (instant.astimezone(UTC) - midnight) / (next_midnight - midnight)


class HeldDays:
    """The days a store holds as a `fetch.Source`: [start, end) is its whole local days as
    stored, and a day it covers in part that day's usage times the share covered (see the
    module). A day the store does not hold is a `UsageError`: never taken as $0."""

    def __init__(self, store: History) -> None:
        self._store = store

    def range(self, start: datetime, end: datetime) -> Fetched:
        zone = start.tzinfo
        if not isinstance(zone, ZoneInfo):
            raise ValueError("a held range starts at an instant of a named zone")
        start_utc, end_utc = start.astimezone(UTC), end.astimezone(UTC)  # real time, not wall
        if end_utc <= start_utc:
            return Fetched(usage=usage.load([]), export=None)
        first = start.astimezone(zone).date()
        last = (end_utc - timedelta(microseconds=1)).astimezone(zone).date()
        stored = self._store.stored_days(zone.key, first, last)
        shares: dict[date, float] = {}
        for day in history.closed_days(first, last + timedelta(days=1)):
            if day not in stored:
                raise UsageError(f"the backtest holds no usage for {day} ({zone.key})")
            midnight, next_midnight = (moment.astimezone(UTC) for moment in day_range(zone, day))
            covered = min(end_utc, next_midnight) - max(start_utc, midnight)
            shares[day] = covered / (next_midnight - midnight)
        whole = sorted(day for day, share in shares.items() if share == 1)
        frames = []
        if whole:
            frames.append(self._store.usage_between(zone.key, whole[0], whole[-1]))
        for day, share in sorted(shares.items()):
            if 0 < share < 1:
                frames.append(_scaled(self._store.usage_between(zone.key, day, day), share))
        frame = history.combine(frames)
        tokens = any(s.has_tokens for day, s in stored.items() if shares[day] > 0)
        return Fetched(
            usage=usage.Usage(
                frame=frame, has_tokens=tokens, model_column=None, rows_read=frame.height
            ),
            export=None,
        )


def _scaled(frame: pl.DataFrame, share: float) -> pl.DataFrame:
    counts = ("requests", *TOKEN_COLUMNS)
    return frame.with_columns(
        pl.col("total_cost_usd") * share,
        *((pl.col(c) * share).floor().cast(pl.Int64) for c in counts),
    )


class ReplayError(Exception):
    """A replayed cycle failed (the held days could not be used)."""


def replay(config: Config, scratch: Store, replayed: Sequence[datetime]) -> Replay:
    """`cycle.run_once` at each point, in order, over `scratch` (which must hold the days
    `needed` names); the rows each queued, read back and marked sent."""
    cache = recent.Cache()
    source = HeldDays(scratch)
    sources: dict[str, fetch.Source] = {}
    if config.keyed_by_workspace:  # each workspace's days from its own partition
        sources = {c.name: HeldDays(Partition(scratch, c.name)) for c in config.connections}
    fired: list[Fired] = []
    silenced: list[tuple[datetime, Alert]] = []
    unevaluated: dict[str, None] = {}
    evaluated = 0
    for now in replayed:
        deps = cycle.Deps(config, source=source, sources=sources, state=scratch, recent_days=cache)
        outcome = cycle.run_once(deps, now)
        if outcome.error is not None:
            raise ReplayError(f"the cycle at {now.isoformat()} failed: {outcome.error}")
        if outcome.failed_workspaces:  # a workspace's usage is never taken as $0
            name, error = next(iter(outcome.failed_workspaces.items()))
            raise ReplayError(f"the cycle at {now.isoformat()} failed in workspace {name}: {error}")
        unevaluated.update(dict.fromkeys(item.describe() for item in outcome.unevaluated))
        evaluated += bool(outcome.findings.height)
        if outcome.plan is not None:
            silenced += [(now, alert) for alert in outcome.plan.silenced]
        ids = set(outcome.outbox_ids)
        if not ids:
            continue
        queued = [item for item in scratch.pending(limit=len(ids) + 1000) if item.id in ids]
        fired += [
            Fired(now, item.channel, notices.read(item.kind, item.payload, written_at=now))
            for item in sorted(queued, key=lambda item: item.id)
        ]
        scratch.mark_sent(ids, now)
    return Replay(
        tuple(replayed), tuple(fired), tuple(silenced), tuple(unevaluated), evaluated=evaluated
    )
