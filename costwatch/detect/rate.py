"""Spend rate now: a key's today so far against the same hours of its normal days, so a
runaway loop at 10:00 is seen before midnight.

    spend_rates(snapshots, today, hour, recorded, config, *, budgets) -> pl.DataFrame

The daily history cannot say what a key had spent by 10:00 on other days, so this reads
*hourly snapshots* (SNAPSHOT): per local day and hour, each key's usage of that day from its
local midnight up to the last cycle of that hour (requests and cost so far; a key without use
yet that day has no row). `recorded` are the days whose snapshot of `hour` was taken (a day
the daemon was down at that hour is unknown, never $0). Today's value is today's snapshot of
`hour`; the normal is `baseline.stats` over the same hour of the recorded days since the
key's first snapshot (at any hour: a key that starts at 14:00 had $0 by 10:00), with the
anomalies' window, seasonality and sensitivity (`anomaly.judge`: the same level, floors and
per-budget settings). A row says how far above the same hours of normal days it is.

What must be wired for it (not yet): the cycle, after each export of today, records today's
per-key sums as the snapshot of the current local hour of the schedule's zone (replacing an
earlier one of the same hour), in a store table kept `window_days` (about 24 x window x the
keys that spend, a few MB); the daemon runs this after the snapshot, and plans one alert per
key and day (the ledger), beside the daily anomaly of the same key. Pure (polars).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import polars as pl

from costwatch.config import Budget
from costwatch.config.detect import AnomalyConfig
from costwatch.detect import anomaly, baseline, daily
from costwatch.errors import UsageError

SNAPSHOT: dict[str, pl.DataType] = {
    "day": pl.Date(),
    "hour": pl.Int8(),  # 0-23, local
    "api_key_id": pl.String(),
    "api_key_name": pl.String(),
    "requests": pl.Int64(),
    "total_cost_usd": pl.Float64(),
}
SCHEMA: dict[str, pl.DataType] = {
    "metric": pl.String(),
    "api_key_id": pl.String(),
    "api_key_name": pl.String(),
    "day": pl.Date(),
    "hour": pl.Int8(),
    "value": pl.Float64(),  # so far today
    "normal": pl.Float64(),  # so far by this hour on normal days
    "ratio": pl.Float64(),
    "level": pl.Float64(),
    "spread": pl.Float64(),
    "basis": pl.String(),
    "baseline_days": pl.Int64(),
}


def spend_rates(
    snapshots: pl.DataFrame,
    today: date,
    hour: int,
    recorded: Iterable[date],
    config: AnomalyConfig,
    *,
    budgets: Sequence[Budget] = (),
) -> pl.DataFrame:
    """The keys whose today-so-far at `hour` is far above their normal by that hour (SCHEMA),
    cost before requests, the largest excess first."""
    if not (config.enabled and config.rate) or not 0 <= hour <= 23:
        return pl.DataFrame(schema=SCHEMA)
    checked = _checked(snapshots).filter(pl.col("day") <= today)
    at_hour = checked.filter(pl.col("hour") == hour)
    firsts = checked.group_by("api_key_id").agg(pl.col("day").min().alias("first_seen"))
    window = baseline.Window(config.window_days, config.min_baseline_days, config.seasonality)
    days = baseline.Days.of(today, recorded, window)
    names = (
        at_hour.filter(pl.col("day") == today)
        .group_by("api_key_id")
        .agg(pl.col("api_key_name").last())
    )
    settings = anomaly.key_settings(names, config, budgets)
    columns = [anomaly.VALUE[metric] for metric in config.metrics]
    observations = at_hour.group_by("api_key_id", "day").agg(pl.col(c).sum() for c in columns)
    stats = baseline.stats(observations, ["api_key_id"], days, values=columns, firsts=firsts)
    found = [
        anomaly.judge(
            baseline.metric(stats, ["api_key_id"], anomaly.VALUE[metric]), settings, metric
        )
        for metric in config.metrics
    ]
    return (
        pl.concat([pl.DataFrame(schema=SCHEMA), *found], how="diagonal_relaxed")
        .drop("api_key_name")
        .join(names, on="api_key_id", how="left")
        .with_columns(pl.lit(today).alias("day"), pl.lit(hour, dtype=pl.Int8).alias("hour"))
        .select(list(SCHEMA))
        .cast(SCHEMA)  # type: ignore[arg-type]
        .sort(
            ["metric", pl.col("value") - pl.col("normal").fill_null(0), "api_key_id"],
            descending=[False, True, False],
        )
    )


def _checked(snapshots: pl.DataFrame) -> pl.DataFrame:
    """The snapshots as `daily.checked` reads usage (the same refusals), one row per day, hour
    and key, with `hour` an Int8 of 0-23."""
    if "hour" not in snapshots.columns:
        raise UsageError("the snapshots have no hour column", column="hour")
    hour = pl.col("hour")
    if not snapshots.schema["hour"].is_integer():
        raise UsageError(f"the snapshots' hour column is {snapshots.schema['hour']}", column="hour")
    if snapshots.select((hour.is_null() | (hour < 0) | (hour > 23)).any()).item():
        raise UsageError("the snapshots' hour is not 0-23 in some row", column="hour")
    by_hour = snapshots.with_columns(hour.cast(pl.String).alias("model"))
    return daily.checked(by_hour).with_columns(pl.col("model").cast(pl.Int8).alias("hour"))
