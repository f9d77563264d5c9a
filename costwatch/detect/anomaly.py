"""Anomalies: a key's (and a key x model's) day far above its own normal.

    anomalies(daily, today, covered, config, budgets) -> pl.DataFrame   one row per anomaly

Each key, and with `models: true` each key x model, is compared with its own baseline
(`baseline.stats`: the median and MAD of its trailing covered days, weekday-aware) for each
metric of `config.metrics`. A day is anomalous when its value reaches the *level*

    max(floor, min_ratio x normal, normal + min_deviations x 1.4826 x MAD)

where the floor is `min_spend_usd` (cost) or `min_requests` (requests): so $0.02 -> $0.20
says nothing, a steady key is flagged at `min_ratio` times its normal, and a noisy key only
beyond its ordinary swing. A subject without enough baseline days is not judged, and a value
of nothing never reaches a positive floor. A row says how far above normal (`ratio`, null
when normal is $0; `normal`), since when (`since`: the first day of the unbroken run of days
up to today at or above today's level), and, for a key, which model drives it
(`driver_model`: the largest share of the excess over each model's own normal;
`driver_share` of the models' positive excess).

Sensitivity is global or per budget (`anomalies.budgets`): for each setting, the first budget
in file order that selects the key (`selection.selections`, the budgets' one rule) and sets it
wins, else the global value. Pure (polars); no per-key Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import polars as pl

from costwatch import selection
from costwatch.config import Budget
from costwatch.config.detect import AnomalyConfig, AnomalyMetric
from costwatch.detect import baseline, daily

COLUMNS = (
    "metric",
    "api_key_id",
    "api_key_name",
    "model",
    "day",
    "value",
    "normal",
    "ratio",
    "level",
    "spread",
    "basis",
    "baseline_days",
    "since",
    "driver_model",
    "driver_share",
)
SCHEMA: dict[str, pl.DataType] = {
    "metric": pl.String(),
    "api_key_id": pl.String(),
    "api_key_name": pl.String(),
    "model": pl.String(),
    "day": pl.Date(),
    "value": pl.Float64(),
    "normal": pl.Float64(),
    "ratio": pl.Float64(),
    "level": pl.Float64(),
    "spread": pl.Float64(),
    "basis": pl.String(),
    "baseline_days": pl.Int64(),
    "since": pl.Date(),
    "driver_model": pl.String(),
    "driver_share": pl.Float64(),
}
FLOOR: dict[AnomalyMetric, str] = {"cost_usd": "min_spend_usd", "requests": "min_requests"}
VALUE: dict[AnomalyMetric, str] = {"cost_usd": "total_cost_usd", "requests": "requests"}
_JUDGED = ("value", "normal", "ratio", "level", "spread", "basis", "baseline_days")
SETTINGS = ("enabled", "min_ratio", "min_deviations", "min_spend_usd", "min_requests")


def anomalies(
    usage: pl.DataFrame,
    today: date,
    covered: Iterable[date],
    config: AnomalyConfig,
    budgets: Sequence[Budget] = (),
) -> pl.DataFrame:
    """The anomalies of `today` (COLUMNS): cost before requests, the largest excess first.

    `usage` is the daily usage (`daily.checked` reads it) of today and the days before it,
    `covered` the days the history holds whole (today need not be one: its rows so far are
    judged). `budgets` are the configuration's, for the per-budget settings.
    """
    if not config.enabled:
        return pl.DataFrame(schema=SCHEMA)
    frame = daily.checked(usage).filter(pl.col("day") <= today)
    window = baseline.Window(config.window_days, config.min_baseline_days, config.seasonality)
    days = baseline.Days.of(today, covered, window)
    today_rows = frame.filter(pl.col("day") == today)
    names = today_rows.group_by("api_key_id").agg(pl.col("api_key_name").last())
    settings = key_settings(names, config, budgets)
    columns = [VALUE[metric] for metric in config.metrics]
    per_key = frame.group_by("api_key_id", "day").agg(pl.col(c).sum() for c in columns)
    per_model = frame.select("api_key_id", "model", "day", *columns)
    by_key = baseline.stats(per_key, ["api_key_id"], days, values=columns)
    by_model = baseline.stats(per_model, ["api_key_id", "model"], days, values=columns)
    found = []
    for metric in config.metrics:
        models = baseline.metric(by_model, ["api_key_id", "model"], VALUE[metric])
        keys = judge(baseline.metric(by_key, ["api_key_id"], VALUE[metric]), settings, metric)
        found.append(_with_drivers(_since(keys, per_key, days, metric), models))
        if config.models:
            judged = judge(models, settings, metric)
            found.append(_since(judged, per_model, days, metric))
    return (
        pl.concat([pl.DataFrame(schema=SCHEMA), *found], how="diagonal_relaxed")
        .drop("api_key_name")
        .join(names, on="api_key_id", how="left")
        .with_columns(pl.lit(today).alias("day"))
        .select(COLUMNS)
        .cast(SCHEMA)  # type: ignore[arg-type]
        .sort(
            ["metric", pl.col("value") - pl.col("normal").fill_null(0), "api_key_id", "model"],
            descending=[False, True, False, False],
            nulls_last=False,
        )
    )


def key_settings(
    keys: pl.DataFrame, config: AnomalyConfig, budgets: Sequence[Budget]
) -> pl.DataFrame:
    """api_key_id and each of SETTINGS for every key of `keys` (api_key_id, api_key_name):
    per setting, the first budget's override that selects the key, else `config`'s value."""
    overriding = [(i, b) for i, b in enumerate(budgets) if b.name in config.budgets]
    masks = selection.selections(budgets, keys) if overriding else keys.select("api_key_id")
    columns = []
    for setting in SETTINGS:
        chosen = [
            pl.when(pl.col(selection.mask(i))).then(pl.lit(value))
            for i, budget in overriding
            if (value := getattr(config.budgets[budget.name], setting)) is not None
        ]
        columns.append(pl.coalesce(*chosen, pl.lit(getattr(config, setting))).alias(setting))
    return masks.select("api_key_id", *columns)


def judge(stats: pl.DataFrame, settings: pl.DataFrame, metric: AnomalyMetric) -> pl.DataFrame:
    """The anomalous subjects of `stats` (`baseline.metric`'s columns), with their `level`
    and `ratio`."""
    subject = [c for c in ("api_key_id", "model") if c in stats.columns]
    normal, value = pl.col("normal"), pl.col("value")
    level = pl.max_horizontal(
        pl.col(FLOOR[metric]).cast(pl.Float64),
        pl.col("min_ratio") * normal,
        normal + pl.col("min_deviations") * pl.col("spread"),
    )
    return (
        stats.join(settings, on="api_key_id", how="inner")
        .filter(pl.col("enabled") & pl.col("basis").is_not_null())
        .with_columns(level.alias("level"))
        .filter(value.is_finite() & (value >= pl.col("level")) & (value > normal))
        .with_columns(
            pl.when(normal > 0).then(value / normal).alias("ratio"),
            pl.lit(metric).alias("metric"),
        )
        .select(*subject, "metric", *_JUDGED)
    )


def _since(
    judged: pl.DataFrame, observations: pl.DataFrame, days: baseline.Days, metric: AnomalyMetric
) -> pl.DataFrame:
    subject = [c for c in ("api_key_id", "model") if c in observations.columns]
    start = baseline.run_start(observations, judged, subject, days, value=VALUE[metric])
    return judged.join(start, on=subject, how="left")


def _with_drivers(keys: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    """Each anomalous key with the model of the largest excess over its own normal (a model
    without a baseline: all of today's value) and that excess's share of the positive ones."""
    excess = (
        models.join(keys.select("api_key_id"), on="api_key_id", how="semi")
        .with_columns((pl.col("value") - pl.col("normal").fill_null(0)).alias("_excess"))
        .sort(["api_key_id", "_excess", "model"], descending=[False, True, False])
        .group_by("api_key_id", maintain_order=True)
        .agg(
            pl.col("model").first().alias("driver_model"),
            (pl.col("_excess").first() / pl.col("_excess").clip(lower_bound=0).sum()).alias(
                "driver_share"
            ),
        )
        .with_columns(
            pl.when(pl.col("driver_share").is_finite() & (pl.col("driver_share") > 0))
            .then(pl.col("driver_share"))
            .alias("driver_share")
        )
    )
    return keys.join(excess, on="api_key_id", how="left")
