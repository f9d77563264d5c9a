"""Where a cycle's usage comes from: per export range, the frame `budgets.evaluate` takes.

    a saved export (`check --csv`)    one file for every range; the store is not touched
    the store + the open day          per zone, ONE export of local midnight to now, plus the
                                      stored closed days of each range (`history.plan`)
    a period export                   each range exported whole, from its first day: without
                                      a state, with `history.enabled: false`, or while the
                                      zone lacks more closed days than a cycle fills itself

Closed days a zone lacks, up to `history.max_days_per_cycle`, are exported here one by one and
stored (`put_day`, a transaction each) before anything is evaluated; a dry run exports them and
adds them without storing. Whatever fails (an export, the data, the state) fails the whole
gathering: a cycle never evaluates a period with a day missing.

Exports come from a `fetch.Source`: Langdock's (`fetch.Exports`), or a backtest's held days.
With `workspaces:`, each workspace is gathered as above from its own partition of the store
(`partitions.Partition`) with its own source, and their usage joined, ids "workspace/id"
(`from_workspaces`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from costwatch import history, usage, workspaces
from costwatch.config import HistoryConfig
from costwatch.errors import ExportError, ExportPeriodError, UsageError
from costwatch.fetch import Fetched, Source, day_range
from costwatch.periods import Period
from costwatch.state import StoredDay
from costwatch.state.base import History

__all__ = ["Gathered", "from_exports", "from_store_or_exports", "from_workspaces", "saved_export"]

log = logging.getLogger("costwatch.gather")


@dataclass(frozen=True)
class Gathered:
    """The usage of every export range, what it came from, and what was exported for it."""

    usages: dict[str, usage.Usage]
    source: str  # for people: "today's export (812 rows) + 27 stored days"
    exported_rows: int = 0  # data rows read from Langdock's exports in this cycle
    stored_days: int = 0  # closed days read from the store (the default range's zone)
    today: Mapping[str, pl.DataFrame] = field(default_factory=dict)  # open day's export, by zone


def saved_export(path: Path, ranges: Mapping[str, Period], now: datetime) -> Gathered:
    """`check --csv`: one saved export for every range in use, refused (as a live export is)
    when its period_start/period_end lie outside the period to date at `now` of any of them:
    November's export read on 3 December would forecast December from November's spend."""
    if len(ranges) > 1:
        log.warning("--csv: one saved export stands in for %d different period ranges", len(ranges))
    first = max(period.first_day for period in ranges.values())
    last = min(_last_day_to_date(period, now) for period in ranges.values())
    try:
        loaded = usage.load_csv(path, first_day=first, last_day=max(first, last))
    except ExportPeriodError as error:
        names = " and ".join(sorted({period.name for period in ranges.values()}))
        raise UsageError(
            f"{error}: that is the {names} to date at {now.isoformat()} (--now); "
            "give a --now inside the file's period, or a file of the current one"
        ) from error
    return Gathered(dict.fromkeys(ranges, loaded), f"file {path}")


def _last_day_to_date(period: Period, now: datetime) -> date:
    """The local date of the last instant of [period start, now)."""
    end = min(now, period.end).astimezone(UTC) - timedelta(milliseconds=1)
    return end.astimezone(period.zone).date()


def from_exports(source: Source, ranges: Mapping[str, Period], now: datetime) -> Gathered:
    """Every range exported whole, from its first day to `now`."""
    fetched = {
        key: source.range(period.start, min(now, period.end)) for key, period in ranges.items()
    }
    return Gathered(
        {key: f.usage for key, f in fetched.items()},
        describe(fetched.values()),
        exported_rows=sum(f.rows for f in fetched.values()),
    )


def from_workspaces(
    sources: Mapping[str, Source],
    ranges: Mapping[str, Period],
    now: datetime,
    history: Callable[[str, Source], Gathered] | None = None,
) -> tuple[Gathered, dict[str, ExportError | UsageError]]:
    """Each workspace's usage (by name), their keys qualified (`workspaces.combine`), and the
    workspaces whose export or data failed. `history` gathers one workspace from its own
    partition of the store (`partitions.Partition`, `from_store_or_exports`); without it,
    every range is exported whole. All of them failed: the first one's error is raised, as
    for one workspace. The open day's frames (for the detectors) are joined only when every
    workspace exported its open day: a failed workspace's keys are unknown today, not idle."""
    done: dict[str, Gathered] = {}
    failed: dict[str, ExportError | UsageError] = {}
    for name, source in sources.items():
        try:
            done[name] = (
                from_exports(source, ranges, now) if history is None else history(name, source)
            )
        except (ExportError, UsageError) as error:
            log.error("workspace %s: the export failed: %s", name, error)
            failed[name] = error
    if not done:
        raise next(iter(failed.values()))
    usages = {
        key: workspaces.combine({name: part.usages[key] for name, part in done.items()})
        for key in ranges
    }
    said = [f"{name}: {part.source}" for name, part in done.items()]
    said += [f"{name}: export failed" for name in failed]
    rows = sum(part.exported_rows for part in done.values())
    zones = set.intersection(*(set(part.today) for part in done.values())) if not failed else set()
    today = {
        zone: pl.concat(
            [workspaces.qualify(part.today[zone], name) for name, part in done.items()],
            how="vertical",
        )
        for zone in sorted(zones)
    }
    stored = min(part.stored_days for part in done.values())
    return Gathered(usages, "; ".join(said), rows, stored_days=stored, today=today), failed


def from_store_or_exports(
    source: Source,
    store: History,
    ranges: Mapping[str, Period],
    now: datetime,
    settings: HistoryConfig,
    *,
    default: str,
    write: bool = True,
) -> Gathered:
    """Per zone, the store and the open day's export, or (history incomplete) period exports.
    `write=False` (a dry run): missing days are exported and used, not stored. `default` is
    the range whose zone the source and `stored_days` describe."""
    stored = {
        zone: store.stored_days(zone, first, last)
        for zone, (first, last) in history.needed(ranges, now).items()
    }
    plans = history.plan(ranges, now, stored, settings.max_days_per_cycle)
    usages: dict[str, usage.Usage] = {}
    sources: list[str] = []
    todays: dict[str, pl.DataFrame] = {}
    rows = stored_count = 0
    for plan in plans:
        if plan.whole:
            gathered = from_exports(source, {key: ranges[key] for key in plan.ranges}, now)
            have = plan.stored
            said = f"period export (history incomplete: {have} of {have + len(plan.missing)}"
            said += f" closed days stored): {gathered.source}"
        else:
            known = stored[plan.zone.key]
            gathered = _from_store(
                source, store, ranges, plan, known, now=now, settings=settings, write=write
            )
            said = gathered.source
        usages.update(gathered.usages)
        todays.update(gathered.today)
        rows += gathered.exported_rows
        sources.append(f"{plan.zone.key}: {said}" if len(plans) > 1 else said)
        if default in plan.ranges and not plan.whole:
            stored_count = gathered.stored_days
    return Gathered(
        usages, "; ".join(sources), exported_rows=rows, stored_days=stored_count, today=todays
    )


def _from_store(
    source: Source,
    store: History,
    ranges: Mapping[str, Period],
    plan: history.ZonePlan,
    known: Mapping[date, StoredDay],
    *,
    now: datetime,
    settings: HistoryConfig,
    write: bool,
) -> Gathered:
    """One zone's ranges from its stored days (the missing ones exported and stored first)
    and one export of its open day."""
    zone = plan.zone.key
    filled: dict[date, Fetched] = {}
    for day in plan.missing:
        filled[day] = source.range(*day_range(plan.zone, day))
        if write:
            store.put_day(
                zone,
                day,
                filled[day].usage.frame,
                exported_at=now,
                settled=history.is_settled(day, plan.zone, now, settings.settle_after),
                has_tokens=filled[day].usage.has_tokens,
            )
    today = source.range(plan.since, now)
    exported = [*filled.values(), today]
    rows = sum(f.rows for f in exported)
    columns = [f.usage.model_column for f in (today, *filled.values()) if f.usage.model_column]
    usages = {}
    for key in plan.ranges:
        first = ranges[key].first_day
        frames = []
        if first <= plan.yesterday:
            frames.append(store.usage_between(zone, first, plan.yesterday))
        fresh = [f.usage for day, f in filled.items() if day >= first]
        if not write:  # a dry run: the days it exported are not in the store
            frames += [u.frame for u in fresh]
        frames.append(today.usage.frame)
        tokens = any(s.has_tokens for day, s in known.items() if day >= first)
        usages[key] = usage.Usage(
            frame=history.combine(frames),
            has_tokens=tokens or any(u.has_tokens for u in (today.usage, *fresh)),
            model_column=columns[0] if columns else None,
            rows_read=rows,
        )
    stored_days = plan.stored + (len(plan.missing) if write else 0)
    said = f"today's export ({today.rows:,} rows) + {stored_days} stored day"
    said += "" if stored_days == 1 else "s"
    if filled:
        what = "exported and stored" if write else "exported, not stored (a dry run)"
        said += f" ({len(filled)} closed day{'s' if len(filled) > 1 else ''} {what})"
    return Gathered(
        usages, said, exported_rows=rows, stored_days=stored_days, today={zone: today.usage.frame}
    )


def describe(fetched: Iterable[Fetched]) -> str:
    exported = [f for f in fetched if f.export is not None]
    if not exported:
        return "nothing exported (the period has just begun)"
    rows = sum(f.usage.rows_read for f in exported)
    parts = sum(len(f.export.parts) for f in exported if f.export is not None)
    columns = sorted({f.usage.model_column for f in exported if f.usage.model_column})
    split = f", {parts} parts" if parts > len(exported) else ""
    column = f", model column {columns[0]!r}" if columns else ""
    ranges = f" of {len(exported)} ranges" if len(exported) > 1 else ""
    return f"Langdock export{ranges} ({rows:,} rows{split}{column})"
