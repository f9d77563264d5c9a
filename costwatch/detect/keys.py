"""Keys nobody answers for: unowned spend, a key seen for the first time, a dormant key that
starts again.

    key_events(daily, today, covered, budgets, config) -> pl.DataFrame   one row per event

- `unowned`: a key that spends at least `min_spend_usd` today and that no budget selects but
  a catch-all. A catch-all is a `fallback: true` budget or one whose `keys` include a glob of
  nothing but `*` (`every-key`, the workspace pool): it takes every key, so it names no one.
  Whether a budget selects a key is `selection.selections`, the one rule of the budgets.
- `new`: a key with use today (a request or a cost) and none on any day of the history
  handed in, which must hold the `dormant_days` before today whole (else every key of a fresh
  store would be new).
- `dormant`: a key with use today, whose last use was more than `dormant_days` days ago, the
  days between all held.
Pure (polars); the budgets' globs are matched once per key in one `select`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta

import polars as pl

from costwatch import selection
from costwatch.config import Budget
from costwatch.config.detect import UnownedConfig
from costwatch.detect import daily

SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.String(),  # unowned | new | dormant
    "api_key_id": pl.String(),
    "api_key_name": pl.String(),
    "day": pl.Date(),
    "cost_usd": pl.Float64(),
    "requests": pl.Float64(),
    "last_seen": pl.Date(),  # the last day of use before today (dormant); else null
    "idle_days": pl.Int64(),  # days between last_seen and today (dormant); else null
}


def is_catch_all(budget: Budget) -> bool:
    """Whether `budget` takes keys without naming them: a fallback, or `*` among its keys."""
    return budget.fallback or any(set(pattern) == {"*"} for pattern in budget.keys)


def key_events(
    usage: pl.DataFrame,
    today: date,
    covered: Iterable[date],
    budgets: Sequence[Budget],
    config: UnownedConfig,
) -> pl.DataFrame:
    """The events of `today` (SCHEMA): unowned, then new, then dormant; the biggest spender
    first."""
    frame = daily.checked(usage).filter(pl.col("day") <= today)
    used = (pl.col("requests") > 0) | (pl.col("total_cost_usd") > 0)
    current = (
        frame.filter(pl.col("day") == today)
        .group_by("api_key_id")
        .agg(
            pl.col("api_key_name").last(),
            pl.col("total_cost_usd").sum().alias("cost_usd"),
            pl.col("requests").sum(),
        )
        .filter((pl.col("requests") > 0) | (pl.col("cost_usd") > 0))
    )
    last = (
        frame.filter((pl.col("day") < today) & used)
        .group_by("api_key_id")
        .agg(pl.col("day").max().alias("last_seen"))
    )
    current = current.join(last, on="api_key_id", how="left")
    held = _held(today, covered, config.dormant_days)
    parts = [_unowned(current, budgets, config) if config.enabled else None]
    if held and config.new_keys:
        parts.append(current.filter(pl.col("last_seen").is_null()).with_columns(_kind("new")))
    if held and config.dormant:
        cutoff = today - timedelta(days=config.dormant_days)
        parts.append(
            current.filter(pl.col("last_seen") < cutoff).with_columns(
                _kind("dormant"),
                (pl.lit(today) - pl.col("last_seen")).dt.total_days().alias("idle_days"),
            )
        )
    found = [part for part in parts if part is not None]
    return (
        pl.concat([pl.DataFrame(schema=SCHEMA), *found], how="diagonal_relaxed")
        .with_columns(
            pl.lit(today).alias("day"),
            pl.when(pl.col("kind") == "dormant").then(pl.col("last_seen")).alias("last_seen"),
        )
        .select(list(SCHEMA))
        .cast(SCHEMA)  # type: ignore[arg-type]
        .sort(
            [pl.col("kind").replace_strict(_ORDER, default=9), "cost_usd", "api_key_id"],
            descending=[False, True, False],
        )
    )


_ORDER = {"unowned": 0, "new": 1, "dormant": 2}


def _kind(name: str) -> pl.Expr:
    return pl.lit(name).alias("kind")


def _held(today: date, covered: Iterable[date], days: int) -> bool:
    """Whether the `days` days before today are all covered."""
    return len(daily.covered_before(today, covered, days)) == days


def _unowned(
    current: pl.DataFrame, budgets: Sequence[Budget], config: UnownedConfig
) -> pl.DataFrame:
    naming = [budget for budget in budgets if not is_catch_all(budget)]
    spending = current.filter(pl.col("cost_usd") >= config.min_spend_usd)
    if naming:
        masks = selection.selections(naming, spending)
        owned = pl.any_horizontal(pl.col(selection.mask(i)) for i in range(len(naming)))
        unowned = masks.filter(~owned).select("api_key_id")
        spending = spending.join(unowned, on="api_key_id", how="semi")
    return spending.with_columns(_kind("unowned"))
