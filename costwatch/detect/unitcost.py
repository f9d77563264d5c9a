"""Unit-cost drift: a model's price as the workspace pays it, today against its trailing days.

    unit_costs(daily, today, covered, config) -> pl.DataFrame   one row per model found

Per model across all keys and per day: cost per request, and cost per 1k tokens over the rows
that report tokens. The normal is the median of those rates over the covered days of the
window with at least `min_requests` requests (a day of 3 requests says nothing about a price).
Per 1k tokens is the price itself, so it is compared where both today and `min_baseline_days`
baseline days report tokens; else per request (which also moves with prompt sizes, hence the
wide default `min_change`: double or half).

A row of `kind`:
- `drift`: today's rate is at least (1 + min_change) x the normal, or at most its
  1 / (1 + min_change): a price change, or another model behind the same name;
- `zero_cost`: at least `min_requests` of today's requests are on rows with requests and $0
  cost, for a model whose normal costs money (or that has no baseline yet): a model the
  workspace is not billed for, or rows priced at nothing. It takes the place of a drift.
Pure (polars); one group_by per step, whatever the number of models.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import polars as pl

from costwatch.config.detect import UnitCostConfig
from costwatch.detect import daily

SCHEMA: dict[str, pl.DataType] = {
    "model": pl.String(),
    "day": pl.Date(),
    "kind": pl.String(),  # drift | zero_cost
    "basis": pl.String(),  # per request | per 1k tokens
    "requests": pl.Float64(),
    "cost_usd": pl.Float64(),
    "rate": pl.Float64(),
    "normal": pl.Float64(),
    "ratio": pl.Float64(),
    "baseline_days": pl.Int64(),
    "zero_cost_requests": pl.Float64(),
    "zero_cost_keys": pl.Int64(),
}
PER_REQUEST, PER_1K_TOKENS = "per request", "per 1k tokens"


def unit_costs(
    usage: pl.DataFrame, today: date, covered: Iterable[date], config: UnitCostConfig
) -> pl.DataFrame:
    """The models whose unit cost moved far today (SCHEMA), zero-cost first, then the
    largest move."""
    if not config.enabled:
        return pl.DataFrame(schema=SCHEMA)
    per_day = _per_model_day(daily.checked(usage).filter(pl.col("day") <= today))
    window = daily.covered_before(today, covered, config.window_days)
    enough = pl.col("requests") >= config.min_requests
    normals = (
        per_day.filter(pl.col("day").is_in(pl.Series(window, dtype=pl.Date()).implode()) & enough)
        .group_by("model")
        .agg(
            pl.col("rate").median().alias("_normal_request"),
            pl.len().alias("_request_days"),
            pl.col("token_rate").median().alias("_normal_token"),
            pl.col("token_rate").count().alias("_token_days"),
        )
    )
    current = per_day.filter((pl.col("day") == today) & enough).join(
        normals, on="model", how="left"
    )
    return _judged(current, config).select(list(SCHEMA)).cast(SCHEMA)  # type: ignore[arg-type]


def _per_model_day(frame: pl.DataFrame) -> pl.DataFrame:
    """model, day, requests, cost_usd, rate, token_rate (null without tokens),
    zero_cost_requests, zero_cost_keys."""
    reported = pl.col("tokens").is_not_null()
    unpriced = (pl.col("requests") > 0) & (pl.col("total_cost_usd") == 0)
    return (
        frame.group_by("model", "day")
        .agg(
            pl.col("requests").sum(),
            pl.col("total_cost_usd").sum().alias("cost_usd"),
            pl.col("total_cost_usd").filter(reported).sum().alias("_token_cost"),
            pl.col("tokens").sum().alias("_tokens"),
            pl.col("requests").filter(unpriced).sum().alias("zero_cost_requests"),
            pl.col("api_key_id").filter(unpriced).n_unique().alias("zero_cost_keys"),
        )
        .with_columns(
            pl.when(pl.col("requests") > 0)
            .then(pl.col("cost_usd") / pl.col("requests"))
            .alias("rate"),
            pl.when(pl.col("_tokens") > 0)
            .then(pl.col("_token_cost") / pl.col("_tokens") * 1000)
            .alias("token_rate"),
        )
    )


def _judged(current: pl.DataFrame, config: UnitCostConfig) -> pl.DataFrame:
    by_tokens = (pl.col("_token_days").fill_null(0) >= config.min_baseline_days) & pl.col(
        "token_rate"
    ).is_not_null()
    days = pl.when(by_tokens).then(pl.col("_token_days")).otherwise(pl.col("_request_days"))
    rate = pl.when(by_tokens).then(pl.col("token_rate")).otherwise(pl.col("rate"))
    normal = pl.when(by_tokens).then(pl.col("_normal_token")).otherwise(pl.col("_normal_request"))
    judged = current.with_columns(
        pl.when(by_tokens)
        .then(pl.lit(PER_1K_TOKENS))
        .otherwise(pl.lit(PER_REQUEST))
        .alias("basis"),
        days.fill_null(0).cast(pl.Int64).alias("baseline_days"),
        rate.alias("rate"),
        normal.alias("normal"),
    ).with_columns(
        pl.when(pl.col("normal") > 0).then(pl.col("rate") / pl.col("normal")).alias("ratio")
    )
    has_baseline = pl.col("baseline_days") >= config.min_baseline_days
    ratio, far = pl.col("ratio"), 1 + config.min_change
    drift = has_baseline & ((ratio >= far) | (ratio <= 1 / far)) & ratio.is_finite()
    costs_money = ~has_baseline | (pl.col("_normal_request") > 0)
    zero = (pl.col("zero_cost_requests") >= config.min_requests) & costs_money
    return (
        judged.with_columns(
            pl.when(zero).then(pl.lit("zero_cost")).when(drift).then(pl.lit("drift")).alias("kind")
        )
        .filter(pl.col("kind").is_not_null())
        .sort(
            [pl.col("kind") == "drift", (ratio.log().abs()), "model"],
            descending=[False, True, False],
        )
    )
