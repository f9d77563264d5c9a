"""Forecasts: where a subject's use is heading by its period's end, and when it passes the limit.

Pure and vectorised: `judge` adds the forecast columns to a frame of subjects (one row per
budget subject x model-or-all x metric, with `used` and `limit`), so 20,000 subjects cost a few
polars expressions, not a Python loop per subject.

- **Linear since the period's start**: period-to-date use divided by the elapsed fraction of
  the period. The projected overrun is when the same rate reaches the limit:
  start + elapsed * limit / used.
- A forecast is due when the projection reaches the limit, the limit is not already reached
  (`reached`), forecasts are enabled, at least `min_elapsed` of the period has passed and, for
  spend, at least `min_spend_usd` was spent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from costwatch.config import ForecastConfig
from costwatch.periods import Period

__all__ = ["LINEAR", "judge"]

LINEAR = "linear since the period's start"  # the method, as messages and `check` say it

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def judge(
    subjects: pl.DataFrame,
    period: Period,
    forecast: ForecastConfig,
    now: datetime,
    *,
    reached: pl.Expr,
) -> pl.DataFrame:
    """`subjects` with `projected`, `forecast_method`, `forecast_due` and `overrun_at` added.

    `reached` is true where `used` has already reached the limit (no forecast is due there).
    """
    used, limit = pl.col("used"), pl.col("limit")
    fraction = period.elapsed_fraction(now)
    if fraction > 0:
        projected: pl.Expr = used / fraction
        method: pl.Expr = pl.lit(LINEAR, pl.String())
    else:
        projected = pl.lit(None, pl.Float64())
        method = pl.lit(None, pl.String())
    spent_enough = (pl.col("metric") != "cost_usd") | (used >= forecast.min_spend_usd)
    due = (
        pl.lit(forecast.enabled and fraction > 0 and fraction >= forecast.min_elapsed)
        & spent_enough
        & (projected >= limit)
        & ~reached
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
