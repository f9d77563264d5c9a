"""Time specifications in the configuration: durations ("15m", "1h30m") and crontab lines.

Both parsers raise `ValueError` with a short plain message; one that names the offending piece
of the value is a `Refusal`, which never formats the piece itself: `costwatch.config` renders
it (quoted, or as the `${NAME}` it came from) in a `ConfigProblem` with a path.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> format_duration(parse_duration(5400))
    '1h30m'
    >>> normalize_cron("*/15  * * * 1-5")
    '*/15 * * * mon,tue,wed,thu,fri'
"""

from __future__ import annotations

import re
from datetime import timedelta

from costwatch.quote import Refusal

__all__ = ["format_duration", "normalize_cron", "parse_duration"]

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_HINT = "must be a duration like '90s', '15m', '24h', '7d' or '1h30m'"
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(value: object) -> timedelta:
    """A positive duration from "90s", "15m", "24h", "7d", "1h30m" or a whole number of seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        seconds = _duration_seconds(value.strip())
    else:
        raise ValueError(_DURATION_HINT)
    if seconds <= 0:
        raise ValueError("must be a duration greater than 0")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("is too long a duration") from None


def _duration_seconds(text: str) -> int:
    if len(text) > 40:
        raise ValueError("is too long a duration")
    if text.isdigit():
        return int(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(_DURATION_HINT)
    parts = (int(group or 0) for group in match.groups())
    return sum(part * unit for part, (_, unit) in zip(parts, _UNITS, strict=True))


def format_duration(value: timedelta) -> str:
    """The shortest "1d2h30m" form of a duration (whole seconds)."""
    remaining = int(value.total_seconds())
    parts = []
    for suffix, unit in _UNITS:
        count, remaining = divmod(remaining, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts) or "0s"


# --- crontab -------------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (index 0 is the value `lowest`)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?")


def normalize_cron(expr: str) -> str:
    """Check a 5-field crontab line and return it with single spaces and named weekdays.

    The day-of-week field is rewritten to names ("1-5" becomes "mon,tue,wed,thu,fri"):
    APScheduler 3 reads weekday *numbers* with 0 as Monday, crontab with 0 as Sunday, while
    both read names the same way.
    """
    fields = expr.split()
    if len(expr) > 200:
        raise ValueError("is too long for a crontab line")
    if len(fields) != 5:
        raise ValueError(
            f"must have 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}"
        )
    values = [_field_values(text, spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    if fields[4] != "*":
        fields[4] = ",".join(_DAYS[day] for day in sorted({day % 7 for day in values[4]}))
    return " ".join(fields)


def _field_values(text: str, spec: tuple[str, int, int, tuple[str, ...]]) -> set[int]:
    name, low, high, _ = spec
    values: set[int] = set()
    for item in text.lower().split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise Refusal(f"{name} field {{}} is not a crontab field", text)
        if match["range"] == "*":
            start, stop = low, high
        else:
            first, _, last = match["range"].partition("-")
            start = _field_number(first, spec)
            stop = _field_number(last, spec) if last else start
        step = int(match["step"] or 1)
        if step == 0 or stop < start:
            raise Refusal(f"{name} field {{}} has an empty range or a zero step", text)
        if match["step"] and match["range"] != "*" and "-" not in match["range"]:
            stop = high  # "5/15" means from 5 to the end, every 15
        values.update(range(start, stop + 1, step))
    return values


def _field_number(text: str, spec: tuple[str, int, int, tuple[str, ...]]) -> int:
    name, low, high, names = spec
    if text in names:
        return low + names.index(text)
    if not text.isdigit() or not low <= int(text) <= high:
        raise Refusal(f"{name} field value {{}} is not in {low}-{high}", text)
    return int(text)
