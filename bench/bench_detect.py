"""How fast are the detectors over a large workspace's daily history?

    python bench/bench_detect.py [--keys 20000] [--models 50] [--per-key 5] [--days 28] [--runs 3]

Builds in memory the daily usage a store would hand over: `--keys` keys over `--models`
models, each key using `--per-key` of them every day, for `--days` days and today (20,000 x 5
x 29 = 2.9 million rows by default); one key in a hundred spends 8x its normal today. Then,
best of `--runs`, the operation only:

  (a) baseline   polars' bare `group_by(api_key_id, model).agg(median(cost))` over the
                 history: one pass the least any per-subject baseline needs
  (b) costwatch  `detect.anomalies` (keys and key x model, cost and requests)
  (c) costwatch  `detect.unit_costs` and `detect.key_events`, for context

Prints a table; the project holds (b) to at most 10x (a). Numbers only: no assertions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import date, timedelta

import polars as pl

from costwatch.config import Budget, Limits
from costwatch.config.detect import AnomalyConfig, UnitCostConfig, UnownedConfig
from costwatch.detect import anomalies, key_events, unit_costs

TODAY = date(2026, 11, 30)


def history(keys: int, models: int, per_key: int, days: int) -> pl.DataFrame:
    """The daily frame: key k uses models k, k+1, ... (mod `models`) at a steady cost."""
    grid = (
        pl.DataFrame({"k": range(keys)}, schema={"k": pl.Int64()})
        .join(pl.DataFrame({"j": range(per_key)}, schema={"j": pl.Int64()}), how="cross")
        .join(pl.DataFrame({"back": range(days + 1)}, schema={"back": pl.Int64()}), how="cross")
    )
    runaway = (pl.col("back") == 0) & (pl.col("k") % 100 == 0)
    base = 1 + (pl.col("k") % 7).cast(pl.Float64)
    return grid.select(
        (pl.lit(TODAY) - pl.duration(days=pl.col("back"))).alias("day"),
        pl.format("id-{}", pl.col("k")).alias("api_key_id"),
        pl.format("key-{}", pl.col("k")).alias("api_key_name"),
        pl.format("model-{}", (pl.col("k") + pl.col("j")) % models).alias("model"),
        pl.when(runaway).then(800).otherwise(100).cast(pl.Int64).alias("requests"),
        pl.when(runaway).then(base * 8).otherwise(base).alias("total_cost_usd"),
        *(pl.lit(None, dtype=pl.Int64).alias(c) for c in ("sum_prompt_tokens",)),
    )


def best(runs: int, operation: Callable[[], object]) -> float:
    seconds = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        operation()
        seconds = min(seconds, time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--per-key", type=int, default=5)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    frame = history(args.keys, args.models, args.per_key, args.days)
    covered = [TODAY - timedelta(days=back) for back in range(1, args.days + 1)]
    budgets = (Budget(name="team", keys=("key-1*",), limits=Limits(cost_usd=100)),)
    found = anomalies(frame, TODAY, covered, AnomalyConfig(), budgets)
    rows = [
        (
            "(a) polars group_by median",
            best(
                args.runs,
                lambda: frame.group_by("api_key_id", "model").agg(
                    pl.col("total_cost_usd").median()
                ),
            ),
        ),
        (
            "(b) detect.anomalies",
            best(args.runs, lambda: anomalies(frame, TODAY, covered, AnomalyConfig(), budgets)),
        ),
        (
            "(c) detect.unit_costs",
            best(args.runs, lambda: unit_costs(frame, TODAY, covered, UnitCostConfig())),
        ),
        (
            "(c) detect.key_events",
            best(
                args.runs,
                lambda: key_events(frame, TODAY, covered, budgets, UnownedConfig(dormant_days=7)),
            ),
        ),
    ]
    print(
        f"{frame.height:,} rows: {args.keys:,} keys x {args.per_key} of {args.models} models x "
        f"{args.days + 1} days; {found.height:,} anomalies found "
        f"({args.keys // 100:,} keys run away, x 2 metrics, and their models)"
    )
    base = rows[0][1]
    print(f"{'operation':<30} {'seconds':>8} {'vs (a)':>8}")
    for name, seconds in rows:
        print(f"{name:<30} {seconds:8.2f} {seconds / base:7.1f}x")
    print("target: (b) <= 10x (a)")


if __name__ == "__main__":
    main()
