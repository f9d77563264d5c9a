"""The replay's parts on their own: the points replayed (every, cron, hourly; across DST), the
days it reads, and the held days as a source: whole days as stored, the open day pro rata."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from histories import frame

from costwatch import backtest
from costwatch.config import Config, parse_config
from costwatch.errors import UsageError
from costwatch.periods import local_midnight
from costwatch.state import SqliteState
from costwatch.usage.model import SCHEMA

BERLIN = ZoneInfo("Europe/Berlin")


def config(schedule: str, extra: str = "", budgets: str = "") -> Config:
    """A configuration with a monthly budget (and `budgets`), then the sections `extra`."""
    text = f"""\
langdock: {{api_key: k, base_url: "https://api.langdock.example"}}
schedule: {schedule}
budgets:
  - name: month
    keys: "*"
    limits: {{cost_usd: 100}}
{budgets}
{extra}
"""
    return parse_config(text)


def local(points: list[datetime]) -> list[str]:
    return [f"{p.astimezone(BERLIN):%m-%d %H:%M}" for p in points]


def test_day_end_is_each_days_last_cycle_of_an_every_schedule() -> None:
    schedule = config("{timezone: Europe/Berlin, every: 15m}").schedule
    points = backtest.points(schedule, date(2026, 11, 2), date(2026, 11, 4), "day-end")
    assert local(points) == ["11-02 23:45", "11-03 23:45", "11-04 23:45"]


def test_cycles_of_a_cron_line_are_its_fire_times_and_day_end_the_last_of_each_day() -> None:
    schedule = config('{timezone: Europe/Berlin, cron: "0 9,17 * * mon-fri"}').schedule
    first, last = date(2026, 11, 6), date(2026, 11, 9)  # Friday to Monday
    cycles = backtest.points(schedule, first, last, "cycles")
    assert local(cycles) == ["11-06 09:00", "11-06 17:00", "11-09 09:00", "11-09 17:00"]
    assert local(backtest.points(schedule, first, last, "day-end")) == [
        "11-06 17:00",
        "11-09 17:00",
    ]


def test_hourly_points_follow_the_clock_across_the_dst_fall_back() -> None:
    schedule = config("{timezone: Europe/Berlin}").schedule
    points = backtest.points(schedule, date(2026, 10, 25), date(2026, 10, 25), "hourly")
    assert len(points) == 25  # the day of the fall-back has 25 hours
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(points))
    assert points[0] == local_midnight(date(2026, 10, 25), BERLIN)


def test_the_days_read_reach_back_to_the_periods_and_the_windows_and_up_to_the_last_day() -> None:
    quarter = config(
        "{timezone: Europe/Berlin, every: 1h}",
        "anomalies: {enabled: false}\nunit_cost: {enabled: false}",
        '  - {name: quarter, keys: "*", period: quarter, limits: {cost_usd: 100}}',
    )
    points = backtest.points(quarter.schedule, date(2026, 11, 20), date(2026, 11, 30), "day-end")
    assert backtest.needed(quarter, points) == {
        "Europe/Berlin": (date(2026, 10, 1), date(2026, 11, 30))
    }
    month = config(
        "{timezone: Europe/Berlin, every: 1h}",
        "defaults: {forecast: {window: 30}}\nanomalies: {window_days: 40}",
    )
    # the detectors read 40 days before the first point, the forecasts 30
    assert backtest.needed(month, points) == {
        "Europe/Berlin": (date(2026, 10, 11), date(2026, 11, 30))
    }


@pytest.fixture
def held(tmp_path: Path) -> Iterator[SqliteState]:
    with SqliteState.open(tmp_path / "scratch.db") as store:
        for day, cost, requests in ((date(2026, 11, 1), 10.0, 100), (date(2026, 11, 2), 24.0, 48)):
            rows = frame([(day, "alpha", "gpt-4o", cost, requests)]).drop("day")
            store.put_day(BERLIN.key, day, rows, exported_at=datetime.now(UTC), settled=True)
        yield store


def used(store: SqliteState, start: datetime, end: datetime) -> tuple[float, int]:
    got = backtest.HeldDays(store).range(start, end).usage.frame
    assert got.schema == SCHEMA
    return float(got["total_cost_usd"].sum()), int(got["requests"].sum())


def test_held_days_are_whole_days_as_stored_and_the_open_day_pro_rata(
    held: SqliteState,
) -> None:
    first = local_midnight(date(2026, 11, 1), BERLIN)
    second = local_midnight(date(2026, 11, 2), BERLIN)
    assert used(held, first, second) == (10.0, 100)
    assert used(held, first, second + timedelta(hours=18)) == (10.0 + 18.0, 100 + 36)
    assert used(held, second + timedelta(hours=6), second + timedelta(hours=12)) == (6.0, 12)
    cost, requests = used(held, second + timedelta(hours=1), second + timedelta(minutes=80))
    assert cost == pytest.approx(24 / 72)
    assert requests == 0  # requests are whole: a third of two rounds down
    empty = backtest.HeldDays(held).range(second, second).usage.frame
    assert empty.is_empty()


def test_a_day_the_store_lacks_is_an_error_never_zero(held: SqliteState) -> None:
    start = local_midnight(date(2026, 11, 2), BERLIN)
    with pytest.raises(UsageError, match=r"no usage for 2026-11-03 \(Europe/Berlin\)"):
        backtest.HeldDays(held).range(start, start + timedelta(days=1, hours=3))


def test_the_share_of_a_day_counts_its_real_length_across_dst() -> None:
    noon = datetime(2026, 10, 25, 12, tzinfo=BERLIN)  # 13 hours after midnight, of 25
    assert backtest.share_of_day(noon, BERLIN) == (date(2026, 10, 25), 13 / 25)
