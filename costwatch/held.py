"""The days a command holds: a span of local days of the usage history, the stored ones read,
the missing closed ones exported from Langdock one day at a time, kept in memory and never
stored. `costwatch report` (`reporting.read_days`), `costwatch backtest` and `costwatch suggest`
read their days so, the state opened read-only.

    plan(history, {zone: Wanted}) -> Plan          what the store holds, which days it lacks
    export(plan, client, pace=, progress=) -> {zone: Days}   those days exported, in order
    read(history, wanted, client, ...)             the two at once
    read_each(history, wanted, clients, ...)       every workspace's (`workspaces:`), joined

`Wanted` is a zone's span [first, last], read as stored, and the days of it that are exported
when the store lacks them (by default all; the rest stay missing, e.g. the detectors' window
before a report, or days older than the export API serves). The days missing are exported zone
after zone (in the order given), day after day, with `pace` between two exports (`sleep`, a
plain pause as `backfill --pace`'s between its days), and `progress` told of each day before
its export and after it (`Step`). A failed export raises as `fetch.fetch_day` does
(`ExportError`, `UsageError`), stopping there; nothing is ever written to the history. Without a
client nothing is exported: the stored days alone (the daemon's reports).

With `workspaces:`, `read_each` reads each workspace's days from its own partition of the store
(`partitions.Partition`) and exports the ones it lacks with that workspace's own client, then
joins them as a cycle does: ids "workspace/id" with a `workspace` column (`workspaces.qualify`),
a day covered only when every workspace covers it (another's is unknown, never $0).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import polars as pl

from costwatch.fetch import Fetched, fetch_day
from costwatch.history import closed_days
from costwatch.partitions import Partition, joined_day, key
from costwatch.state.base import History, StoredDay
from costwatch.usage import SCHEMA
from costwatch.workspaces import qualify

if TYPE_CHECKING:  # httpx loads only where an export is made
    from costwatch.langdock import LangdockClient

__all__ = ["DAYS", "Days", "Plan", "Step", "Wanted", "export", "plan", "read", "read_each"]

DAYS = pl.Schema({**SCHEMA, "day": pl.Date()})  # the frame of `Days.usage`


@dataclass(frozen=True)
class Wanted:
    """A zone's local days [first, last], read as stored; of them, the days `exportable` (in
    the order they are exported; None: every day of the span) are exported when not stored."""

    first: date
    last: date
    exportable: tuple[date, ...] | None = None

    def to_export(self, stored: Mapping[date, StoredDay]) -> list[date]:
        """The days exported when `stored` is what the store holds."""
        days = self.exportable
        if days is None:
            days = tuple(closed_days(self.first, self.last + timedelta(days=1)))
        return [day for day in days if day not in stored]


@dataclass(frozen=True)
class Plan:
    """Per zone name, what the store holds of its span (days and their usage by day), and the
    days missing, all zones', in the order they are exported."""

    stored: Mapping[str, Mapping[date, StoredDay]]
    frames: Mapping[str, pl.DataFrame]
    missing: tuple[tuple[ZoneInfo, date], ...]


@dataclass(frozen=True)
class Step:
    """One missing day's export, as `progress` is told it: before (`fetched` None) and after."""

    index: int  # its place among the missing days, from 0
    total: int
    zone: ZoneInfo
    day: date
    fetched: Fetched | None = None
    workspace: str = ""  # whose day (`read_each`); "" for one workspace's `read`


@dataclass(frozen=True)
class Days:
    """A zone's days: `usage` (DAYS: the stored days, then the exported ones), the stored days
    as the store describes them, and the exported ones with whether the export reported
    tokens (`Usage.has_tokens`)."""

    usage: pl.DataFrame
    stored: Mapping[date, StoredDay]
    exported: Mapping[date, bool]

    @property
    def covered(self) -> frozenset[date]:
        """The days known whole: stored or exported."""
        return frozenset(self.stored) | frozenset(self.exported)

    def of(self, day: date) -> pl.DataFrame:
        """The usage of one day (usage.SCHEMA, one row per key and model)."""
        return self.usage.filter(pl.col("day") == day).drop("day")


def plan(history: History | None, wanted: Mapping[str, Wanted]) -> Plan:
    """What `history` holds of each zone's span (None: nothing stored) and what it lacks."""
    stored: dict[str, Mapping[date, StoredDay]] = {}
    frames: dict[str, pl.DataFrame] = {}
    missing: list[tuple[ZoneInfo, date]] = []
    for name, span in wanted.items():
        if history is None:
            stored[name], frames[name] = {}, pl.DataFrame(schema=DAYS)
        else:
            stored[name] = history.stored_days(name, span.first, span.last)
            frames[name] = history.usage_by_day(name, span.first, span.last)
        zone = ZoneInfo(name)
        missing += [(zone, day) for day in span.to_export(stored[name])]
    return Plan(stored, frames, tuple(missing))


def export(
    planned: Plan,
    client: LangdockClient | None,
    *,
    pace: timedelta = timedelta(0),
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[Step], None] | None = None,
) -> dict[str, Days]:
    """Each zone's days: the stored ones and, with `client`, the missing ones exported (see the
    module). A failed export raises; nothing is stored."""
    exported: dict[str, list[tuple[date, Fetched]]] = {name: [] for name in planned.stored}
    todo = planned.missing if client is not None else ()
    for index, (zone, day) in enumerate(todo):
        assert client is not None
        if index and pace:
            sleep(pace.total_seconds())
        if progress is not None:
            progress(Step(index, len(todo), zone, day))
        fetched = fetch_day(client, zone, day)
        if progress is not None:
            progress(Step(index, len(todo), zone, day, fetched))
        exported[zone.key].append((day, fetched))
    return {
        name: _days(planned.frames[name], planned.stored[name], exported[name])
        for name in planned.stored
    }


def read(
    history: History | None,
    wanted: Mapping[str, Wanted],
    client: LangdockClient | None,
    *,
    pace: timedelta = timedelta(0),
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[Step], None] | None = None,
) -> dict[str, Days]:
    """`plan` and `export` at once."""
    return export(plan(history, wanted), client, pace=pace, sleep=sleep, progress=progress)


def read_each(
    history: History | None,
    wanted: Mapping[str, Wanted],
    clients: Mapping[str, LangdockClient | None],
    *,
    pace: timedelta = timedelta(0),
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[Step], None] | None = None,
) -> dict[str, Days]:
    """Each workspace's days (`clients`: by workspace name, in order; None exports nothing)
    read from its partition, the missing ones exported with its own client, joined (see the
    module). A failed export raises, naming nothing more than `read` does; nothing is stored."""
    each: dict[str, dict[str, Days]] = {}
    for name, client in clients.items():

        def told(step: Step, name: str = name) -> None:
            if progress is not None:
                progress(replace(step, workspace=name))

        own = Partition(history, name) if history is not None else None
        each[name] = read(own, wanted, client, pace=pace, sleep=sleep, progress=told)
    return {
        zone: _joined(zone, {name: days[zone] for name, days in each.items()}) for zone in wanted
    }


def _joined(zone: str, each: Mapping[str, Days]) -> Days:
    """One zone's days of every workspace as one: keys qualified, the days every workspace
    stored as stored, the others every workspace covers as exported."""
    usage = pl.concat(
        [qualify(days.usage, name) for name, days in each.items()], how="vertical_relaxed"
    )
    parts = list(each.values())
    covered = frozenset.intersection(*(days.covered for days in parts))
    stored = set.intersection(*(set(days.stored) for days in parts))
    joined = "+".join(key(name, zone) for name in each)
    exported = {
        day: any(days.exported.get(day, False) for days in parts)
        for day in sorted(covered - stored)
    }
    return Days(
        usage.filter(pl.col("day").is_in(sorted(covered))),
        {day: joined_day([days.stored[day] for days in parts], joined) for day in sorted(stored)},
        exported,
    )


def _days(
    stored_frame: pl.DataFrame,
    stored: Mapping[date, StoredDay],
    fetched: Sequence[tuple[date, Fetched]],
) -> Days:
    frames = [
        stored_frame,
        *(
            f.usage.frame.with_columns(pl.lit(day, dtype=pl.Date).alias("day"))
            for day, f in fetched
        ),
    ]
    usage = pl.concat(
        [pl.DataFrame(schema=DAYS), *(f.select(list(DAYS)).cast(DAYS) for f in frames)]
    )
    return Days(usage, stored, {day: f.usage.has_tokens for day, f in fetched})
