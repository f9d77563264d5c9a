"""What an alert's readers are told beside its numbers: the subject's spend and requests in the
period, all models, and its top models by spend. Pure (polars).

Joined onto the plan's alert frames (`alerts.Rows`), per export range: a key's context from
one per-key aggregation (`Usage.per_key` and `Usage.top_models`, computed once per export and
kept on it), a shared pool's from its keys' rows, all pools of one range in one pass. A storm
of 30,000 alerts is a join, not 30,000 lookups and copies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from costwatch import alerts, budgets
from costwatch.alerts import ALERT_SCHEMA, Alert, Rows
from costwatch.selection import subject_rows
from costwatch.usage import Usage

__all__ = ["with_context"]

_CONTEXT = ("spend_usd", "requests", "top_models")
_TOP = ALERT_SCHEMA["top_models"]
_RANGE = "_range"


def with_context(
    plan: alerts.Plan,
    rules: Sequence[budgets.Rule],
    usages: Mapping[str, Usage],
    selected: Mapping[str, pl.DataFrame] | None = None,
) -> alerts.Plan:
    """`plan` with each alert's spend, requests and top models, for the people who read it;
    `selected` is the evaluation's (`budgets.Evaluation.selected`), when at hand."""
    by_name = {rule.name: rule for rule in rules}
    frames = [alerts.alert_frame(plan.alerts), alerts.alert_frame(plan.silenced)]
    ranges = pl.DataFrame(
        {"budget": list(by_name), _RANGE: [budgets.export_key(r.period) for r in rules]},
        schema={"budget": pl.String(), _RANGE: pl.String()},
    )
    keyed = [
        frame.with_row_index("_order").join(ranges, on="budget", how="left") for frame in frames
    ]
    both = pl.concat(keyed, how="vertical")
    contexts = []
    for range_key in both.get_column(_RANGE).unique().drop_nulls().to_list():
        mine = both.filter(pl.col(_RANGE) == range_key)
        contexts.append(_key_context(mine, usages[range_key]))
        pool_names = mine.filter(pl.col("api_key_id").is_null()).get_column("budget").unique()
        if pool_names.len():
            names = sorted(pool_names.to_list())
            contexts.append(_pool_contexts(names, by_name, range_key, usages, selected))
    enriched = [_enrich(frame, contexts) for frame in keyed]
    return alerts.Plan(
        alerts=Rows(enriched[0], Alert),
        silenced=Rows(enriched[1], Alert),
        ledger=plan.ledger,
    )


def _enrich(frame: pl.DataFrame, contexts: list[pl.DataFrame]) -> pl.DataFrame:
    """`frame` (numbered, with its range) with the context columns from `contexts`, each
    keyed by (range, budget or None, api_key_id or None): keys by id, pools by budget."""
    keys = [c for c in contexts if "api_key_id" in c.columns]
    pools = [c for c in contexts if "budget" in c.columns]
    out = frame.drop(_CONTEXT)
    if keys:
        out = out.join(pl.concat(keys, how="vertical"), on=[_RANGE, "api_key_id"], how="left")
    else:
        out = out.with_columns(_empty_context())
    if pools:
        pooled = pl.concat(pools, how="vertical").rename({c: f"_pool_{c}" for c in _CONTEXT})
        out = out.join(pooled, on=[_RANGE, "budget"], how="left").with_columns(
            pl.when(pl.col("api_key_id").is_null())
            .then(pl.col(f"_pool_{c}"))
            .otherwise(pl.col(c))
            .alias(c)
            for c in _CONTEXT
        )
    return (
        out.sort("_order")
        .with_columns(
            pl.col("spend_usd", "requests").fill_null(0.0), pl.col("top_models").fill_null([])
        )
        .select(pl.col(name).cast(dtype) for name, dtype in ALERT_SCHEMA.items())
    )


def _empty_context() -> list[pl.Expr]:
    return [
        pl.lit(None, pl.Float64()).alias("spend_usd"),
        pl.lit(None, pl.Float64()).alias("requests"),
        pl.lit(None, _TOP).alias("top_models"),
    ]


def _key_context(alerted: pl.DataFrame, loaded: Usage) -> pl.DataFrame:
    """Per alerted key of one range: its spend, requests and top 3 (model, spend)."""
    keys = alerted.get_column("api_key_id").drop_nulls().unique().to_list()
    range_key = alerted.get_column(_RANGE)[0]
    top = (
        loaded.top_models(3, keys)
        .group_by("api_key_id", maintain_order=True)
        .agg(pl.struct(pl.col("model"), pl.col("total_cost_usd").alias("cost")).alias("top"))
    )
    return (
        loaded.per_key.lazy()
        .filter(pl.col("api_key_id").is_in(keys))
        .select(
            pl.lit(range_key).alias(_RANGE),
            "api_key_id",
            pl.col("total_cost_usd").cast(pl.Float64).alias("spend_usd"),
            pl.col("requests").cast(pl.Float64).alias("requests"),
        )
        .join(top.lazy(), on="api_key_id", how="left")
        .rename({"top": "top_models"})
        .collect()
    )


def _pool_contexts(
    names: list[str],
    by_name: Mapping[str, budgets.Rule],
    range_key: str,
    usages: Mapping[str, Usage],
    selected: Mapping[str, pl.DataFrame] | None,
) -> pl.DataFrame:
    """Per alerted pool of one range: range, budget and the context columns."""
    loaded = usages[range_key]
    keys = selected.get(range_key) if selected is not None else None
    chosen = [name for name in names if keys is not None and name in keys.columns]
    per_model: dict[str, pl.DataFrame] = {}
    if chosen and keys is not None:
        per_model.update(_pools_per_model(chosen, loaded, keys))
    for name in names:
        if name not in per_model:  # no selections at hand: this pool's rows on their own
            rule = by_name[name]
            rows = subject_rows(
                rule.budget, [r.budget for r in by_name.values()], loaded.frame, None
            )
            per_model[name] = rows.group_by("model").agg(
                pl.col("total_cost_usd").sum(), pl.col("requests").cast(pl.Float64).sum()
            )
    return pl.DataFrame(
        [(range_key, name, *_pool_context(per_model[name])) for name in names],
        schema={
            _RANGE: pl.String(),
            "budget": pl.String(),
            "spend_usd": pl.Float64(),
            "requests": pl.Float64(),
            "top_models": _TOP,
        },
        orient="row",
    )


def _pools_per_model(
    names: list[str], loaded: Usage, selected: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """Spend and requests per model of every pool in `names`, in one pass: per row a
    membership flag for each pool (no join that copies the export), summed per model."""
    columns = {name: f"_pool_{i}" for i, name in enumerate(names)}
    members = {
        column: selected.filter(pl.col(name)).get_column("api_key_id")
        for name, column in columns.items()
    }
    in_pool = [pl.col("api_key_id").is_in(keys).alias(c) for c, keys in members.items()]
    per_model = (
        loaded.frame.lazy()
        .select("model", "total_cost_usd", "requests", *in_pool)
        .group_by("model")
        .agg(
            expr
            for column in columns.values()
            for expr in (
                pl.col("total_cost_usd").filter(pl.col(column)).sum().alias(f"{column}_cost"),
                pl.col("requests")
                .cast(pl.Float64)  # a float sum cannot wrap around
                .filter(pl.col(column))
                .sum()
                .alias(f"{column}_requests"),
                pl.col(column).any().alias(f"{column}_rows"),
            )
        )
        .collect()
    )
    return {
        name: per_model.filter(pl.col(f"{column}_rows")).select(
            "model",
            pl.col(f"{column}_cost").alias("total_cost_usd"),
            pl.col(f"{column}_requests").alias("requests"),
        )
        for name, column in columns.items()
    }


def _pool_context(
    per_model: pl.DataFrame,
) -> tuple[float, float, list[dict[str, str | float]]]:
    """Spend, requests and top 3 models of a pool, from its spend and requests per model."""
    top = per_model.sort(["total_cost_usd", "model"], descending=[True, False]).head(3)
    return (
        float(per_model["total_cost_usd"].sum()),
        float(per_model["requests"].sum()),
        [
            {"model": m, "cost": float(c)}
            for m, c in top.select("model", "total_cost_usd").iter_rows()
        ],
    )
