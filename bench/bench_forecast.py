"""What a forecast from stored days costs a cycle, beside the linear forecast of the same run.

    python bench/bench_forecast.py [--keys 20000] [--models 50] [--days 14] [--runs 3]

The month-to-date usage is one row per key and model (keys x models, the 1,000,000-row export
at the defaults); every stored day has the same shape, so a day is the largest it can be. Two
budgets (per key with a per-model glob, and the workspace pool), limits set so that most keys
are forecast to overrun (the overrun instants are computed for every one). Measured in one
process: `budgets.evaluate` linear (no stored days) and from a `days`-day window, best of
`runs`; and `forecast.daily`, summing one stored day per key as `recent.read` does for each day
it has not read before (the daemon keeps the days between cycles; `check` reads all of them).
Reading the rows out of SQLite is the store's cost, not measured here.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from costwatch import budgets, forecast
from costwatch.config import parse_config
from costwatch.usage import SCHEMA

NOW = datetime(2026, 12, 20, 12, tzinfo=UTC)
CONFIG = """
    langdock: {api_key: x}
    schedule: {timezone: UTC}
    budgets:
      - {name: per-key, keys: "*", limits: {cost_usd: 600}, models: {"gpt-4o*": {cost_usd: 120}}}
      - {name: pool, keys: "*", scope: shared, limits: {cost_usd: 10000000}}
"""


@dataclass(frozen=True)
class Result:
    keys: int
    models: int
    days: int
    linear_seconds: float
    window_seconds: float
    day_seconds: float  # one stored day summed per key
    daily_rows: int  # rows a window holds once summed per day and key
    due: int  # forecasts due (each with its overrun instant)


def usage(keys: int, models: int, scale: float, seed: int) -> pl.DataFrame:
    """keys x models rows, spend spread by a fixed hash (no randomness across runs)."""
    grid = pl.DataFrame({"k": pl.int_range(keys, eager=True)}).join(
        pl.DataFrame({"m": pl.int_range(models, eager=True)}), how="cross"
    )
    spread = ((pl.col("k") * 7919 + pl.col("m") * 104729 + seed) % 1000) / 1000
    return grid.select(
        pl.format("key-{}", pl.col("k")).alias("api_key_id"),
        pl.format("name-{}", pl.col("k")).alias("api_key_name"),
        pl.when(pl.col("m") < models // 5)
        .then(pl.format("gpt-4o-{}", pl.col("m")))
        .otherwise(pl.format("model-{}", pl.col("m")))
        .alias("model"),
        (spread * 100 + 1).cast(pl.Int64).alias("requests"),
        (spread * scale).alias("total_cost_usd"),
        *(pl.lit(None, pl.Int64()).alias(column) for column in list(SCHEMA)[5:]),
    )


def best(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(keys: int = 20_000, models: int = 50, days: int = 14, runs: int = 3) -> Result:
    config = parse_config(textwrap.dedent(CONFIG))
    rules = budgets.rules(config, NOW)
    ranges = budgets.export_ranges(rules)
    # 19.5 days of the month spent at about $0.5 per key and model a day.
    frames = dict.fromkeys(ranges, usage(keys, models, 19.5, seed=1))
    day = usage(keys, models, 1.0, seed=2)
    today = NOW.date()
    window = [today - timedelta(days=n) for n in range(days, 0, -1)]

    def one_day(on: date) -> forecast.Daily:
        return forecast.daily(day.with_columns(pl.lit(on).alias("day")), [on], ["gpt-4o*"])

    day_seconds = best(runs, lambda: one_day(window[-1]))
    daily = forecast.combine([one_day(on) for on in window], ["gpt-4o*"])
    histories = dict.fromkeys(ranges, daily)
    budgets.evaluate(rules, frames, NOW)  # warm up polars' thread pool and caches
    linear = best(runs, lambda: budgets.evaluate(rules, frames, NOW))
    windowed = best(runs, lambda: budgets.evaluate(rules, frames, NOW, histories))
    findings = budgets.evaluate(rules, frames, NOW, histories).findings
    return Result(
        keys=keys,
        models=models,
        days=days,
        linear_seconds=linear,
        window_seconds=windowed,
        day_seconds=day_seconds,
        daily_rows=daily.sums.height,
        due=int(findings.get_column("forecast_due").sum()),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.keys, args.models, args.days, args.runs)
    print(
        f"{result.keys:,} keys x {result.models} models, {result.days}-day window: "
        f"evaluate {result.window_seconds:.3f} s (linear {result.linear_seconds:.3f} s, "
        f"{result.due:,} forecasts due); a stored day summed per key {result.day_seconds:.3f} s; "
        f"the window held as {result.daily_rows:,} rows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
