"""recent: the days a cycle's forecasts read, from a real SQLite history, and the forecast
made from them through `budgets.evaluate`."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from costwatch import budgets, forecast, recent
from costwatch.config import Config, parse_config
from costwatch.state import SqliteState
from costwatch.usage import SCHEMA

BERLIN = "Europe/Berlin"
NOW = datetime(2026, 12, 10, 11, tzinfo=UTC)  # noon on Thursday 10 December in Berlin
DAY = timedelta(days=1)


def config(extra: str = "") -> Config:
    text = f"""
        langdock: {{api_key: x}}
        schedule: {{timezone: {BERLIN}}}
        budgets:
          - name: monthly
            keys: "*"
            limits: {{cost_usd: 1000}}
            models: {{"gpt-4*": {{cost_usd: 500}}}}
          - {{name: weekly, keys: "*", period: week, limits: {{cost_usd: 300}}}}
        {extra}
    """
    return parse_config(textwrap.dedent(text))


def day_rows(cost: float) -> pl.DataFrame:
    rows = [("id-k", "k", "gpt-4o", 1, cost), ("id-k", "k", "claude", 1, cost / 2)]
    return pl.DataFrame(
        [(*row, None, None, None, None, None) for row in rows], schema=SCHEMA, orient="row"
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    with SqliteState.open(tmp_path / "state.db") as opened:
        yield opened


def put(state: SqliteState, zone: str, first: date, last: date, cost: float = 10.0) -> None:
    day = first
    while day <= last:
        state.put_day(zone, day, day_rows(cost), exported_at=NOW, settled=True)
        day += DAY


def test_a_zone_reads_the_window_of_its_longest_forecast_from_the_store(
    state: SqliteState,
) -> None:
    put(state, BERLIN, date(2026, 11, 1), date(2026, 12, 9))
    state.put_day(BERLIN, date(2026, 12, 8), day_rows(0.0).head(0), exported_at=NOW, settled=True)
    resolved = budgets.rules(config("defaults: {forecast: {window: 21}}"), NOW)
    read = recent.read(state, resolved, NOW)
    ranges = budgets.export_ranges(resolved)
    assert set(read) == set(ranges)  # the week and the month: one zone, one Daily
    (daily,) = {id(d): d for d in read.values()}.values()
    assert daily.days == frozenset(date(2026, 11, 19) + n * DAY for n in range(21))
    assert daily.patterns == ("gpt-4*",)
    by_day = dict(daily.sums.select("day", "cost_usd").iter_rows())
    assert by_day[date(2026, 12, 7)] == 15.0
    assert date(2026, 12, 8) not in by_day  # stored without rows: covered, no use


def test_the_forecast_from_stored_days_through_evaluate(state: SqliteState) -> None:
    # $15 a day ($10 on gpt-4o, $5 on claude) every day: the month projects to 31 x $15 and
    # its gpt-4* part to 31 x $10; 1-9 December and 11 of today's 24 hours are spent.
    put(state, BERLIN, date(2026, 11, 1), date(2026, 12, 9))
    resolved = budgets.rules(config(), NOW)
    read = recent.read(state, resolved, NOW)
    ranges = budgets.export_ranges(resolved)
    spent = 9 + 12 / 24  # days of December in Berlin at 11:00 UTC (12:00 local)
    month = day_rows(15.0 * spent / 1.5)
    frames = {key: month for key in ranges}
    found = budgets.evaluate(resolved, frames, NOW, read).findings
    monthly = found.filter((pl.col("budget") == "monthly") & pl.col("model").is_null())
    assert monthly.get_column("forecast_method").to_list() == ["trailing 14-day rate"]
    assert monthly.get_column("projected").item() == pytest.approx(31 * 15.0)
    glob = found.filter(pl.col("model") == "gpt-4*")
    assert glob.get_column("projected").item() == pytest.approx(31 * 10.0)


def test_no_stored_days_no_reading_and_a_linear_forecast(state: SqliteState) -> None:
    put(state, "UTC", date(2026, 11, 1), date(2026, 12, 9))  # another zone's days
    resolved = budgets.rules(config(), NOW)
    assert recent.read(state, resolved, NOW) == {}
    linear = config("defaults: {forecast: {method: linear}}")
    put(state, BERLIN, date(2026, 11, 1), date(2026, 12, 9))
    assert recent.read(state, budgets.rules(linear, NOW), NOW) == {}


def test_the_days_before_today_only(state: SqliteState) -> None:
    # Today (10 December) and later days are never part of a window, even when stored.
    put(state, BERLIN, date(2026, 12, 1), date(2026, 12, 12))
    daily = next(iter(recent.read(state, budgets.rules(config(), NOW), NOW).values()))
    assert max(daily.days) == date(2026, 12, 9)
    assert forecast.window(daily, budgets.rules(config(), NOW)[0], NOW) == tuple(
        date(2026, 12, 1) + n * DAY for n in range(9)
    )


def test_a_cache_reads_a_stored_day_once_and_again_once_it_is_stored_anew(
    state: SqliteState, tmp_path: Path
) -> None:
    put(state, BERLIN, date(2026, 11, 1), date(2026, 12, 9))
    resolved = budgets.rules(config(), NOW)
    cache = recent.Cache()

    def spend_on(day: date) -> float:
        daily = next(iter(recent.read(state, resolved, NOW, cache).values()))
        return float(daily.sums.filter(pl.col("day") == day).get_column("cost_usd").item())

    assert spend_on(date(2026, 12, 9)) == 15.0
    assert len(cache) == 14  # the window's days, no more
    # The rows change behind the store's back (its record of the day does not): still cached.
    with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        db.execute("UPDATE usage_daily SET cost = cost * 2")
    assert spend_on(date(2026, 12, 9)) == 15.0
    assert (
        recent.read(state, resolved, NOW)[budgets.export_key(resolved[0].period)]
        .sums.get_column("cost_usd")
        .max()
        == 30.0
    )  # without the cache: read again
    # Stored anew (settled, reconciled): read again.
    later = NOW + timedelta(hours=1)
    state.put_day(BERLIN, date(2026, 12, 9), day_rows(4.0), exported_at=later, settled=True)
    assert spend_on(date(2026, 12, 9)) == 6.0
    assert spend_on(date(2026, 12, 8)) == 15.0
    # The next day, the oldest day leaves the window and the cache.
    tomorrow = NOW + DAY
    put(state, BERLIN, date(2026, 12, 10), date(2026, 12, 10))
    recent.read(state, budgets.rules(config(), tomorrow), tomorrow, cache)
    assert len(cache) == 14


def test_the_detectors_frames_read_a_stored_day_once_and_again_once_it_is_stored_anew(
    state: SqliteState, tmp_path: Path
) -> None:
    put(state, BERLIN, date(2026, 11, 20), date(2026, 12, 9))
    frames = recent.Frames()
    span = (date(2026, 11, 12), date(2026, 12, 9))  # a 28-day window, 20 of its days stored

    def read() -> pl.DataFrame:
        return frames.read(state, BERLIN, span, state.stored_days(BERLIN, *span))

    def ordered(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort("day", "model")

    first = read()
    assert ordered(first).equals(ordered(state.usage_by_day(BERLIN, *span)))  # as one read
    assert (first.height, len(frames)) == (40, 20)
    # The rows change behind the store's back (its record of the days does not): still kept.
    with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        db.execute("UPDATE usage_daily SET cost = cost * 2")
    assert ordered(read()).equals(ordered(first))
    # Stored anew (settled, reconciled): that day read again, the others kept.
    later = NOW + timedelta(hours=1)
    state.put_day(BERLIN, date(2026, 12, 9), day_rows(4.0), exported_at=later, settled=True)
    costs = read().group_by("day").agg(pl.col("total_cost_usd").sum())
    by_day = dict(zip(costs["day"], costs["total_cost_usd"], strict=True))
    assert (by_day[date(2026, 12, 9)], by_day[date(2026, 12, 8)]) == (6.0, 15.0)
    # The window moves on: the day that left it is let go.
    moved = (date(2026, 11, 21), date(2026, 12, 9))
    frames.read(state, BERLIN, moved, state.stored_days(BERLIN, *moved))
    assert len(frames) == 19
    # No stored day in the window: the store's empty frame, with its columns.
    empty = (date(2026, 10, 1), date(2026, 10, 28))
    assert frames.read(state, BERLIN, empty, {}).columns == first.columns
