"""What an alert's readers are told beside its numbers: the subject's spend and requests in the
period, all models, and its top models by spend. Pure (polars).

Per-key context comes from one per-key aggregation per export range (`Usage.per_key` and
`Usage.top_models`, computed once per export and kept on it), not a scan per alert: a storm of
5,000 alerts must not mean 5,000 scans. A shared pool's comes from its keys' rows, all pools of
one export range in one pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import polars as pl

from costwatch import alerts, budgets
from costwatch.selection import subject_rows
from costwatch.usage import Usage

__all__ = ["with_context"]

# An alert subject's spend, requests and top (model, spend) pairs.
_Context = tuple[float, float, tuple[tuple[str, float], ...]]


def with_context(
    plan: alerts.Plan,
    rules: Sequence[budgets.Rule],
    usages: Mapping[str, Usage],
    selected: Mapping[str, pl.DataFrame] | None = None,
) -> alerts.Plan:
    """`plan` with each alert's spend, requests and top models, for the people who read it;
    `selected` is the evaluation's (`budgets.Evaluation.selected`), when at hand."""
    by_name = {rule.name: rule for rule in rules}
    per_key: dict[str, dict[str, _Context]] = {}
    pools: dict[str, _Context] = {}

    def key_context(
        range_key: str,
    ) -> dict[str, _Context]:
        if range_key not in per_key:
            loaded = usages[range_key]
            top: dict[str, list[tuple[str, float]]] = {}
            for key_id, model, cost in (
                loaded.top_models(3).select("api_key_id", "model", "total_cost_usd").iter_rows()
            ):
                top.setdefault(key_id, []).append((model, float(cost)))
            per_key[range_key] = {
                key_id: (float(cost), float(requests), tuple(top.get(key_id, ())))
                for key_id, cost, requests in loaded.per_key.select(
                    "api_key_id", "total_cost_usd", "requests"
                ).iter_rows()
            }
        return per_key[range_key]

    def pool_context(rule: budgets.Rule) -> _Context:
        if rule.name not in pools:
            range_key = budgets.export_key(rule.period)
            keys = selected.get(range_key) if selected is not None else None
            if keys is not None and rule.name in keys.columns:
                pools.update(_pools_context(plan, by_name, range_key, usages[range_key], keys))
        if rule.name not in pools:  # no selections at hand: this pool's rows on their own
            frame = usages[budgets.export_key(rule.period)].frame
            rows = subject_rows(rule.budget, [r.budget for r in rules], frame, None)
            pools[rule.name] = _pool_context(
                rows.group_by("model").agg(
                    pl.col("total_cost_usd").sum(), pl.col("requests").cast(pl.Float64).sum()
                ),
                "",
            )
        return pools[rule.name]

    def enrich(alert: alerts.Alert) -> alerts.Alert:
        rule = by_name[alert.budget]
        if alert.api_key_id is None:
            spend, requests, top = pool_context(rule)
        else:
            context = key_context(budgets.export_key(rule.period))
            spend, requests, top = context.get(alert.api_key_id, (0.0, 0.0, ()))
        return dataclasses.replace(alert, spend_usd=spend, requests=requests, top_models=top)

    return dataclasses.replace(
        plan,
        alerts=tuple(enrich(a) for a in plan.alerts),
        silenced=tuple(enrich(a) for a in plan.silenced),
    )


def _pools_context(
    plan: alerts.Plan,
    by_name: Mapping[str, budgets.Rule],
    range_key: str,
    loaded: Usage,
    selected: pl.DataFrame,
) -> dict[str, _Context]:
    """Spend, requests and top models of every alerted pool of one export range, in one pass:
    per row a membership flag for each pool (no join that copies the export), summed per
    model."""
    names = sorted(
        {
            a.budget
            for a in (*plan.alerts, *plan.silenced)
            if a.api_key_id is None
            and budgets.export_key(by_name[a.budget].period) == range_key
            and a.budget in selected.columns
        }
    )
    if not names:
        return {}
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
    return {name: _pool_context(per_model, column) for name, column in columns.items()}


def _pool_context(per_model: pl.DataFrame, column: str) -> _Context:
    """From spend and requests per model (columns `total_cost_usd` and `requests`, or
    `{column}_cost`, `{column}_requests` and `{column}_rows` for one of several pools)."""
    if column:
        per_model = per_model.filter(pl.col(f"{column}_rows")).select(
            "model",
            pl.col(f"{column}_cost").alias("total_cost_usd"),
            pl.col(f"{column}_requests").alias("requests"),
        )
    top = per_model.sort(["total_cost_usd", "model"], descending=[True, False]).head(3)
    return (
        float(per_model["total_cost_usd"].sum()),
        float(per_model["requests"].sum()),
        tuple((m, float(c)) for m, c in top.select("model", "total_cost_usd").iter_rows()),
    )
