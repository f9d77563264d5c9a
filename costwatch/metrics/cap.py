"""One bound over every family of the snapshot part: `metrics.max_series`. Pure (polars).

Series counted: per key (spend, requests, one per token kind the key reports), per key and
model (the same per row), per budget subject (limit, used ratio, and forecast ratio where
there is one). The shared pools' budget series and `costwatch_budgets_unevaluated` are set by
the configuration and always kept. The rest is ranked by spend: each key as one block (its
per-key series and its budget series together), each key x model row on its own; a key's block
ranks before its rows (its spend is their sum). The longest prefix is kept whose series, with
the folds it needs, fit:

- a kept key with rows left out gets one `model="other"` row, their sum (a real model named
  "other" of that key is merged into it);
- the keys left out are summed into one key `api_key_id="other"`, `api_key_name="(other)"`
  (per key, and one key x model row with `model="other"`), and their budget series into one
  subject "(other)" per budget, metric and model: the limit, and the highest used and forecast
  ratio among them, so a rule on the ratio still sees the worst of them.

Every family's sum stays the workspace's; `Bounded.truncated` counts the series the uncapped
part would have had that are not served on their own (folded into an "other" or dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

__all__ = ["OTHER_KEY", "OTHER_MODEL", "OTHER_NAME", "Bounded", "bound", "sum_per_key"]

OTHER_MODEL = "other"  # the model label of a key's folded rows
OTHER_KEY = "other"  # the api_key_id of the keys folded together
OTHER_NAME = "(other)"  # their api_key_name, and the subject of their budget series
_SIZE, _SPEND, _BLOCK, _LAST = "__size__", "__spend__", "__block__", "__last__"
_BUDGET_VALUES = ("limit", "ratio", "forecast_ratio")


@dataclass(frozen=True)
class Bounded:
    """What the snapshot part renders: key x model rows, per-key rows, budget findings."""

    rows: pl.DataFrame
    keys: pl.DataFrame
    findings: pl.DataFrame
    truncated: int  # series not served on their own


def sum_per_key(rows: pl.DataFrame, tokens: Sequence[str]) -> pl.DataFrame:
    """Rows summed per key; a token sum is null only where every row's count is."""
    sums = [pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in tokens]
    return rows.group_by("api_key_id", maintain_order=True).agg(
        pl.col("api_key_name").last(), pl.col("requests", "total_cost_usd").sum(), *sums
    )


def bound(
    usage: pl.DataFrame,
    findings: pl.DataFrame,
    max_series: int,
    tokens: Sequence[str],
    fixed: int = 0,
) -> Bounded:
    """At most `max_series` series (beyond the shared pools' and `fixed` others) from the
    key x model `usage` (labels filled, the `tokens` columns), their per-key sums and the
    budget `findings`, folded as the module docstring says."""
    size = _size(tokens)
    keys = sum_per_key(usage, tokens)
    shared = findings.filter(pl.col("api_key_id").is_null())
    own = findings.filter(pl.col("api_key_id").is_not_null())
    budget_series = own.group_by("api_key_id").agg(_budget_size().sum().alias("_budget"))
    blocks = (
        keys.join(budget_series, on="api_key_id", how="left", maintain_order="left")
        .select(
            "api_key_id",
            pl.lit(None, pl.String()).alias("model"),
            pl.col("total_cost_usd").alias(_SPEND),
            (size + pl.col("_budget").fill_null(0)).alias(_SIZE),
            pl.lit(1).alias(_BLOCK),
        )
        .with_columns(pl.col(_SIZE).cast(pl.Int64))
    )
    rows = usage.select(
        "api_key_id",
        "model",
        pl.col("total_cost_usd").alias(_SPEND),
        size.cast(pl.Int64).alias(_SIZE),
        pl.lit(0).alias(_BLOCK),
    )
    kept_series = fixed + int(shared.select(_budget_size().sum()).item() or 0)
    full = kept_series + int(blocks[_SIZE].sum()) + int(rows[_SIZE].sum())
    if full <= max_series:
        return Bounded(usage, keys, findings, 0)
    widest = 2 + sum(1 for c in tokens if usage[c].null_count() < usage.height)
    folds = own.group_by("budget", "metric", "model").agg(
        *(pl.col(c).is_not_null().any().cast(pl.Int64) for c in _BUDGET_VALUES)
    )
    reserve = 2 * widest + int(folds.select(pl.sum_horizontal(_BUDGET_VALUES).sum()).item() or 0)
    kept = _kept_units(pl.concat([blocks, rows]), max_series - kept_series - reserve, widest)
    served = kept.filter(pl.col(_BLOCK) == 1).get_column("api_key_id")
    kept_rows = kept.filter(pl.col(_BLOCK) == 0).select("api_key_id", "model")
    folded = _folded(
        usage, keys, shared=shared, own=own, served=served, kept_rows=kept_rows, tokens=tokens
    )
    individual = kept_series + int(folded.individual)
    return Bounded(folded.rows, folded.keys, folded.findings, full - individual)


def _size(tokens: Sequence[str]) -> pl.Expr:
    """Series of one key or key x model row: spend, requests and each token kind it reports."""
    if not tokens:
        return pl.lit(2, pl.Int64())
    return 2 + pl.sum_horizontal(pl.col(c).is_not_null().cast(pl.Int64) for c in tokens)


def _budget_size() -> pl.Expr:
    return pl.sum_horizontal(pl.col(c).is_not_null().cast(pl.Int64) for c in _BUDGET_VALUES)


def _kept_units(units: pl.DataFrame, room: int, widest: int) -> pl.DataFrame:
    """The longest prefix of the units by spend whose series, plus one "other" row per kept
    key with rows left out, fit in `room`."""
    ranked = units.sort(
        [_SPEND, _BLOCK, "api_key_id", "model"],
        descending=[True, True, False, False],
        nulls_last=False,
    ).with_row_index("_rank")
    rank, block = pl.col("_rank").cast(pl.Int64), pl.col(_BLOCK)
    last_row = (block == 0) & (rank == rank.filter(block == 0).max().over("api_key_id"))
    open_keys = block.cum_sum() - last_row.cast(pl.Int64).cum_sum()
    series = pl.col(_SIZE).cum_sum() + open_keys * widest
    count = ranked.select((series.cum_max() <= room).sum()).item() if room > 0 else 0
    return ranked.head(int(count))


@dataclass(frozen=True)
class _Folded:
    rows: pl.DataFrame
    keys: pl.DataFrame
    findings: pl.DataFrame
    individual: int  # series served on their own, beyond the shared pools' and fixed ones


def _folded(
    usage: pl.DataFrame,
    keys: pl.DataFrame,
    *,
    shared: pl.DataFrame,
    own: pl.DataFrame,
    served: pl.Series,
    kept_rows: pl.DataFrame,
    tokens: Sequence[str],
) -> _Folded:
    """The frames served, with the folds, for the `served` keys and `kept_rows`."""
    mine = pl.col("api_key_id").is_in(served.implode())
    on = ["api_key_id", "model"]
    rows = usage.filter(mine)
    kept = rows.join(kept_rows, on=on, how="semi", maintain_order="left")
    left_out = rows.join(kept_rows, on=on, how="anti", maintain_order="left")
    clash = (pl.col("model") == OTHER_MODEL) & pl.col("api_key_id").is_in(
        left_out.get_column("api_key_id").unique().implode()
    )
    left_out = pl.concat([left_out, kept.filter(clash)])
    kept = kept.filter(~clash)
    others = sum_per_key(left_out, tokens).with_columns(pl.lit(OTHER_MODEL).alias("model"))
    out_rows, out_keys = [kept, others.select(kept.columns)], [keys.filter(mine)]
    out_findings = [shared, own.filter(mine)]
    size = _size(tokens)
    individual = sum(
        int(frame.select(series.sum()).item() or 0)
        for frame, series in (
            (out_keys[0], size),
            (kept, size),
            (out_findings[1], _budget_size()),
        )
    )
    gone = usage.filter(~mine)
    if gone.height:
        rest = sum_per_key(gone.with_columns(pl.lit(OTHER_KEY).alias("api_key_id")), tokens)
        rest = rest.with_columns(pl.lit(OTHER_NAME).alias("api_key_name"))
        out_keys.append(rest.select(keys.columns))
        out_rows.append(rest.with_columns(pl.lit(OTHER_MODEL).alias("model")).select(kept.columns))
        out_findings.append(_budget_fold(own.filter(~mine)))
    return _Folded(pl.concat(out_rows), pl.concat(out_keys), pl.concat(out_findings), individual)


def _budget_fold(folded: pl.DataFrame) -> pl.DataFrame:
    """The folded keys' budget findings: one subject "(other)" per budget, metric and model,
    with the highest ratios among them."""
    group = ["budget", "scope", "metric", "model", "period"]
    aggs = []
    for column in folded.columns:
        if column in group:
            continue
        if column == "api_key_id":
            aggs.append(pl.lit(OTHER_KEY).alias(column))
        elif column == "api_key_name":
            aggs.append(pl.lit(OTHER_NAME).alias(column))
        elif column in (*_BUDGET_VALUES, "used"):
            aggs.append(pl.col(column).max())
        else:
            aggs.append(pl.col(column).first())
    summed = folded.group_by(group, maintain_order=True).agg(aggs)
    return summed.select(folded.columns)
