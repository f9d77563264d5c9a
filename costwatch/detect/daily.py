"""The daily usage the detectors read, checked once: a store's `usage_by_day` frame.

One row per day x key x model (`usage.SCHEMA` plus a `day` Date column); a day x key x model
given twice is summed. `checked` refuses what no detector may judge (a column missing, a
null day, key or count, a count or cost that is negative or not finite) with a `UsageError`
naming the column, never a guess. A day without rows is a day without use only when it is
*covered* (the store holds that whole day): the detectors take the covered days separately and
never read a missing day as $0. Pure (polars).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import polars as pl

from costwatch.errors import UsageError

REQUIRED: dict[str, tuple[type[pl.DataType], ...]] = {
    "day": (pl.Date,),
    "api_key_id": (pl.String,),
    "api_key_name": (pl.String,),
    "model": (pl.String,),
    "requests": (pl.Int64, pl.Int32, pl.UInt32, pl.UInt64, pl.Float64),
    "total_cost_usd": (pl.Float64, pl.Float32, pl.Int64),
}
PROMPT, COMPLETION = "sum_prompt_tokens", "sum_completion_tokens"
COLUMNS = ("day", "api_key_id", "api_key_name", "model", "requests", "total_cost_usd", "tokens")


def checked(daily: pl.DataFrame) -> pl.DataFrame:
    """`daily` as the detectors read it: COLUMNS, counts and cost as floats (a float sum never
    wraps around), `tokens` prompt plus completion where reported (else null), one row per day
    x key x model. A `UsageError` names the first column that cannot be trusted."""
    for column, types in REQUIRED.items():
        if column not in daily.columns:
            raise UsageError(f"the daily usage has no {column} column", column=column)
        if not isinstance(daily.schema[column], types):
            raise UsageError(
                f"the daily usage's {column} column is {daily.schema[column]}", column=column
            )
    frame = daily.select(
        pl.col("day"),
        pl.col("api_key_id"),
        pl.col("api_key_name").fill_null(""),
        pl.col("model"),
        pl.col("requests").cast(pl.Float64),
        pl.col("total_cost_usd").cast(pl.Float64),
        _tokens(daily).alias("tokens"),
    )
    _refuse_bad_values(frame)
    # Distinct hashes are distinct rows (a store's frame has no repeats); equal ones, a repeat
    # or a collision, are summed by the group_by, which is right either way.
    identity = pl.struct("day", "api_key_id", "model").hash()
    if frame.select(identity.n_unique() == pl.len()).item():
        return frame
    return (
        frame.group_by("day", "api_key_id", "model", maintain_order=True)
        .agg(
            pl.col("api_key_name").last(),
            pl.col("requests").sum(),
            pl.col("total_cost_usd").sum(),
            pl.when(pl.col("tokens").count() > 0).then(pl.col("tokens").sum()).alias("tokens"),
        )
        .select(COLUMNS)
    )


def _tokens(daily: pl.DataFrame) -> pl.Expr:
    if PROMPT not in daily.columns and COMPLETION not in daily.columns:
        return pl.lit(None, dtype=pl.Float64)
    parts = [pl.col(c).cast(pl.Float64) for c in (PROMPT, COMPLETION) if c in daily.columns]
    reported = pl.any_horizontal(part.is_not_null() for part in parts)
    return pl.when(reported).then(pl.sum_horizontal(part.fill_null(0) for part in parts))


def _refuse_bad_values(frame: pl.DataFrame) -> None:
    counts = ("requests", "total_cost_usd", "tokens")
    found = frame.select(
        *(pl.col(c).null_count().alias(f"null:{c}") for c in ("day", "api_key_id", "model")),
        *(pl.col(c).is_null().sum().alias(f"null:{c}") for c in counts[:2]),
        *(((~pl.col(c).is_finite()) | (pl.col(c) < 0)).sum().alias(f"bad:{c}") for c in counts),
    ).row(0, named=True)
    for name, count in found.items():
        if count:
            problem, column = name.split(":")
            what = "null" if problem == "null" else "negative or not finite"
            raise UsageError(
                f"the daily usage's {column} is {what} in {count} row(s)", column=column
            )


def covered_before(today: date, covered: Iterable[date], days: int) -> list[date]:
    """The covered days among the `days` days before `today`, oldest first."""
    return sorted({day for day in covered if 0 < (today - day).days <= days})


def empty() -> pl.DataFrame:
    """A checked frame without rows."""
    return pl.DataFrame(
        schema={
            "day": pl.Date(),
            "api_key_id": pl.String(),
            "api_key_name": pl.String(),
            "model": pl.String(),
            "requests": pl.Float64(),
            "total_cost_usd": pl.Float64(),
            "tokens": pl.Float64(),
        }
    )
