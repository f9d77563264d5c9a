"""Keeping the daily usage history whole and true: what to export next, and what a reconcile
found. Pure: `now`, the stored days, the marks and the settings in; the work out.

The keeper (`daemon/keeper.py`, and `costwatch backfill`) asks `plan(...)` for the work and
does the first item, one export at a time, then asks again: the store says what is done, so a
crash loses nothing and the next plan picks up where the last one stopped. In priority order:

1. **current**: closed days of the current periods (per zone, from the first day of its
   earliest running period to yesterday) that are not stored. Until they are, the cycle
   evaluates from a period export; once they are, from the store.
2. **settle**: stored days exported before their settle time (the local midnight after the day
   plus `history.settle_after`: usage arrives late) once that time has passed: exported again
   and stored settled.
3. **repair**: the days a reconcile found different, exported again one by one (oldest first:
   the `repair-next:<zone>` mark moves on with each day, up to `repair-until:<zone>`).
4. **reconcile**: once a day per zone, when every closed day of its current periods is stored
   and settled: one full export of [first day, local midnight today) compared with the sum of
   the stored days (`compare`). A difference is logged, counted, and the range repaired day by
   day (an aggregate cannot say which day is wrong; a difference is rare, so re-exporting the
   range is cheap over time and leaves every day right, not just the total).
5. **backfill**: older closed days, back to `history.backfill_days` before today (at most
   `MAX_BACKFILL_DAYS`, the API's 12 months), never older than the store keeps (retention) nor
   than the API still exports. Newest first: recent days are what forecasts and anomalies read
   first, and the API's 12-month window moves on during a long backfill, so the oldest days
   are the ones worth least and the first to become unexportable.

A day is exported as [local midnight, next local midnight) of its zone (23 or 25 hours across
DST) and stored settled when its export starts at or after its settle time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import polars as pl

from costwatch.config.models import DEFAULT_WORKSPACE
from costwatch.periods import Period, local_midnight

__all__ = [
    "MAX_BACKFILL_DAYS",
    "DayExport",
    "Difference",
    "Plan",
    "Reconcile",
    "Scope",
    "Settings",
    "compare",
    "plan",
    "scopes",
    "settle_time",
    "where",
]

MAX_BACKFILL_DAYS = 365  # the export API serves the last 12 months
Kind = Literal["current", "settle", "repair", "backfill"]
KINDS: tuple[str, ...] = ("current", "settle", "repair", "reconcile", "backfill")
# A day is asked for only while its start is this far inside the API's 12 months: the export
# must still be accepted when it reaches the API.
_API_MARGIN = timedelta(hours=1)


class Settled(Protocol):
    """What the planner needs of a stored day (`state.StoredDay` is one)."""

    @property
    def settled(self) -> bool: ...


@dataclass(frozen=True)
class Settings:
    """The `history` settings the planner needs, and the first day the store keeps."""

    settle_after: timedelta
    backfill_days: int  # closed days before today to keep stored
    keep_from: date | None = None  # retention: older days would be pruned, so never exported

    def __post_init__(self) -> None:
        if not 0 <= self.backfill_days <= MAX_BACKFILL_DAYS:
            raise ValueError(f"backfill_days must be within 0..{MAX_BACKFILL_DAYS}")
        if self.settle_after < timedelta(0):
            raise ValueError("settle_after must not be negative")


@dataclass(frozen=True)
class Scope:
    """One zone of the history: its name and the first day of its earliest current period."""

    zone: ZoneInfo
    current_from: date

    @property
    def name(self) -> str:
        return self.zone.key

    @property
    def marks(self) -> tuple[str, str, str]:
        """The marks the planner reads for this zone: reconciled, repair-next, repair-until."""
        return (f"reconciled:{self.name}", f"repair-next:{self.name}", f"repair-until:{self.name}")


@dataclass(frozen=True)
class DayExport:
    """Export one closed day and store it (`put_day`, replacing what was stored)."""

    kind: Kind
    zone: ZoneInfo
    day: date
    settled: bool  # what the store is told: the export starts at or after the settle time
    workspace: str = DEFAULT_WORKSPACE  # whose day: its client exports it, its partition keeps it

    @property
    def start(self) -> datetime:
        return local_midnight(self.day, self.zone)

    @property
    def end(self) -> datetime:
        return local_midnight(self.day + timedelta(days=1), self.zone)

    def describe(self) -> str:
        return f"{self.kind} {self.day.isoformat()} ({where(self.workspace, self.zone)})"


@dataclass(frozen=True)
class Reconcile:
    """Compare the stored days [first, last] with one export of the same range."""

    zone: ZoneInfo
    first: date
    last: date
    workspace: str = DEFAULT_WORKSPACE  # whose days (as `DayExport.workspace`)

    kind = "reconcile"

    @property
    def start(self) -> datetime:
        return local_midnight(self.first, self.zone)

    @property
    def end(self) -> datetime:
        return local_midnight(self.last + timedelta(days=1), self.zone)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def describe(self) -> str:
        span = f"{self.first.isoformat()}..{self.last.isoformat()}"
        return f"reconcile {span} ({where(self.workspace, self.zone)})"

    def marks_when_different(self, now: datetime) -> list[tuple[str, datetime]]:
        """The marks to set, in this order, when the range differs: repair from its first day
        to its end, then reconciled. A crash in between leaves the reconcile to do again."""
        scope = Scope(self.zone, self.first)
        reconciled, repair_next, repair_until = scope.marks
        return [(repair_next, self.start), (repair_until, self.end), (reconciled, now)]

    def mark_when_equal(self, now: datetime) -> tuple[str, datetime]:
        return Scope(self.zone, self.first).marks[0], now


Work = DayExport | Reconcile


def where(workspace: str, zone: ZoneInfo) -> str:
    """A zone, and its workspace unless it is the one of a file with `langdock:` (for
    people: "Europe/Berlin", "workspace research, Europe/Berlin")."""
    return zone.key if workspace == DEFAULT_WORKSPACE else f"workspace {workspace}, {zone.key}"


def repaired(work: DayExport) -> tuple[str, datetime]:
    """The mark that moves a repair past `work`'s day (set after its `put_day`)."""
    return f"repair-next:{work.zone.key}", work.end


@dataclass(frozen=True)
class Plan:
    """The work to do, in priority order, and what the history lacks."""

    work: tuple[Work, ...]
    missing_current: int  # closed days of current periods not stored, all zones
    missing_backfill: int  # older closed days within backfill_days not stored
    missing_by_zone: Mapping[str, int] = field(default_factory=dict)  # both, per zone

    @property
    def next(self) -> Work | None:
        return self.work[0] if self.work else None

    @property
    def current_complete(self) -> bool:
        """Every closed day of every current period is stored: alerts can use the store."""
        return self.missing_current == 0

    @property
    def remaining_days(self) -> int:
        """Closed days still to export before the history is whole (current and backfill)."""
        return self.missing_current + self.missing_backfill


def scopes(running: Iterable[Period]) -> list[Scope]:
    """One scope per zone of the running periods, from the first day of its earliest one."""
    earliest: dict[str, Period] = {}
    for period in running:
        known = earliest.get(period.zone.key)
        if known is None or period.start.astimezone(UTC) < known.start.astimezone(UTC):
            earliest[period.zone.key] = period
    return [Scope(p.zone, p.first_day) for _, p in sorted(earliest.items())]


def settle_time(zone: ZoneInfo, day: date, settle_after: timedelta) -> datetime:
    """When `day`'s usage is taken to be complete: its next local midnight + `settle_after`."""
    return local_midnight(day + timedelta(days=1), zone).astimezone(UTC) + settle_after


def window(scope: Scope, now: datetime, settings: Settings) -> tuple[date, date]:
    """The closed days the planner looks at in `scope`'s zone, [first, yesterday]: back to
    `backfill_days` and the current periods, but never older than the store keeps nor than the
    API still exports. `first > last` when there is none (the first day of a period)."""
    today = now.astimezone(scope.zone).date()
    first = min(today - timedelta(days=settings.backfill_days), scope.current_from)
    first = max(first, oldest_exportable(scope.zone, now))
    if settings.keep_from is not None:
        first = max(first, settings.keep_from)
    return first, today - timedelta(days=1)


def oldest_exportable(zone: ZoneInfo, now: datetime) -> date:
    """The first day whose start lies inside the API's 12 months at `now` (with a margin)."""
    utc = now.astimezone(UTC)
    day = 28 if (utc.month, utc.day) == (2, 29) else utc.day
    a_year_before = utc.replace(year=utc.year - 1, day=day)
    return (a_year_before + _API_MARGIN).astimezone(zone).date() + timedelta(days=1)


def plan(
    zones: Iterable[Scope],
    now: datetime,
    stored: Mapping[str, Mapping[date, Settled]],
    marks: Mapping[str, datetime | None],
    settings: Settings,
) -> Plan:
    """The work in priority order (see the module docstring). `stored` holds each zone's stored
    days of its `window` (by zone name); `marks` every name of `Scope.marks`."""
    current: list[Work] = []
    settle: list[Work] = []
    repair: list[Work] = []
    reconcile: list[Work] = []
    backfill: list[Work] = []
    missing: dict[str, int] = {}
    for scope in zones:
        days = stored.get(scope.name, {})
        first, last = window(scope, now, settings)
        before = len(current) + len(backfill)

        for day in _newest_first(first, last):
            known = days.get(day)
            settled = now.astimezone(UTC) >= settle_time(scope.zone, day, settings.settle_after)
            if known is None and day >= scope.current_from:
                current.append(DayExport("current", scope.zone, day, settled))
            elif known is None:
                backfill.append(DayExport("backfill", scope.zone, day, settled))
            elif not known.settled and settled:
                settle.append(DayExport("settle", scope.zone, day, settled))
        missing[scope.name] = len(current) + len(backfill) - before
        repair += _repairs(scope, now, marks, settings)
        reconcile += _reconcile(scope, now, days, marks, settings)
    work = (*current, *settle, *repair, *reconcile, *backfill)
    return Plan(work, len(current), len(backfill), missing)


def _newest_first(first: date, last: date) -> Iterable[date]:
    day = last
    while day >= first:
        yield day
        day -= timedelta(days=1)


def _repairs(
    scope: Scope, now: datetime, marks: Mapping[str, datetime | None], settings: Settings
) -> list[Work]:
    """The next day of a repair in progress, if any (one at a time: the mark moves on)."""
    _, next_name, until_name = scope.marks
    start, until = marks.get(next_name), marks.get(until_name)
    if start is None or until is None or start.astimezone(UTC) >= until.astimezone(UTC):
        return []
    day = start.astimezone(scope.zone).date()
    if local_midnight(day, scope.zone).astimezone(UTC) >= now.astimezone(UTC):
        return []  # never the open day
    due = settle_time(scope.zone, day, settings.settle_after)
    return [DayExport("repair", scope.zone, day, settled=now.astimezone(UTC) >= due)]


def _reconcile(
    scope: Scope,
    now: datetime,
    days: Mapping[date, Settled],
    marks: Mapping[str, datetime | None],
    settings: Settings,
) -> list[Work]:
    """The zone's reconcile when it is due: not yet today, every closed day of the current
    periods stored and settled, and at least one of them."""
    today = now.astimezone(scope.zone).date()
    first, last = scope.current_from, today - timedelta(days=1)
    if first > last:
        return []
    done = marks.get(scope.marks[0])
    if done is not None and done.astimezone(UTC) >= local_midnight(today, scope.zone):
        return []
    span = (first + timedelta(days=offset) for offset in range((last - first).days + 1))
    if not all((known := days.get(day)) is not None and known.settled for day in span):
        return []
    return [Reconcile(scope.zone, first, last)]


# --- what a reconcile found ----------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """How the stored days differ from one export of the same range, per key and model."""

    usd: float  # the sum of |stored - exported| cost over every key and model
    requests: int  # the sum of |stored - exported| requests
    keys: int  # keys with a difference
    pairs: int  # key x model rows with a difference
    stored_usd: float
    exported_usd: float

    @property
    def none(self) -> bool:
        return self.pairs == 0

    def describe(self) -> str:
        return (
            f"${self.usd:,.6f} and {self.requests:,} request(s) over {self.keys} key(s)"
            f" ({self.pairs} key x model row(s)); stored ${self.stored_usd:,.6f},"
            f" exported ${self.exported_usd:,.6f}"
        )


def compare(stored: pl.DataFrame, exported: pl.DataFrame, days: int) -> Difference:
    """Compare two usage.SCHEMA frames per (api_key_id, model). Requests must agree exactly;
    costs within a micro-dollar per day summed (each day's export rounds to six decimals)."""
    tolerance = 1e-6 * (days + 1)
    key = ["api_key_id", "model"]

    def totals(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
        return (
            frame.lazy()
            .with_columns(pl.col("model").fill_null(""))
            .group_by(key)
            .agg(
                pl.col("total_cost_usd").sum().alias(f"usd{suffix}"),
                pl.col("requests").sum().alias(f"requests{suffix}"),
            )
            .collect()
        )

    joined = (
        totals(stored, "_stored")
        .join(totals(exported, "_exported"), on=key, how="full", coalesce=True)
        .fill_null(0)
        .with_columns(
            (pl.col("usd_stored") - pl.col("usd_exported")).abs().alias("usd"),
            (pl.col("requests_stored") - pl.col("requests_exported")).abs().alias("requests"),
        )
    )
    differing = joined.filter((pl.col("usd") > tolerance) | (pl.col("requests") != 0))
    return Difference(
        usd=float(differing["usd"].sum()),
        requests=int(differing["requests"].sum()),
        keys=differing["api_key_id"].n_unique(),
        pairs=differing.height,
        stored_usd=float(joined["usd_stored"].sum()),
        exported_usd=float(joined["usd_exported"].sum()),
    )
