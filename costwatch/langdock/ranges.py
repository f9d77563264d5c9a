"""Export ranges as the Usage Export API reads them: local wall-clock dates with a literal "Z".

A `Range` is a half-open local range [start, end) in one zone. The API reads wall-clock time,
which is ambiguous while a DST fall-back repeats an hour (and at a midnight in zones that fall
back at midnight): a range whose `from` or `to` falls in a repeated hour is asked for in UTC
instead, the exact same instants with no second reading, and its days (for the CSV's period
check) are then UTC days. Every other range is asked for in its own zone, as documented. A
range too large to export splits at the local midnight nearest its middle, in real time. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from costwatch.periods import local_midnight

_ONE_MS = timedelta(milliseconds=1)
_UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class Range:
    """A half-open local range [start, end) in one zone."""

    start: datetime
    end: datetime

    @property
    def zone(self) -> ZoneInfo:
        assert isinstance(self.start.tzinfo, ZoneInfo)
        return self.start.tzinfo

    @property
    def last_instant(self) -> datetime:
        """The inclusive end the API expects: one millisecond before `end`, in real time."""
        return (self.end.astimezone(UTC) - _ONE_MS).astimezone(self.zone)

    @property
    def request_zone(self) -> ZoneInfo:
        """The range's zone, or UTC when a bound's wall-clock time there occurs twice."""
        if ambiguous(self.start) or ambiguous(self.last_instant):
            return _UTC_ZONE
        return self.zone

    @property
    def first_day(self) -> date:
        """The first day as the request names it (and the CSV's period_start says)."""
        return self.start.astimezone(self.request_zone).date()

    @property
    def last_day(self) -> date:
        return self.last_instant.astimezone(self.request_zone).date()

    def describe(self) -> str:
        if self.first_day == self.last_day:
            return self.first_day.isoformat()
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()}"

    def request_body(self) -> dict[str, Any]:
        zone = self.request_zone
        return {
            "from": {"date": wall_clock(self.start.astimezone(zone)), "timezone": zone.key},
            "to": {"date": wall_clock(self.last_instant.astimezone(zone)), "timezone": zone.key},
            "group_by": "model",
        }

    def split(self) -> tuple[Range, Range] | None:
        """Both halves around the local midnight nearest the middle; None within one day.

        Real time, not wall-clock arithmetic: days are 23 or 25 hours long across DST.
        """
        start, end = self.start.astimezone(UTC), self.end.astimezone(UTC)
        middle = start + (end - start) / 2
        middle_day = middle.astimezone(self.zone).date()
        candidates = [
            local_midnight(middle_day, self.zone),
            local_midnight(middle_day + timedelta(days=1), self.zone),
        ]
        inside = [c for c in candidates if start < c.astimezone(UTC) < end]
        if not inside:
            return None
        cut = min(inside, key=lambda c: abs((c.astimezone(UTC) - middle).total_seconds()))
        return Range(self.start, cut), Range(cut, self.end)


def ambiguous(moment: datetime) -> bool:
    """Whether `moment`'s local wall-clock time occurs twice in its zone (a DST fall-back).

    A real instant's wall time always exists, so two offsets for it mean two occurrences.
    """
    wall = moment.replace(tzinfo=None)
    zone = moment.tzinfo
    return (
        wall.replace(tzinfo=zone, fold=0).utcoffset()
        != wall.replace(tzinfo=zone, fold=1).utcoffset()
    )


def wall_clock(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.sssZ` holding the local wall-clock time (the Z is literal)."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def checked_range(start: datetime, end: datetime) -> Range:
    zone = start.tzinfo
    if not isinstance(zone, ZoneInfo):
        raise ValueError("start must be an aware datetime whose tzinfo is a zoneinfo.ZoneInfo")
    if end.tzinfo is None:
        raise ValueError("end must be an aware datetime")
    if end.astimezone(UTC) <= start.astimezone(UTC):
        raise ValueError(f"empty export range: end {end.isoformat()} <= start {start.isoformat()}")
    return Range(start.astimezone(zone), end.astimezone(zone))
