"""Period bounds in several zones, across both DST transitions, as plain tables of datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwatch import periods
from costwatch.periods import PERIOD_NAMES, PeriodName

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")  # skips local midnight at its DST start
TOKYO = ZoneInfo("Asia/Tokyo")
UTC_ZONE = ZoneInfo("UTC")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "zone", "now", "start", "end"),
    [
        # A month in Berlin begins at local midnight, 23:00 UTC the day before in winter.
        ("month", BERLIN, utc(2026, 11, 25, 9), utc(2026, 10, 31, 23), utc(2026, 11, 30, 23)),
        # 30 minutes before local midnight of Dec 1 is still November in Berlin.
        ("month", BERLIN, utc(2026, 11, 30, 22, 30), utc(2026, 10, 31, 23), utc(2026, 11, 30, 23)),
        # ... and 30 minutes after it is December, though UTC still says November.
        ("month", BERLIN, utc(2026, 11, 30, 23, 30), utc(2026, 11, 30, 23), utc(2026, 12, 31, 23)),
        # October 2026 in Berlin spans the end of summer time: 31 days minus nothing, plus 1 h.
        ("month", BERLIN, utc(2026, 10, 10), utc(2026, 9, 30, 22), utc(2026, 10, 31, 23)),
        # March 2026 in Berlin spans the start of summer time.
        ("month", BERLIN, utc(2026, 3, 15), utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),
        ("day", BERLIN, utc(2026, 3, 29, 12), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
        ("day", BERLIN, utc(2026, 10, 25, 12), utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)),
        ("day", NEW_YORK, utc(2026, 3, 8, 12), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        ("day", NEW_YORK, utc(2026, 11, 1, 12), utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
        # ISO weeks start on Monday; 2026-11-25 is a Wednesday.
        (
            "week",
            UTC_ZONE,
            utc(2026, 11, 25, 9),
            utc(2026, 11, 23),
            utc(2026, 11, 30),
        ),
        # A week across New Year.
        ("week", UTC_ZONE, utc(2027, 1, 1), utc(2026, 12, 28), utc(2027, 1, 4)),
        # A Sunday evening in Tokyo is already Monday there.
        ("week", TOKYO, utc(2026, 11, 29, 16), utc(2026, 11, 29, 15), utc(2026, 12, 6, 15)),
        ("quarter", BERLIN, utc(2026, 11, 25), utc(2026, 9, 30, 22), utc(2026, 12, 31, 23)),
        ("quarter", UTC_ZONE, utc(2026, 1, 1), utc(2026, 1, 1), utc(2026, 4, 1)),
        ("quarter", UTC_ZONE, utc(2026, 6, 30, 23, 59), utc(2026, 4, 1), utc(2026, 7, 1)),
        # Santiago's clocks jump from 00:00 to 01:00 on 2026-09-06: that day starts at 01:00.
        ("day", SANTIAGO, utc(2026, 9, 6, 12), utc(2026, 9, 6, 4), utc(2026, 9, 7, 3)),
    ],
)
def test_period_bounds_are_local_midnights_in_real_time(
    name: PeriodName, zone: ZoneInfo, now: datetime, start: datetime, end: datetime
) -> None:
    period = periods.current(name, zone, now)
    assert period.start == start
    assert period.end == end
    assert period.start.tzinfo is zone
    assert period.contains(now)


def test_day_lengths_follow_dst_in_berlin() -> None:
    spring = periods.current("day", BERLIN, utc(2026, 3, 29, 12))
    autumn = periods.current("day", BERLIN, utc(2026, 10, 25, 12))
    assert spring.length == timedelta(hours=23)
    assert autumn.length == timedelta(hours=25)


def test_elapsed_fraction_uses_real_time_across_dst() -> None:
    # Berlin, 2026-10-25 is 25 h long; at 12:00 UTC 13 real hours (not 13 wall hours) have passed.
    day = periods.current("day", BERLIN, utc(2026, 10, 25, 12))
    assert day.elapsed(utc(2026, 10, 25, 12)) == timedelta(hours=14)
    assert day.elapsed_fraction(utc(2026, 10, 25, 12)) == pytest.approx(14 / 25)


def test_elapsed_is_clamped_to_the_period() -> None:
    month = periods.current("month", BERLIN, utc(2026, 11, 10))
    assert month.elapsed_fraction(utc(2026, 10, 1)) == 0.0
    assert month.elapsed_fraction(utc(2027, 1, 1)) == 1.0
    assert month.remaining(utc(2026, 11, 30, 23)) == timedelta(0)


def test_first_and_last_day_are_local_dates() -> None:
    month = periods.current("month", BERLIN, utc(2026, 11, 25))
    assert (month.first_day.isoformat(), month.last_day.isoformat()) == ("2026-11-01", "2026-11-30")


def test_next_and_previous_are_adjacent() -> None:
    month = periods.current("month", BERLIN, utc(2026, 12, 15))
    assert month.next().start == month.end
    assert month.previous().end == month.start
    assert month.next().first_day.isoformat() == "2027-01-01"
    assert month.previous().first_day.isoformat() == "2026-11-01"


def test_period_key_names_kind_day_and_zone() -> None:
    assert (
        periods.current("week", BERLIN, utc(2026, 11, 25)).key() == "week:2026-11-23@Europe/Berlin"
    )


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        periods.current("day", BERLIN, datetime(2026, 11, 25))  # noqa: DTZ001 (the point of the test)


ZONES = st.sampled_from(
    [
        ZoneInfo(z)
        for z in (
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "America/Santiago",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Pacific/Apia",
        )
    ]
)
# hypothesis takes naive bounds and attaches the zone itself.
INSTANTS = st.datetimes(
    min_value=datetime(2020, 1, 1),  # noqa: DTZ001
    max_value=datetime(2035, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(name=st.sampled_from(PERIOD_NAMES), zone=ZONES, now=INSTANTS)
def test_every_instant_lies_in_exactly_one_period_that_tiles_time(
    name: PeriodName, zone: ZoneInfo, now: datetime
) -> None:
    period = periods.current(name, zone, now)
    assert period.contains(now)
    assert period.start < period.end
    assert period.next().start == period.end
    assert period.previous().end == period.start
    assert 0.0 <= period.elapsed_fraction(now) < 1.0
    # Boundaries are local dates: the local start is the first day, the day before end the last.
    assert period.start.astimezone(zone).date() == period.first_day
    assert period.first_day <= now.astimezone(zone).date() <= period.last_day


@given(name=st.sampled_from(PERIOD_NAMES), zone=ZONES, now=INSTANTS)
def test_a_period_key_names_exactly_that_period(
    name: PeriodName, zone: ZoneInfo, now: datetime
) -> None:
    period = periods.current(name, zone, now)
    assert periods.from_key(period.key()) == period


@pytest.mark.parametrize(
    "key",
    [
        "",
        "month",
        "month:2026-11-01",
        "year:2026-01-01@UTC",
        "day:x@UTC",
        "day:2026-01-01@Nowhere/City",
    ],
)
def test_a_bad_period_key_is_a_value_error(key: str) -> None:
    with pytest.raises(ValueError, match="not a period key"):
        periods.from_key(key)
