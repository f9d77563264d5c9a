"""The recent stored days a cycle's forecasts are made from, read from the usage history.

    read(store, rules, now) -> {export range key: forecast.Daily}

Per zone in use, the closed days the longest forecast window of that zone's budgets may take
(`forecast.wanted`) that the store holds, read one day at a time and summed per day and key at
once (`forecast.daily`): a 14-day window of a 1,000,000-row-a-day workspace holds one day's
rows at a time, never fourteen. A range whose zone has no such days gets none, and its
forecasts are linear. Every range of one zone shares one `Daily` (a window is the days before
today, whatever the period). Reads through the `History` interface only, so any store serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from costwatch import budgets, forecast
from costwatch.budgets import Rule
from costwatch.state.base import History

__all__ = ["read"]


def read(store: History, rules: Sequence[Rule], now: datetime) -> dict[str, forecast.Daily]:
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
    by_zone = {zone: _days(store, zone, *span, patterns[zone]) for zone, span in spans.items()}
    out: dict[str, forecast.Daily] = {}
    for rule in rules:
        daily = by_zone.get(rule.period.zone.key)
        if daily is not None and daily.days:
            out[budgets.export_key(rule.period)] = daily
    return out


def _days(
    store: History, zone: str, first: date, last: date, patterns: Sequence[str]
) -> forecast.Daily:
    stored = store.stored_days(zone, first, last)
    parts = [
        forecast.daily(store.usage_by_day(zone, day, day), [day], patterns)
        if known.rows
        else forecast.daily(forecast.EMPTY_DAYS, [day], patterns)  # a day without use
        for day, known in sorted(stored.items())
    ]
    return forecast.combine(parts, patterns)
