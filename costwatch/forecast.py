"""Forecasts: where a subject's use is heading by its period's end, and when it passes the limit.

Pure and vectorised: `judge` adds the forecast columns to a frame of subjects (one row per
budget subject x model-or-all x metric, with `used` and `limit`); `daily` sums stored days per
day and key (all models, and each model glob apart) as they are read, and `WindowSums` sums a
window of those per key and day kind and selects every budget's keys, so 20,000 subjects cost a
few polars queries, not a Python loop per subject. The README's "The forecast" says the same
for users.

The projection is what is spent plus what the remaining days will bring, by one of:

- **Weekday/weekend rates** (`WEEKDAY_WEEKEND`): the mean spend of the window's weekdays and of
  its weekend days (Saturday, Sunday), each applied to the days of its kind still to come, when
  the data says they differ: at least `MIN_OF_EACH` days of each kind in the window, and one
  kind's mean more than `SPLIT_RATIO` times the other's.
- **A trailing rate** ("trailing 14-day rate", `trailing`): otherwise, the mean of the window's
  days, applied to every day still to come.
- **Linear since the period's start** (`LINEAR`): period-to-date use divided by the elapsed
  fraction of the period, when fewer than `MIN_DAYS` closed days are stored in the window (or
  `method: linear`).

The window is the last `window` closed local days before today (in the period's zone; earlier
periods' days count), those the store holds completely. Today's remainder is projected at the
rate of today's kind, in proportion to the real time left in it (a DST day has 23 or 25 hours);
days still to come are whole days. A rate is never negative, so a projection is never below
what is spent.

A forecast is due when the projection reaches the limit, the limit is not already reached
(`reached`), forecasts are enabled, at least `min_elapsed` of the period has passed and, for
spend, at least `min_spend_usd` was spent. The projected overrun is when the projection passes
the limit: for the linear method start + elapsed * limit / used; for the rates, within the day
the cumulated rates pass it, spend spread evenly over that day's real time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import polars as pl

from costwatch import globs
from costwatch.config import Budget, ForecastConfig
from costwatch.config.budget import METRICS
from costwatch.periods import Period, local_midnight
from costwatch.selection import USAGE_COLUMN, mask, row_tokens, selections
from costwatch.usage.model import SCHEMA

__all__ = [
    "EMPTY_DAYS",
    "LINEAR",
    "MIN_DAYS",
    "MIN_OF_EACH",
    "SPLIT_RATIO",
    "WEEKDAY_WEEKEND",
    "Daily",
    "WindowSums",
    "combine",
    "daily",
    "judge",
    "trailing",
    "wanted",
    "window",
]

# The methods, as messages and `check` say them.
LINEAR = "linear since the period's start"
WEEKDAY_WEEKEND = "weekday/weekend rates"

MIN_DAYS = 7  # fewer closed days stored in the window: the linear projection
MIN_OF_EACH = 2  # weekdays and weekend days each, in the window, before they are told apart
SPLIT_RATIO = 1.5  # one kind's mean above this many times the other's: rates told apart

WEEKDAY, WEEKEND = "_weekday", "_weekend"  # the columns `WindowSums.attach` adds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EMPTY_DAYS = pl.DataFrame(schema={**SCHEMA, "day": pl.Date()})  # stored rows of no day
_MICROSECOND = timedelta(microseconds=1)


def trailing(days: int) -> str:
    """The trailing method's name for a window of `days` stored days."""
    return f"trailing {days}-day rate"


@dataclass(frozen=True)
class Daily:
    """Stored closed days of one zone, as the forecast reads them: summed per day and key.

    `sums` holds api_key_id, day (pl.Date, the local day), api_key_name (that day's), and per
    metric its sum over all models (`cost_usd`, ...) and over each glob of `patterns` apart
    (`cost_usd@0`, ... in the order of `patterns`). `days` are the days it covers completely:
    a covered day without rows is a day without use (zero), a day not covered is unknown and
    left out of every window. Per key, not per key and model: a 14-day window of a 20,000-key
    workspace is 280,000 rows, whatever the models. Built by `daily` and `combine`.
    """

    sums: pl.DataFrame
    days: frozenset[date]
    patterns: tuple[str, ...]


def daily(usage: pl.DataFrame, days: Collection[date], patterns: Sequence[str] = ()) -> Daily:
    """`Daily` from stored rows (usage.SCHEMA plus "day", per day, key and model, as the
    store's `usage_by_day` returns them) covering `days`, with each model glob of `patterns`
    summed apart (every glob a budget of this zone limits)."""
    patterns = tuple(dict.fromkeys(patterns))
    values = {
        "cost_usd": pl.col(USAGE_COLUMN["cost_usd"]).cast(pl.Float64),
        "requests": pl.col(USAGE_COLUMN["requests"]).cast(pl.Float64),
        "tokens": row_tokens(usage),
    }
    aggs = [pl.col("api_key_name").last(), *(v.sum().alias(m) for m, v in values.items())]
    for i, pattern in enumerate(patterns):
        on_model = pl.col("model").str.contains(globs.to_regex(pattern))
        aggs += [pl.when(on_model).then(v).sum().alias(f"{m}@{i}") for m, v in values.items()]
    sums = (
        usage.lazy()
        .filter(pl.col("day").is_in(list(days)))
        .group_by("api_key_id", "day")
        .agg(aggs)
        .collect()
    )
    return Daily(sums, frozenset(days), patterns)


def combine(parts: Sequence[Daily], patterns: Sequence[str] = ()) -> Daily:
    """Days read apart (one at a time, so that no more than a day of rows is held), as one."""
    sums = [part.sums for part in parts if part.sums.height]
    days = frozenset().union(*(part.days for part in parts))
    if not sums:
        return daily(EMPTY_DAYS, days, patterns)
    return Daily(pl.concat(sums, how="vertical"), days, parts[0].patterns)


def window(history: Daily | None, rule: _Rule, now: datetime) -> tuple[date, ...]:
    """The covered closed days the rule's rates are taken from at `now`: the last
    `forecast.window` local days before today that `history` covers, oldest first. Empty when
    they are fewer than `MIN_DAYS`, the method is linear, or a model glob of the budget was not
    summed apart in `history`: then the projection is linear."""
    forecast = rule.forecast
    if history is None or forecast.method == "linear":
        return ()
    if not set(rule.budget.models) <= set(history.patterns):
        return ()
    today = now.astimezone(rule.period.zone).date()
    first = today - timedelta(days=forecast.window)
    days = tuple(sorted(day for day in history.days if first <= day < today))
    return days if len(days) >= MIN_DAYS else ()


def wanted(forecast: ForecastConfig, zone: ZoneInfo, now: datetime) -> tuple[date, date] | None:
    """The closed days a rule's `window` may take at `now` (first, last), for reading the
    store; None when its forecast reads no stored days."""
    if not forecast.enabled or forecast.method == "linear":
        return None
    today = now.astimezone(zone).date()
    return today - timedelta(days=forecast.window), today - timedelta(days=1)


class _Rule(Protocol):
    """What `window` reads of a `budgets.Rule` (which imports this module)."""

    @property
    def budget(self) -> Budget: ...
    @property
    def period(self) -> Period: ...
    @property
    def forecast(self) -> ForecastConfig: ...


class WindowSums:
    """One zone's stored days over one window, summed per key: every metric on weekdays and
    on weekend days, for all models and for each model glob, and every budget's selection over
    those keys (`selection.selections`, the rule the evaluation applies).

    Keys are taken from the stored days, not from this period's export: a pool's rate counts a
    key that spent last week and nothing yet this period.
    """

    def __init__(self, history: Daily, days: Collection[date], budgets: Sequence[Budget]) -> None:
        self._globs = {pattern: f"@{i}" for i, pattern in enumerate(history.patterns)}
        weekend = pl.col("day").dt.weekday() >= 6  # ISO: Saturday 6, Sunday 7
        aggs = [pl.col("api_key_name").get(pl.col("day").arg_max())]  # the latest day's name
        for suffix in ("", *self._globs.values()):
            for metric in METRICS:
                value = pl.col(f"{metric}{suffix}")
                for kind, on_kind in ((WEEKDAY, ~weekend), (WEEKEND, weekend)):
                    chosen = pl.when(on_kind).then(value).otherwise(0.0)
                    aggs.append(chosen.sum().alias(f"{metric}{suffix}{kind}"))
        self._sums = (
            history.sums.lazy()
            .filter(pl.col("day").is_in(list(days)))
            .group_by("api_key_id")
            .agg(aggs)
            .collect()
        )
        self._masks = selections(budgets, self._sums)

    def attach(self, subjects: pl.DataFrame, index: int, budget: Budget) -> pl.DataFrame:
        """`subjects` of budget number `index` (api_key_id, model, metric, ...) with its
        window sums (`WEEKDAY`, `WEEKEND`; 0 for a subject without stored use)."""
        selected = self._sums.filter(self._masks.get_column(mask(index)))
        parts = []
        for model in (None, *budget.models):
            suffix = "" if model is None else self._globs[model]  # `window` checked it
            for metric in METRICS:
                sums = [
                    pl.col(f"{metric}{suffix}{kind}").alias(kind) for kind in (WEEKDAY, WEEKEND)
                ]
                if budget.scope == "shared":
                    sums = [total.sum() for total in sums]
                    subject = pl.lit(None, pl.String()).alias("api_key_id")
                else:
                    subject = pl.col("api_key_id")
                parts.append(
                    selected.lazy().select(
                        subject,
                        pl.lit(model, pl.String()).alias("model"),
                        pl.lit(metric).alias("metric"),
                        *sums,
                    )
                )
        long = pl.concat(parts, how="vertical").collect()
        return subjects.join(
            long,
            on=["api_key_id", "model", "metric"],
            how="left",
            nulls_equal=True,
            maintain_order="left",
        ).with_columns(pl.col(WEEKDAY, WEEKEND).fill_null(0.0))


@dataclass(frozen=True)
class _Days:
    """The calendar a rate forecast at one instant needs: the window's days by kind, and the
    days still to come in the period (today's remainder first), as a table."""

    weekdays: int  # in the window
    weekends: int
    ahead: pl.DataFrame  # per day to come: start_us, length_us, the weekday and weekend share

    @property
    def count(self) -> int:
        return self.weekdays + self.weekends


def _calendar(days: Sequence[date], period: Period, now: datetime) -> _Days:
    zone = period.zone
    weekends = sum(1 for day in days if day.weekday() >= 5)
    rows: list[tuple[int, int, float, float]] = []
    end = period.end.astimezone(UTC)
    moment = min(max(now.astimezone(UTC), period.start.astimezone(UTC)), end)
    day = moment.astimezone(zone).date()
    while moment < end:
        start = local_midnight(day, zone).astimezone(UTC)
        after = min(local_midnight(day + timedelta(days=1), zone).astimezone(UTC), end)
        if after <= moment:  # a local day the zone skips (Pacific/Apia, 2011-12-30)
            day += timedelta(days=1)
            continue
        share = (after - moment) / (after - start)
        weekend = day.weekday() >= 5
        rows.append(
            (
                (moment - _EPOCH) // _MICROSECOND,
                (after - moment) // _MICROSECOND,
                0.0 if weekend else share,
                share if weekend else 0.0,
            )
        )
        moment, day = after, day + timedelta(days=1)
    ahead = pl.DataFrame(
        rows,
        schema={"_start": pl.Int64, "_length": pl.Int64, "_wd": pl.Float64, "_we": pl.Float64},
        orient="row",
    )
    return _Days(weekdays=len(days) - weekends, weekends=weekends, ahead=ahead)


def judge(
    subjects: pl.DataFrame,
    period: Period,
    forecast: ForecastConfig,
    now: datetime,
    *,
    reached: pl.Expr,
    days: Sequence[date] = (),
) -> pl.DataFrame:
    """`subjects` with `projected`, `forecast_method`, `forecast_due` and `overrun_at` added.

    `reached` is true where `used` has already reached the limit (no forecast is due there).
    `days` is the `window` of stored days; with it, `subjects` carries `WindowSums.attach`'s
    columns and the projection is made from their rates, else it is linear.
    """
    used, limit = pl.col("used"), pl.col("limit")
    fraction = period.elapsed_fraction(now)
    spent_enough = (pl.col("metric") != "cost_usd") | (used >= forecast.min_spend_usd)
    worth = forecast.enabled and fraction >= forecast.min_elapsed
    if days:
        return _by_rates(
            subjects,
            period,
            forecast,
            now,
            _calendar(days, period, now),
            due=pl.lit(worth) & spent_enough & ~reached,
        )
    if fraction > 0:
        projected: pl.Expr = used / fraction
        method: pl.Expr = pl.lit(LINEAR, pl.String())
    else:
        projected = pl.lit(None, pl.Float64())
        method = pl.lit(None, pl.String())
    due = (
        pl.lit(worth and fraction > 0) & spent_enough & (projected >= limit) & ~reached
    ).fill_null(value=False)
    elapsed_us = period.elapsed(now) // _MICROSECOND
    start_us = (period.start - _EPOCH) // _MICROSECOND
    overrun = (
        pl.when(due & (used > 0))
        .then((pl.lit(start_us) + pl.lit(elapsed_us) * limit / used).cast(pl.Int64))
        .otherwise(None)
        .cast(pl.Datetime("us", "UTC"))
    )
    return subjects.with_columns(
        projected.alias("projected"),
        method.alias("forecast_method"),
        due.alias("forecast_due"),
        overrun.alias("overrun_at"),
    )


def _by_rates(
    subjects: pl.DataFrame,
    period: Period,
    forecast: ForecastConfig,
    now: datetime,
    calendar: _Days,
    *,
    due: pl.Expr,
) -> pl.DataFrame:
    """The projection from the window's daily rates, and when it passes the limit."""
    weekday, weekend = pl.col(WEEKDAY), pl.col(WEEKEND)
    overall = (weekday + weekend) / calendar.count
    split = pl.lit(False)
    if forecast.method == "auto" and min(calendar.weekdays, calendar.weekends) >= MIN_OF_EACH:
        on_weekdays, on_weekends = weekday / calendar.weekdays, weekend / calendar.weekends
        split = (on_weekdays > SPLIT_RATIO * on_weekends) | (
            on_weekends > SPLIT_RATIO * on_weekdays
        )
        rate_wd = pl.when(split).then(on_weekdays).otherwise(overall)
        rate_we = pl.when(split).then(on_weekends).otherwise(overall)
    else:
        rate_wd = rate_we = overall
    ahead = calendar.ahead
    weekdays_ahead = float(ahead.get_column("_wd").sum()) if ahead.height else 0.0
    weekends_ahead = float(ahead.get_column("_we").sum()) if ahead.height else 0.0
    rated = subjects.with_columns(
        rate_wd.clip(lower_bound=0.0).alias("_rate_wd"),
        rate_we.clip(lower_bound=0.0).alias("_rate_we"),
        pl.when(split)
        .then(pl.lit(WEEKDAY_WEEKEND))
        .otherwise(pl.lit(trailing(calendar.count)))
        .alias("forecast_method"),
    )
    rate_wd, rate_we = pl.col("_rate_wd"), pl.col("_rate_we")
    projected = pl.col("used") + weekdays_ahead * rate_wd + weekends_ahead * rate_we
    rated = rated.with_columns(projected.alias("projected")).with_columns(
        (due & (pl.col("projected") >= pl.col("limit"))).alias("forecast_due")
    )
    return _overrun(rated, calendar.ahead, period).drop("_rate_wd", "_rate_we")


def _overrun(rated: pl.DataFrame, ahead: pl.DataFrame, period: Period) -> pl.DataFrame:
    """`overrun_at` for the due rows of `rated`: the instant within the first day to come
    whose cumulated rates reach what is left of the limit."""
    rated = rated.with_row_index("_row")
    due = rated.filter(pl.col("forecast_due")).select(
        "_row", "used", "limit", "_rate_wd", "_rate_we"
    )
    end_us = (period.end.astimezone(UTC) - _EPOCH) // _MICROSECOND
    if due.height == 0 or ahead.height == 0:
        overrun = pl.DataFrame(schema={"_row": pl.UInt32, "overrun_at": pl.Int64})
    else:
        days = ahead.with_columns(
            (pl.col("_wd").cum_sum() - pl.col("_wd")).alias("_wd_before"),
            (pl.col("_we").cum_sum() - pl.col("_we")).alias("_we_before"),
        )
        need = pl.col("limit") - pl.col("used")
        before = pl.col("_wd_before") * pl.col("_rate_wd") + pl.col("_we_before") * pl.col(
            "_rate_we"
        )
        amount = pl.col("_wd") * pl.col("_rate_wd") + pl.col("_we") * pl.col("_rate_we")
        at = pl.col("_start") + (
            ((need - before) / amount).clip(0.0, 1.0) * pl.col("_length")
        ).cast(pl.Int64)
        overrun = (
            due.join(days, how="cross")
            .filter((amount > 0) & (before + amount >= need))
            .group_by("_row")
            .agg(at.min().alias("overrun_at"))
        )
    joined = rated.join(overrun, on="_row", how="left", maintain_order="left").with_columns(
        pl.when(pl.col("forecast_due"))
        .then(pl.col("overrun_at").fill_null(end_us))
        .otherwise(None)
        .cast(pl.Datetime("us", "UTC"))
        .alias("overrun_at")
    )
    return joined.drop("_row")
