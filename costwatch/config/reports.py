"""The `reports` section: spend reports the daemon posts to Slack once per period.

    reports:
      - {name: weekly, every: week, channel: "#ai-spend", top: 10, at: "Mon 09:00"}
      - {name: monthly, every: month, at: "09:00"}

Each report covers the last whole period of `every` (a week is Monday to Sunday, a month its
calendar month, in `timezone`, else the schedule's) and is due at the first local `at` at or
after the period's end: "09:00" the morning after, "Mon 09:00" the first Monday at 09:00 (a
monthly report on the Monday after the month). The daemon sends it once its days are stored;
`costwatch report` prints the same report on demand.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from costwatch.config.budget import Period
from costwatch.config.types import Channel, Mention, Model, Text, ZoneName, number

__all__ = ["WEEKDAYS", "ReportConfig", "parse_at"]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_TOP = 50  # keys and models a report lists at most (a Slack message has 50 blocks)
_AT = re.compile(r"(?:(?P<weekday>[A-Za-z]+)\s+)?(?P<hour>\d{1,2}):(?P<minute>\d{2})")


def parse_at(text: str) -> tuple[int | None, int, int]:
    """ "Mon 09:00" -> (0, 9, 0); "09:00" -> (None, 9, 0): the weekday (0 = Monday), hour and
    minute. ValueError naming what is wrong."""
    match = _AT.fullmatch(text.strip())
    if match is None:
        raise ValueError('must be a local time like "09:00" or "Mon 09:00"')
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise ValueError(f"{hour:02d}:{minute:02d} is not a time of day (00:00 to 23:59)")
    weekday = match["weekday"]
    if weekday is None:
        return None, hour, minute
    named = [
        i for i, day in enumerate(WEEKDAYS) if len(weekday) >= 3 and day.startswith(weekday.lower())
    ]
    if not named:
        days = ", ".join(day[:3].title() for day in WEEKDAYS)
        raise ValueError(f"unknown weekday: give one of {days} (or the whole name)")
    return named[0], hour, minute


def _check_at(text: str) -> str:
    parse_at(text)
    return text.strip()


At = Annotated[
    str,
    AfterValidator(_check_at),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*([A-Za-z]+\s+)?\d{1,2}:\d{2}\s*$",
            "description": 'when it is due after its period ends: "09:00" or "Mon 09:00"',
        }
    ),
]
Top = Annotated[int, BeforeValidator(number), Field(ge=1, le=MAX_TOP)]


class ReportConfig(Model):
    """One scheduled report: its period, when it is due, where it goes, how much it lists."""

    name: Text
    every: Period
    at: At = "09:00"
    channel: Channel | None = None  # None: slack.channel
    top: Top = 10  # keys and models listed
    timezone: ZoneName | None = None  # None: schedule.timezone
    mention: tuple[Mention, ...] = ()

    def effective_zone(self, default: str) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone or default)

    @property
    def due(self) -> tuple[int | None, int, int]:
        """`at` as (weekday or None, hour, minute)."""
        return parse_at(self.at)
