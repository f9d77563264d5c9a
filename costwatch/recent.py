"""The recent stored days a cycle's forecasts are made from, read from the usage history.

    read(store, rules, now, cache) -> {export range key: forecast.Daily}

Per zone in use, the closed days the longest forecast window of that zone's budgets may take
(`forecast.wanted`) that the store holds, read one day at a time and summed per day and key at
once (`forecast.daily`): a 14-day window of a 1,000,000-row-a-day workspace holds one day's
rows at a time, never fourteen. A range whose zone has no such days gets none, and its
forecasts are linear. Every range of one zone shares one `Daily` (a window is the days before
today, whatever the period). Reads through the `History` interface only, so any store serves.
With a `Cache` (the daemon keeps one), a steady cycle reads only the days stored since the last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

import polars as pl

from costwatch import budgets, forecast
from costwatch.budgets import Rule
from costwatch.state.base import History, StoredDay

__all__ = ["Cache", "Frames", "read"]


class Cache:
    """Stored days already read, kept between the cycles of one process (the daemon's): the
    forecasts' per-day sums and the detectors' day frames (`frames`). A closed day is read from
    the store once, and again only when it was stored anew (its `exported_at` or row count
    changed: settled, reconciled) or the model globs in use changed. Only the days of the
    latest windows are kept."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, date], tuple[StoredDay, tuple[str, ...], forecast.Daily]] = {}
        self.frames = Frames()

    def get(self, stored: StoredDay, patterns: tuple[str, ...]) -> forecast.Daily | None:
        kept = self._days.get((stored.zone, stored.day))
        if kept is None or kept[0] != stored or kept[1] != patterns:
            return None
        return kept[2]

    def put(self, stored: StoredDay, patterns: tuple[str, ...], daily: forecast.Daily) -> None:
        self._days[stored.zone, stored.day] = (stored, patterns, daily)

    def keep_only(self, wanted: set[tuple[str, date]]) -> None:
        for key in set(self._days) - wanted:
            del self._days[key]

    def __len__(self) -> int:
        return len(self._days)


def read(
    store: History, rules: Sequence[Rule], now: datetime, cache: Cache | None = None
) -> dict[str, forecast.Daily]:
    """The stored days each export range's forecasts may read at `now`, by range key."""
    spans: dict[str, tuple[date, date]] = {}
    patterns: dict[str, list[str]] = {}
    for rule in rules:
        zone = rule.period.zone.key
        patterns.setdefault(zone, []).extend(rule.budget.models)
        span = forecast.wanted(rule.forecast, rule.period.zone, now)
        if span is not None:
            known = spans.get(zone, span)
            spans[zone] = (min(known[0], span[0]), max(known[1], span[1]))
    cache = cache if cache is not None else Cache()
    by_zone = {
        zone: _days(store, zone, span, tuple(dict.fromkeys(patterns[zone])), cache)
        for zone, span in spans.items()
    }
    cache.keep_only({(zone, day) for zone, daily in by_zone.items() for day in daily.days})
    out: dict[str, forecast.Daily] = {}
    for rule in rules:
        daily = by_zone.get(rule.period.zone.key)
        if daily is not None and daily.days:
            out[budgets.export_key(rule.period)] = daily
    return out


def _days(
    store: History, zone: str, span: tuple[date, date], patterns: tuple[str, ...], cache: Cache
) -> forecast.Daily:
    parts = []
    for day, stored in sorted(store.stored_days(zone, *span).items()):
        part = cache.get(stored, patterns)
        if part is None:
            rows = store.usage_by_day(zone, day, day) if stored.rows else forecast.EMPTY_DAYS
            part = forecast.daily(rows, [day], patterns)  # a day without rows: not read
            cache.put(stored, patterns, part)
        parts.append(part)
    return forecast.combine(parts, patterns)


class Frames:
    """The detectors' closed days as the store gave them (`usage_by_day` of one day), kept
    while their `StoredDay` stays the same: a steady cycle reads only the days stored anew."""

    def __init__(self) -> None:
        self._frames: dict[tuple[str, date], tuple[StoredDay, pl.DataFrame]] = {}

    def read(
        self, store: History, zone: str, span: tuple[date, date], days: Mapping[date, StoredDay]
    ) -> pl.DataFrame:
        """The usage of `days` (the stored days of `zone` in `span`), one frame with `day`:
        what `store.usage_by_day(zone, *span)` gives, read a day at a time."""
        if not days:
            return store.usage_by_day(zone, *span)
        parts = []
        for day, stored in sorted(days.items()):
            kept = self._frames.get((zone, day))
            if kept is None or kept[0] != stored:
                kept = (stored, store.usage_by_day(zone, day, day))
                self._frames[zone, day] = kept
            parts.append(kept[1])
        for key in [key for key in self._frames if key[0] == zone and key[1] not in days]:
            del self._frames[key]
        return pl.concat(parts, how="vertical_relaxed")

    def __len__(self) -> int:
        return len(self._frames)
