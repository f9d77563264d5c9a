"""Limits proposed from the usage history (`costwatch suggest`): for each budget of a file, a
high percentile of its full periods' use plus headroom, and where each number comes from. Pure.

    window(months, zone, now) -> (first, last)        the closed days looked at
    suggest(config, daily, covered, now, options)     a `Suggestion` per budget
    render(suggestions, options, now)                 the budgets section as YAML, commented

A budget is judged by its own period (day, week, month, quarter) in its own zone: the sums of
the full periods of the window (every day of them in `covered`: stored or exported; a covered
day without rows is $0), never a month scaled down to a week. A shared budget (a pool) is the
sum of the keys it selects; a per-key budget's limit applies to each key, so it is the highest
of its keys' own figures, each key counted from the first period it was used in. The figure is
the `percentile` of those sums (linear between the closest ranks) with `MIN_PERIODS` or more,
else the highest of them, plus `headroom`, rounded up (cents, whole counts). A budget whose
history says nothing (no full period, no use, no tokens reported) keeps its limit as written,
and says why. Per-model limits (`models:`) are kept as written.

With `workspaces:`, the history is every workspace's joined (ids "workspace/id", a `workspace`
column: `held.read_each`): a workspace's own budget reads its keys alone, a top-level budget
the keys of the workspaces it reads, as a cycle selects them; the own budgets are rendered
under their workspace (`workspaces: - name: ... budgets:`), the top-level ones as `budgets:`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import yaml

from costwatch import fmt, periods, selection
from costwatch.config import Budget, Config
from costwatch.config.budget import Metric
from costwatch.config.durations import format_duration
from costwatch.periods import Period, PeriodName
from costwatch.quote import quote
from costwatch.workspaces import WORKSPACE, key_name

__all__ = ["MIN_PERIODS", "Limit", "Options", "Suggestion", "render", "suggest", "window"]

MIN_PERIODS = 3  # full periods a percentile is taken over; fewer: the highest of them
_SUMMED = ("cost_usd", "requests", "tokens", "_token_rows")  # per period, in `_period_sums`


@dataclass(frozen=True)
class Options:
    months: int = 6  # how far back the history is read, in calendar months before this one
    percentile: float = 90.0
    headroom: float = 0.2  # added on top, as a fraction


@dataclass(frozen=True)
class Limit:
    """One suggested limit of a budget: `value`, or None when the history says nothing (the
    limit as written, `current`, is kept), and `basis`, where the number comes from."""

    metric: Metric
    value: float | None
    current: float
    basis: str


@dataclass(frozen=True)
class Suggestion:
    budget: Budget
    period: PeriodName
    zone: str
    periods: int  # full periods of the window the history covers
    limits: tuple[Limit, ...]
    workspace: str | None = None  # whose own budget it is (`budget` as written under it)

    @property
    def too_short(self) -> bool:
        """Fewer full periods than a percentile needs."""
        return self.periods < MIN_PERIODS


def window(months: int, zone: ZoneInfo, now: datetime) -> tuple[date, date]:
    """The closed days read: from the first of the month `months` before this one to
    yesterday, local days of `zone`."""
    today = now.astimezone(zone).date()
    index = today.year * 12 + today.month - 1 - months
    return date(index // 12, index % 12 + 1, 1), today - timedelta(days=1)


def suggest(
    config: Config,
    daily: Mapping[str, pl.DataFrame],
    covered: Mapping[str, frozenset[date]],
    now: datetime,
    options: Options,
) -> list[Suggestion]:
    """A `Suggestion` for each budget of `config`, in file order. `daily` is each zone's
    history (`Store.usage_by_day`: usage.SCHEMA plus "day"), `covered` the days of it known."""
    keys = {zone: _key_masks(config.budgets, frame) for zone, frame in daily.items()}
    return [
        _suggestion(config, index, daily, covered, keys, now=now, options=options)
        for index in range(len(config.budgets))
    ]


def _key_masks(budgets: Sequence[Budget], frame: pl.DataFrame) -> pl.DataFrame:
    """Each key of `frame` once (its latest name) with every budget's selection mask."""
    scoped = [pl.col(WORKSPACE).first()] if WORKSPACE in frame.columns else []
    table = (
        frame.sort("day")
        .group_by("api_key_id", maintain_order=True)
        .agg(key_name(frame).drop_nulls().last(), *scoped)
    )
    return selection.selections(budgets, table).join(
        table.select("api_key_id", "api_key_name"),
        on="api_key_id",
        how="left",
        maintain_order="left",
    )


def _suggestion(
    config: Config,
    index: int,
    daily: Mapping[str, pl.DataFrame],
    covered: Mapping[str, frozenset[date]],
    keys: Mapping[str, pl.DataFrame],
    *,
    now: datetime,
    options: Options,
) -> Suggestion:
    budget = config.budgets[index]
    zone = budget.effective_zone(config.schedule)
    name = budget.effective_period(config.defaults)
    first, _ = window(options.months, zone, now)
    known = covered.get(zone.key, frozenset())
    full = [p for p in _periods_since(name, zone, now, first) if _days(p) <= known]
    frame = daily.get(zone.key, pl.DataFrame())
    masks = keys.get(zone.key, pl.DataFrame())
    chosen = masks.filter(pl.col(selection.mask(index))) if masks.height else masks
    judged = _Judged(
        name=name,
        full=full,
        sums=_period_sums(frame, chosen, full, per_key=budget.scope == "key"),
        names=dict(zip(chosen["api_key_id"], chosen["api_key_name"], strict=True))
        if chosen.height
        else {},
        options=options,
    )
    limits = tuple(judged.limit(metric, current) for metric, current in budget.limits.items())
    owner, written = next(
        (
            (item.name, own)
            for item in config.workspaces
            for own in item.budgets
            if own.name == budget.name
        ),
        (None, budget),
    )
    return Suggestion(written, name, zone.key, len(full), limits, owner)


def _periods_since(name: PeriodName, zone: ZoneInfo, now: datetime, first: date) -> list[Period]:
    """The periods before the current one that start on or after `first`, oldest first."""
    found = []
    period = periods.current(name, zone, now).previous()
    while period.first_day >= first:
        found.append(period)
        period = period.previous()
    return found[::-1]


def _days(period: Period) -> set[date]:
    count = (period.last_day - period.first_day).days + 1
    return {period.first_day + timedelta(days=n) for n in range(count)}


def _period_sums(
    frame: pl.DataFrame, chosen: pl.DataFrame, full: Sequence[Period], *, per_key: bool
) -> pl.DataFrame:
    """Per period (and key, `per_key`), the chosen keys' cost, requests and tokens; a period
    without rows is 0 (its days are covered); a key counted from its first period with rows.
    Columns: period (index into `full`), subject (a key id, or "" for the pool), the metrics,
    _token_rows."""
    calendar = pl.DataFrame(
        {
            "day": [day for p in full for day in sorted(_days(p))],
            "period": [i for i, p in enumerate(full) for _ in _days(p)],
        },
        schema={"day": pl.Date(), "period": pl.Int64()},
    )
    if frame.height == 0 or chosen.height == 0 or not full:
        grid = pl.DataFrame(
            {"period": [] if per_key else list(range(len(full))), "subject": ""},
            schema={"period": pl.Int64(), "subject": pl.String()},
        )
        return grid.with_columns(pl.lit(0.0).alias(column) for column in _SUMMED)
    tokens = selection.row_tokens(frame)
    subject = pl.col("api_key_id") if per_key else pl.lit("")
    sums = (
        frame.join(chosen.select("api_key_id"), on="api_key_id", how="semi")
        .join(calendar, on="day", how="inner")
        .group_by("period", subject.alias("subject"))
        .agg(
            pl.col("total_cost_usd").sum().alias("cost_usd"),
            pl.col("requests").cast(pl.Float64).sum().alias("requests"),
            tokens.sum().alias("tokens"),
            tokens.count().cast(pl.Float64).alias("_token_rows"),
        )
    )
    subjects = sums.group_by("subject").agg(pl.col("period").min().alias("since"))
    if not per_key:
        subjects = pl.DataFrame(
            {"subject": [""], "since": [0]}, schema={"subject": pl.String(), "since": pl.Int64()}
        )
    grid = (
        pl.DataFrame({"period": list(range(len(full)))}, schema={"period": pl.Int64()})
        .join(subjects, how="cross")
        .filter(pl.col("period") >= pl.col("since"))
        .drop("since")
    )
    return (
        grid.join(sums, on=["period", "subject"], how="left")
        .with_columns(pl.col(_SUMMED).fill_null(0.0))
        .sort("subject", "period")
    )


@dataclass(frozen=True)
class _Figure:
    """What one subject's periods say: the base of its limit, and its highest period."""

    subject: str
    count: int
    base: float
    highest: float
    highest_period: int


def _figure(subject: str, values: Sequence[tuple[int, float]], options: Options) -> _Figure:
    ordered = sorted(value for _, value in values)
    top_period, top = max(values, key=lambda pair: (pair[1], pair[0]))
    base = _percentile(ordered, options.percentile) if len(ordered) >= MIN_PERIODS else top
    return _Figure(subject, len(ordered), base, top, top_period)


def _percentile(ordered: Sequence[float], percentile: float) -> float:
    """The `percentile` of sorted values, linear between the closest ranks (numpy's default)."""
    rank = percentile / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class _Judged:
    """One budget's full periods and their sums (`_period_sums`), to judge each metric by."""

    name: PeriodName
    full: Sequence[Period]
    sums: pl.DataFrame
    names: Mapping[str, str | None]  # api_key_id -> api_key_name of the keys chosen
    options: Options

    def limit(self, metric: Metric, current: float) -> Limit:
        full, name = len(self.full), self.name
        noun = f"{full} full {name}{'s' if full != 1 else ''}"
        if not full:
            return Limit(
                metric, None, current, f"history too short: no full {name} {_kept(current)}"
            )
        if metric == "tokens" and not self.sums.get_column("_token_rows").sum():
            return Limit(metric, None, current, f"no tokens reported in {noun} {_kept(current)}")
        figures = [
            _figure(subject, list(zip(group["period"], group[metric], strict=True)), self.options)
            for (subject,), group in self.sums.group_by("subject", maintain_order=True)
        ]
        figure = max(figures, key=lambda f: (f.base, f.highest), default=None)
        if figure is None or figure.highest <= 0:
            nothing = "no spend" if metric == "cost_usd" else f"no {metric}"
            return Limit(metric, None, current, f"{nothing} in {noun} {_kept(current)}")
        headroom = 1 + self.options.headroom
        value = _rounded_up(metric, figure.base * headroom)
        if value <= 0:  # a percentile of mostly empty periods
            value = _rounded_up(metric, figure.highest * headroom)
        value = max(value, 0.01 if metric == "cost_usd" else 1.0)  # a limit is above 0
        return Limit(metric, value, current, self._basis(metric, figure, len(figures)))

    def _basis(self, metric: Metric, figure: _Figure, keys: int) -> str:
        count = f"{figure.count} full {self.name}{'s' if figure.count != 1 else ''}"
        base, p = fmt.amount(metric, figure.base), f"p{self.options.percentile:g}"
        if figure.count >= MIN_PERIODS:
            how = f"{p} of {count} {base}"
        else:
            how = f"the highest of only {count} {base} (too short for a {p})"
        whose = ""
        if figure.subject:
            label = self.names.get(figure.subject) or figure.subject
            whose = f" of key {quote(label)}, the highest of {keys} key(s)"
        top = _label(self.full[figure.highest_period])
        highest = f"highest {self.name} {top} {fmt.amount(metric, figure.highest)}"
        return f"{how}{whose} + {self.options.headroom * 100:g}% headroom; {highest}"


def _kept(current: float) -> str:
    return f"(the limit as written, {current:g}, is kept)"


def _rounded_up(metric: Metric, value: float) -> float:
    if metric == "cost_usd":
        return math.ceil(round(value * 100, 6)) / 100
    return float(math.ceil(round(value, 6)))


def _label(period: Period) -> str:
    first = period.first_day
    if period.name == "month":
        return f"{first:%b %Y}"
    if period.name == "quarter":
        return f"Q{(first.month - 1) // 3 + 1} {first.year}"
    if period.name == "week":
        return f"of {first.isoformat()}"
    return first.isoformat()


# --- the YAML snippet -------------------------------------------------------------------------


def render(suggestions: Sequence[Suggestion], options: Options, now: datetime) -> str:
    """The budgets section with the suggested limits, each budget as written otherwise, a
    comment per limit saying where it comes from. Valid YAML for `costwatch validate`."""
    lines = [
        f"# costwatch suggest at {now.isoformat(timespec='seconds')}: p{options.percentile:g}"
        f" of each budget's full periods in the last {options.months} month(s)"
        f" + {options.headroom * 100:g}% headroom.",
        "# Paste as the budgets section; the configuration file was not changed.",
        "budgets:",
    ]
    top = [item for item in suggestions if item.workspace is None]
    if not top:
        lines[-1] = "budgets: []  # the file has no budgets" if not suggestions else "budgets: []"
    lines += _entries(top, "  ")
    owners = list(dict.fromkeys(item.workspace for item in suggestions if item.workspace))
    if owners:
        lines += [
            "# Each workspace's own budgets: paste as that workspace's budgets.",
            "workspaces:",
        ]
    for owner in owners:
        lines += [f"  - name: {owner}", "    budgets:"]
        lines += _entries([item for item in suggestions if item.workspace == owner], "      ")
    return "\n".join(lines) + "\n"


def _entries(suggestions: Sequence[Suggestion], indent: str) -> list[str]:
    """Each budget's comments and entry, at `indent`."""
    lines: list[str] = []
    for item in suggestions:
        lines.append(
            f"{indent}# {quote(item.budget.name)} ({periods.ADJECTIVES[item.period]}, {item.zone}):"
        )
        if item.too_short:
            lines.append(
                f"{indent}#   history short: {item.periods} full {item.period}(s) in the window"
                " (a longer --months reads more)"
            )
        lines += [f"{indent}#   {limit.metric}: {limit.basis}" for limit in item.limits]
        if item.budget.models:
            lines.append(f"{indent}#   models: the per-model limits are kept as written")
        entry = yaml.safe_dump(
            [_entry(item)], sort_keys=False, allow_unicode=True, default_flow_style=False
        )
        lines += [f"{indent}{line}" for line in entry.splitlines()]
    return lines


def _entry(item: Suggestion) -> dict[str, Any]:
    """The budget as its file wrote it (the fields it set), with the suggested limits."""
    written = item.budget.model_dump(mode="python", exclude_unset=True)
    limits = {
        limit.metric: _number(limit.value if limit.value is not None else limit.current)
        for limit in item.limits
    }
    entry: dict[str, Any] = _plain({**written, "limits": limits})
    return entry


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _plain(value: object) -> Any:
    """Model data as YAML the configuration reads back: tuples as lists, durations as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, float):
        return _number(value)
    return value
