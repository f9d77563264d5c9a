"""Spend reports: what a period cost, how that compares with the period before, who and what
spent it, which budgets are at risk and what the detectors found on its days. Pure: the daily
usage, the days it covers and the budgets' evaluation in, a `Report` out.

    span(choice, zone, now) -> Span       "last-week", "this-month", "yesterday", ... at `now`
    last_whole(every, zone, now) -> Span  the latest whole period that ended at or before `now`
    missing(span, covered) -> days        the span's days not covered: no report of it yet
    findings_of(config, usage, span, covered) -> detector findings of the span's days
    build(span, usage, covered, ...) -> Report

A span is a whole calendar period (a week, a month) or, for "this-week" and the like, the
closed days of the running one so far (today is never in it: its usage is still arriving); it
is compared with the period before it, or with as many of that period's first days. A report
is built only from days the usage covers whole (stored, or exported for the report): `build`
refuses a span with a day missing, and the comparison is left out (None) when the previous
period is not covered whole, rather than compared with part of it.

Budgets at risk are the budget findings `budgets.evaluate` made for the budgets' current
periods that reached a threshold or are forecast over their limit (`budgets.noteworthy`, the
rule alerts follow). The detectors' findings are `detect.detect` run on each day of the span,
as the live cycle ran it on that day; a finding that repeats on later days (a run of anomalous
days) is listed once, on its first day.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, cast, get_args
from zoneinfo import ZoneInfo

import polars as pl

from costwatch import budgets, detect, fmt, periods
from costwatch.config import Config
from costwatch.detect import Finding
from costwatch.periods import PeriodName
from costwatch.workspaces import key_name

__all__ = [
    "CHOICES",
    "AtRisk",
    "Line",
    "Report",
    "Span",
    "build",
    "describe",
    "due_at",
    "findings_of",
    "last_whole",
    "missing",
    "span",
]

Choice = Literal[
    "yesterday",
    "last-week",
    "last-month",
    "last-quarter",
    "this-week",
    "this-month",
    "this-quarter",
]
CHOICES: tuple[str, ...] = get_args(Choice)
MAX_FINDINGS = 20  # detector findings a report lists; the rest are counted


@dataclass(frozen=True)
class Span:
    """The days a report covers: [first, last], local days of `zone`, of one period `name`;
    `whole` when they are the whole period, else its closed days so far."""

    name: PeriodName
    zone: str
    first: date
    last: date
    whole: bool = True

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    @property
    def period(self) -> periods.Period:
        """The calendar period the span lies in."""
        return periods.current(self.name, ZoneInfo(self.zone), _noon(self.first, self.zone))

    @property
    def key(self) -> str:
        """The period's id ("week:2026-11-23@Europe/Berlin"); a part of one says its last day."""
        key = self.period.key()
        return key if self.whole else f"{key}..{self.last.isoformat()}"

    def previous(self) -> Span:
        """The period before; for a part of a period, as many of the previous one's first days
        (at most all of them)."""
        before = self.period.previous()
        last = before.last_day
        if not self.whole:
            last = min(before.first_day + timedelta(days=len(self.days) - 1), last)
        return Span(self.name, self.zone, before.first_day, last, self.whole)


def span(choice: str, zone: ZoneInfo, now: datetime) -> Span:
    """The span a `--period` choice names at `now`. ValueError for an unknown choice, or a
    running period without a closed day yet ("this-week" on a Monday)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown period {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "yesterday":
        return last_whole("day", zone, now)
    which, _, kind = choice.partition("-")
    name = cast(PeriodName, kind)
    if which == "last":
        return last_whole(name, zone, now)
    running = periods.current(name, zone, now)
    today = now.astimezone(zone).date()
    if today == running.first_day:
        raise ValueError(f"{choice}: no day of this {name} has closed yet (today is its first)")
    return Span(name, zone.key, running.first_day, today - timedelta(days=1), whole=False)


def last_whole(every: PeriodName, zone: ZoneInfo, now: datetime) -> Span:
    """The latest whole period of kind `every` that ended at or before `now`."""
    before = periods.current(every, zone, now).previous()
    return Span(every, zone.key, before.first_day, before.last_day)


def due_at(span_: Span, weekday: int | None, hour: int, minute: int) -> datetime:
    """When the report of a whole span is due: the first local `hour:minute` (on `weekday`,
    0 = Monday, if given) at or after the span's end."""
    end = span_.period.end
    zone = ZoneInfo(span_.zone)
    day = end.astimezone(zone).date()
    while True:
        # a wall time a DST change skips is the instant after the gap
        moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        moment = moment.astimezone(UTC).astimezone(zone)
        if moment >= end and (weekday is None or day.weekday() == weekday):
            return moment
        day += timedelta(days=1)


def missing(span_: Span, covered: Collection[date]) -> list[date]:
    """The span's days that `covered` lacks."""
    return [day for day in span_.days if day not in covered]


@dataclass(frozen=True)
class Line:
    """One key (or model) of a report: what it spent, and in the previous period (None: no
    comparison)."""

    name: str  # the key's name (its id when it has none), or the model
    id: str  # api_key_id; the model again for a model
    cost_usd: float
    requests: float
    previous_cost_usd: float | None = None


@dataclass(frozen=True)
class AtRisk:
    """A budget finding of a current period that reached a threshold or is forecast over."""

    budget: str
    api_key_id: str | None  # None: the budget's shared pool
    api_key_name: str | None
    model: str | None
    metric: str
    used: float
    limit: float
    ratio: float
    level: float | None  # the highest threshold reached, percent
    projected: float | None
    forecast_ratio: float | None
    period: str  # Period.key() of the budget's current period


@dataclass(frozen=True)
class Report:
    """A period's spend for people (`slack/report.py`, `cli/reportformat.py` render it)."""

    name: str  # the configured report's name; "" for the command's own
    span: Span
    cost_usd: float
    requests: float
    previous: Span
    previous_cost_usd: float | None  # None: the previous period is not covered whole
    previous_requests: float | None
    keys: int  # keys with use in the span
    models: int
    top_keys: tuple[Line, ...]
    top_models: tuple[Line, ...]
    at_risk: tuple[AtRisk, ...]
    findings: tuple[Finding, ...]  # the detectors', at most MAX_FINDINGS
    findings_count: int  # all of them
    at: datetime  # when it was made (the budgets' evaluation instant)
    channel: str | None = None  # where it goes; None: the default channel
    mention: tuple[str, ...] = ()  # the configured report's mentions

    @property
    def spent(self) -> bool:
        """Whether there was any use at all (no report is sent for a period without)."""
        return self.cost_usd != 0 or self.requests != 0

    @property
    def change_usd(self) -> float | None:
        return None if self.previous_cost_usd is None else self.cost_usd - self.previous_cost_usd

    @property
    def change_ratio(self) -> float | None:
        """The change against the previous period as a ratio (0.25: +25%); None without a
        comparison or when the previous period spent nothing."""
        if self.previous_cost_usd is None or self.previous_cost_usd == 0:
            return None
        return (self.cost_usd - self.previous_cost_usd) / self.previous_cost_usd


def build(
    span_: Span,
    usage: pl.DataFrame,
    covered: Collection[date],
    *,
    at: datetime,
    findings: pl.DataFrame | None = None,
    detected: Iterable[Finding] = (),
    top: int = 10,
    name: str = "",
    channel: str | None = None,
    mention: tuple[str, ...] = (),
) -> Report:
    """The report of `span_` from `usage` (usage.SCHEMA plus "day", per day, key and model,
    as `usage_by_day` returns it; it may hold other days too), whose days in `covered` are
    whole. `findings` is the budgets' evaluation (FINDING_SCHEMA) at `at`; `detected` the
    detectors' findings of the span (`findings_of`). ValueError when a day of the span is not
    covered: a part of a period is never reported as the whole of it."""
    absent = missing(span_, covered)
    if absent:
        raise ValueError(f"{len(absent)} day(s) of {span_.key} are not covered: {_days(absent)}")
    previous = span_.previous()
    whole_before = not missing(previous, covered)
    now = _within(usage, span_)
    before = _within(usage, previous) if whole_before else None
    keys = _per(now, "api_key_id", before)
    models = _per(now, "model", before)
    found = _first_of_each(detected)
    return Report(
        name=name,
        span=span_,
        cost_usd=_sum(now, "total_cost_usd"),
        requests=_sum(now, "requests"),
        previous=previous,
        previous_cost_usd=None if before is None else _sum(before, "total_cost_usd"),
        previous_requests=None if before is None else _sum(before, "requests"),
        keys=keys.height,
        models=models.height,
        top_keys=_lines(keys.head(top), "api_key_name", "api_key_id", before is not None),
        top_models=_lines(models.head(top), "model", "model", before is not None),
        at_risk=at_risk(findings),
        findings=tuple(found[:MAX_FINDINGS]),
        findings_count=len(found),
        at=at,
        channel=channel,
        mention=mention,
    )


def at_risk(findings: pl.DataFrame | None) -> tuple[AtRisk, ...]:
    """The findings that reached a threshold or are forecast over (worst first, as given)."""
    if findings is None:
        return ()
    return tuple(
        AtRisk(
            budget=f.budget,
            api_key_id=f.api_key_id,
            api_key_name=f.api_key_name,
            model=f.model,
            metric=f.metric,
            used=f.used,
            limit=f.limit,
            ratio=f.ratio,
            level=f.level,
            projected=f.projected,
            forecast_ratio=f.forecast_ratio,
            period=f.period,
        )
        for f in budgets.noteworthy(findings)
    )


def findings_of(
    config: Config, usage: pl.DataFrame, span_: Span, covered: Collection[date], window: int
) -> tuple[Finding, ...]:
    """The detectors (`detect.detect`) on each day of the span, as a cycle judged that day:
    the `window` days before it that their windows read (`detecting.window_days`) and the
    day, of `usage`; only the covered days count (a day not covered is unknown, never $0)."""
    found: list[Finding] = []
    held = sorted(covered)
    for day in span_.days:
        first = day - timedelta(days=window)
        upto = usage.filter(pl.col("day").is_between(first, day))
        found += detect.detect(config, upto, day, [d for d in held if first <= d < day])
    return tuple(found)


def _first_of_each(found: Iterable[Finding]) -> list[Finding]:
    """Each finding once, on its first day (its identity less the day: `findings_of` gives
    them day by day)."""
    seen: set[tuple[str, ...]] = set()
    first = []
    for finding in sorted(found, key=lambda f: f.day):  # stable: each day's own order kept
        subject = finding.identity[:5]
        if subject not in seen:
            seen.add(subject)
            first.append(finding)
    return first


# A sentence about a finding: (text, is_data) pieces; data pieces are names from the export,
# which each renderer makes inert its own way (Slack, a terminal, Markdown).
Piece = tuple[str, bool]


def describe(finding: Finding) -> tuple[Piece, ...]:
    """One line for a detector's finding of a report's day, e.g. "support-bot-prod at 8.0x its
    normal spend on Nov 24"."""
    on = f" on {finding.day:%b} {finding.day.day}"
    if isinstance(finding, detect.Anomaly):
        who: list[Piece] = [(finding.api_key_name or finding.api_key_id, True)]
        if finding.model:
            who += [(" on ", False), (finding.model, True)]
        what = "spend" if finding.metric == "cost_usd" else "requests"
        if finding.ratio is None:
            amount = fmt.amount(finding.metric, finding.value, brief=True)
            return (*who, (f" at {amount}{on}, normally nothing", False))
        return (*who, (f" at {finding.ratio:.1f}x its normal {what}{on}", False))
    if isinstance(finding, detect.UnitCost):
        if finding.change == "zero_cost":
            count = f"{finding.zero_cost_requests:,.0f} requests of "
            return ((count, False), (finding.model, True), (f" cost nothing{on}", False))
        ratio = finding.ratio or 1.0
        way, times = ("more", ratio) if ratio > 1 else ("less", 1 / ratio if ratio else 0.0)
        return ((finding.model, True), (f" cost {times:.1f}x {way} {finding.basis}{on}", False))
    key = (finding.api_key_name or finding.api_key_id, True)
    spent = fmt.money_brief(finding.cost_usd)
    if finding.kind == "new_key":
        return (("New key ", False), key, (f" spent {spent}{on}", False))
    if finding.kind == "dormant_key":
        return (key, (f" came back after {finding.idle_days or 0} idle days{on}: {spent}", False))
    return (key, (f" spent {spent}{on} and no budget names it", False))


def _within(usage: pl.DataFrame, span_: Span) -> pl.DataFrame:
    return usage.filter(pl.col("day").is_between(span_.first, span_.last))


def _sum(frame: pl.DataFrame, column: str) -> float:
    return float(frame.get_column(column).sum() or 0) if frame.height else 0.0


def _per(frame: pl.DataFrame, by: str, before: pl.DataFrame | None) -> pl.DataFrame:
    """Spend and requests per `by` (key or model), biggest first; with the previous period's
    spend of each (0 where it spent nothing then)."""
    aggs = [
        pl.col("total_cost_usd").sum().alias("cost_usd"),
        pl.col("requests").sum().cast(pl.Float64).alias("requests"),
    ]
    if by == "api_key_id":
        aggs.append(key_name(frame).sort_by("day").drop_nulls().last())
    sums = (
        frame.group_by(by).agg(aggs).filter((pl.col("cost_usd") != 0) | (pl.col("requests") != 0))
    )
    if before is not None:
        earlier = before.group_by(by).agg(pl.col("total_cost_usd").sum().alias("previous"))
        sums = sums.join(earlier, on=by, how="left").with_columns(pl.col("previous").fill_null(0.0))
    return sums.sort(["cost_usd", "requests", by], descending=[True, True, False])


def _lines(frame: pl.DataFrame, name: str, ident: str, compared: bool) -> tuple[Line, ...]:
    return tuple(
        Line(
            name=row[name] or row[ident] or "",
            id=row[ident] or "",
            cost_usd=float(row["cost_usd"]),
            requests=float(row["requests"]),
            previous_cost_usd=float(row["previous"]) if compared else None,
        )
        for row in frame.iter_rows(named=True)
    )


def _days(days: Iterable[date]) -> str:
    listed = [day.isoformat() for day in days]
    return ", ".join(listed[:7]) + (f" and {len(listed) - 7} more" if len(listed) > 7 else "")


def _noon(day: date, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(zone))
