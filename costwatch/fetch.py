"""Exporting a range of time and loading it: the one way a cycle, the keeper of the history and
backfill get usage from Langdock.

    fetch_range(client, start, end)  [start, end) exported and loaded as one `Usage`
    fetch_usage(client, period, now) a period to date: [period start, min(now, period end))
    fetch_day(client, zone, day)     one whole local day: [its midnight, the next midnight)
    Exports(client)                  those as a `Source`: what a cycle gathers its usage from

A `Source` is where a cycle's usage over a range comes from: Langdock's export (`Exports`), or
a backtest's days held in its scratch store (`backtest.HeldDays`), so that one gathering and one
cycle serve the daemon and the replay alike.

The export client splits a range too large for one export and treats 404 as zero usage; the
loader checks every part against the days asked for (no file of another period is taken for
this one) and refuses what is malformed. The CSV parts live in a temporary folder that is gone
when the function returns, whatever happens. A failure is an `ExportError` or a `UsageError`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from costwatch import usage
from costwatch.periods import Period, local_midnight

if TYPE_CHECKING:  # httpx loads only where an export is made (`check --csv` needs none)
    from costwatch.langdock import ExportResult, LangdockClient

__all__ = ["Exports", "Fetched", "Source", "day_range", "fetch_day", "fetch_range", "fetch_usage"]

log = logging.getLogger("costwatch.fetch")


@dataclass(frozen=True)
class Fetched:
    """Usage over a range, and how it was obtained."""

    usage: usage.Usage
    export: ExportResult | None  # None when the range was empty and nothing was asked

    @property
    def rows(self) -> int:
        """Data rows read from the export's parts."""
        return self.usage.rows_read


def fetch_range(client: LangdockClient, start: datetime, end: datetime) -> Fetched:
    """Export [start, end) in `start`'s zone and load it (404 parts = zero usage). An empty
    range is zero usage without asking."""
    end = end.astimezone(start.tzinfo)
    if end.astimezone(UTC) <= start.astimezone(UTC):  # in one zone, < ignores the fold
        log.debug("%s to %s is empty; nothing to export", start.isoformat(), end.isoformat())
        return Fetched(usage=usage.load([]), export=None)
    with tempfile.TemporaryDirectory(prefix="costwatch-export-") as workdir:
        result = client.export_api_keys(start, end, Path(workdir))
        files = [
            usage.ExportFile(
                part.path,
                first_day=part.first_day,
                last_day=part.last_day,
                record_count=part.record_count,
                shape=part.shape,
            )
            for part in result.parts
            if part.path is not None
        ]
        loaded = usage.load(files)
    log.debug(
        "exported %s to %s: %d part(s), %d row(s), %d API call(s)",
        start.isoformat(),
        end.isoformat(),
        len(result.parts),
        loaded.rows_read,
        result.api_calls,
    )
    return Fetched(usage=loaded, export=result)


def fetch_usage(client: LangdockClient, period: Period, now: datetime) -> Fetched:
    """Export [period start, now) in the period's zone and load it (404 parts = zero usage)."""
    return fetch_range(client, period.start, min(now, period.end))


def fetch_day(client: LangdockClient, zone: ZoneInfo, day: date) -> Fetched:
    """Export the local day `day` of `zone` whole, midnight to midnight (23 or 25 hours across
    a DST change), and load it."""
    return fetch_range(client, *day_range(zone, day))


def day_range(zone: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    """The local day `day` of `zone` as [its midnight, the next midnight)."""
    return local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)


class Source(Protocol):
    """Usage over [start, end) (aware instants; a range in `start`'s zone), as `fetch_range`
    gives it. Raises `ExportError` or `UsageError` when it cannot."""

    def range(self, start: datetime, end: datetime) -> Fetched: ...


@dataclass(frozen=True)
class Exports:
    """Langdock's export through `client`, as a `Source` (a cycle's, the daemon's)."""

    client: LangdockClient

    def range(self, start: datetime, end: datetime) -> Fetched:
        return fetch_range(self.client, start, end)
