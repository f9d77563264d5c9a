"""Budget periods: the calendar day, ISO week, month or quarter that contains `now`.

Bounds are computed as local wall-clock midnights in an IANA zone and are exact across DST
changes: a day in Europe/Berlin is 23 or 25 hours long twice a year, and where a zone skips
midnight itself (clocks jump from 00:00 to 01:00) the period starts at the first instant that
exists. All durations are measured in real elapsed time (UTC), never by subtracting wall clocks.

Pure: `now` is always an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

PeriodName = Literal["day", "week", "month", "quarter"]
PERIOD_NAMES: tuple[PeriodName, ...] = get_args(PeriodName)

# How a period reads in a sentence: "month to date", "its monthly budget".
ADJECTIVES: dict[PeriodName, str] = {
    "day": "daily",
    "week": "weekly",
    "month": "monthly",
    "quarter": "quarterly",
}


@dataclass(frozen=True)
class Period:
    """The half-open interval [start, end) of one period, as aware datetimes in `zone`."""

    name: PeriodName
    start: datetime
    end: datetime

    @property
    def zone(self) -> ZoneInfo:
        tz = self.start.tzinfo
        assert isinstance(tz, ZoneInfo)
        return tz

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        """The last local date inside the period: the date of its last instant (not the day
        before `end`, which a zone that skips a day, like Pacific/Apia on 2011-12-30, lacks)."""
        return (_utc(self.end) - timedelta(microseconds=1)).astimezone(self.zone).date()

    @property
    def length(self) -> timedelta:
        return _utc(self.end) - _utc(self.start)

    def contains(self, now: datetime) -> bool:
        return _utc(self.start) <= _utc(now) < _utc(self.end)

    def elapsed(self, now: datetime) -> timedelta:
        """Real time elapsed since the start, clamped to [0, length]."""
        elapsed = _utc(now) - _utc(self.start)
        return max(timedelta(0), min(elapsed, self.length))

    def elapsed_fraction(self, now: datetime) -> float:
        """How much of the period has passed at `now`, from 0.0 to 1.0."""
        return self.elapsed(now) / self.length

    def remaining(self, now: datetime) -> timedelta:
        return self.length - self.elapsed(now)

    def next(self) -> Period:
        return current(self.name, self.zone, self.end)

    def previous(self) -> Period:
        return current(self.name, self.zone, _utc(self.start) - timedelta(microseconds=1))

    def key(self) -> str:
        """A stable identifier for this period, e.g. "month:2026-11-01@Europe/Berlin"."""
        return f"{self.name}:{self.first_day.isoformat()}@{self.zone.key}"


def current(name: PeriodName, zone: ZoneInfo, now: datetime) -> Period:
    """The period of kind `name` in `zone` that contains the instant `now` (which must be aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    today = now.astimezone(zone).date()
    first, after = _day_bounds(name, today)
    return Period(name=name, start=local_midnight(first, zone), end=local_midnight(after, zone))


def from_key(key: str) -> Period:
    """The period a `Period.key()` names, e.g. "month:2026-11-01@Europe/Berlin"."""
    try:
        name, rest = key.split(":", 1)
        first, zone_name = rest.split("@", 1)
        if name not in PERIOD_NAMES:
            raise ValueError(name)
        zone = ZoneInfo(zone_name)
        return current(name, zone, local_midnight(date.fromisoformat(first), zone))
    except (ValueError, KeyError) as error:
        raise ValueError(f"not a period key: {key!r}") from error


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of `day` in `zone`, normalised through UTC.

    A midnight that does not exist (a DST gap at 00:00) resolves to the end of the gap, which
    is when the day really begins.
    """
    naive = datetime(day.year, day.month, day.day, tzinfo=zone)
    return naive.astimezone(UTC).astimezone(zone)


def _day_bounds(name: PeriodName, today: date) -> tuple[date, date]:
    """The first day of the period containing `today`, and the first day after it."""
    if name == "day":
        return today, today + timedelta(days=1)
    if name == "week":
        monday = today - timedelta(days=today.weekday())
        return monday, monday + timedelta(days=7)
    if name == "month":
        first = today.replace(day=1)
        return first, _add_months(first, 1)
    first_month = 3 * ((today.month - 1) // 3) + 1
    first = date(today.year, first_month, 1)
    return first, _add_months(first, 3)


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.month - 1 + months
    return date(first_of_month.year + index // 12, index % 12 + 1, 1)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
