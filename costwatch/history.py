"""Which days a cycle needs, and where each comes from: the store, an export of the open day, or
an export of the whole period. Pure: the export ranges, `now`, the stored days and the settings
in; the plan out.

A period to date is the sum of its closed days (local days of its zone before today) and the
open day (local midnight today to now). Ranges are grouped by zone: per zone, ONE export of the
open day serves every range of that zone, a day, a week, a month and a quarter alike, and each
range adds the stored days from its first day to yesterday.

- Every closed day the zone's ranges need is stored: the cycle exports the open day only.
- Up to `history.max_days_per_cycle` of them are missing (a day that has just closed, a short
  downtime): the cycle exports each of those days whole, stores it, and goes on as above.
- More are missing (first start, a long downtime): the zone's ranges are exported whole, as
  they were before the history existed, and the keeper of the history fills the days in
  (`keeping.py`); evaluation never waits for it, and never uses a period with a gap.

A day is stored settled when its export began at or after its settle time (its end, the next
local midnight, plus `history.settle_after`): usage can arrive late, and a day exported before
that is exported again by the keeper.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from costwatch.periods import Period, local_midnight
from costwatch.usage.model import COLUMNS, SCHEMA, TOKEN_COLUMNS

__all__ = ["ZonePlan", "closed_days", "combine", "is_settled", "needed", "plan"]

_NAME = "__name__"


@dataclass(frozen=True)
class ZonePlan:
    """What one zone's ranges need at `now`, and where it comes from."""

    zone: ZoneInfo
    today: date  # the open day, local
    ranges: tuple[str, ...]  # the export ranges of this zone (`budgets.export_key`)
    first: date  # the earliest first day among them
    missing: tuple[date, ...]  # closed days in [first, today) that are not stored
    whole: bool  # too many missing: the ranges are exported whole, not from the store

    @property
    def since(self) -> datetime:
        """Where the open day's export starts: local midnight today."""
        return local_midnight(self.today, self.zone)

    @property
    def yesterday(self) -> date:
        return self.today - timedelta(days=1)

    @property
    def stored(self) -> int:
        """Closed days of the ranges read from the store."""
        return (self.today - self.first).days - len(self.missing)


def needed(ranges: Mapping[str, Period], now: datetime) -> dict[str, tuple[date, date]]:
    """Per zone name, the closed days its ranges need: [earliest first day, yesterday]; a zone
    whose ranges all began today needs none (last < first)."""
    days: dict[str, tuple[date, date]] = {}
    for period in ranges.values():
        zone = period.zone.key
        yesterday = now.astimezone(period.zone).date() - timedelta(days=1)
        first = min(period.first_day, days[zone][0]) if zone in days else period.first_day
        days[zone] = (first, yesterday)
    return days


def closed_days(first: date, today: date) -> list[date]:
    """The days in [first, today), in order."""
    return [first + timedelta(days=n) for n in range((today - first).days)]


def plan(
    ranges: Mapping[str, Period],
    now: datetime,
    stored: Mapping[str, Collection[date]],
    max_days_per_cycle: int,
) -> tuple[ZonePlan, ...]:
    """Per zone (in the order ranges first name it), what the cycle exports and reads.
    `stored` holds, per zone name, the closed days the store has (at least those `needed`)."""
    zones: dict[str, list[str]] = {}
    for key, period in ranges.items():
        zones.setdefault(period.zone.key, []).append(key)
    plans = []
    for name, (first, yesterday) in needed(ranges, now).items():
        zone = ranges[zones[name][0]].zone
        today = yesterday + timedelta(days=1)
        have = stored.get(name, ())
        missing = tuple(day for day in closed_days(first, today) if day not in have)
        plans.append(
            ZonePlan(
                zone=zone,
                today=today,
                ranges=tuple(zones[name]),
                first=first,
                missing=missing,
                whole=len(missing) > max_days_per_cycle,
            )
        )
    return tuple(plans)


def is_settled(day: date, zone: ZoneInfo, exported_at: datetime, settle_after: timedelta) -> bool:
    """An export of `day` that began at `exported_at` is settled: at or after the day's end
    (the next local midnight) plus `settle_after`."""
    return exported_at >= local_midnight(day + timedelta(days=1), zone) + settle_after


def combine(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """usage.SCHEMA frames (one row per key and model each) summed per key and model, in the
    order given: a key's name is the last one given for it that is not empty, and a token sum
    is null only where every frame's is (as the loader sums the parts of one export)."""
    used = [frame.select(COLUMNS) for frame in frames if frame.height]
    if not used:
        return pl.DataFrame(schema=SCHEMA)
    if len(used) == 1:
        return used[0]
    stacked = pl.concat(used, how="vertical")
    names = stacked.group_by("api_key_id", maintain_order=True).agg(
        pl.col("api_key_name").drop_nulls().last().alias(_NAME)
    )
    tokens = [
        pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in TOKEN_COLUMNS
    ]
    summed = stacked.group_by("api_key_id", "model", maintain_order=True).agg(
        pl.col("requests", "total_cost_usd").sum(), *tokens
    )
    return (
        summed.join(names, on="api_key_id", how="left", maintain_order="left")
        .with_columns(pl.col(_NAME).alias("api_key_name"))
        .select(COLUMNS)
    )
