"""What a Retry-After header asks for, in seconds: delta-seconds or an HTTP-date. Pure but for
the default reference time, which a caller hands in where it matters (`now`).

Read by the export client (`costwatch.langdock`) and by Slack delivery (`costwatch.slack`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["parse_retry_after", "retry_after_seconds"]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad.

    `now` is the reference for an HTTP-date (the response's own Date header is the best one);
    the current time when not given. A date in the past means "now": 0 seconds.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _seconds_until(http_date: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    return max((when - reference).total_seconds(), 0.0)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After from response headers, an HTTP-date measured against the response's Date."""
    server_now: datetime | None = None
    if "Date" in headers:
        try:
            server_now = parsedate_to_datetime(headers["Date"])
        except (TypeError, ValueError, IndexError):
            server_now = None
    return parse_retry_after(headers.get("Retry-After"), now=server_now)
