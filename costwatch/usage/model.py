"""A loaded export: `Usage`, its frame's fixed `SCHEMA`, and its aggregations.

One row per (api_key_id, model). The aggregations a cycle's alert context, its report and
`validate` ask for (`per_key`, `top_models(n)`) are computed once per `Usage` and kept on it:
the object owns what it computed, and nothing is remembered at module level. Pure (polars).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import polars as pl

from costwatch.usage.csvshape import CsvShape

TOKEN_COLUMNS: tuple[str, ...] = (
    "sum_prompt_tokens",
    "sum_completion_tokens",
    "cached_prompt_tokens",
    "cache_creation_tokens",
    "no_cache_tokens",
)
SCHEMA: dict[str, pl.DataType] = {
    "api_key_id": pl.String(),
    "api_key_name": pl.String(),
    "model": pl.String(),
    "requests": pl.Int64(),
    "total_cost_usd": pl.Float64(),
    **{column: pl.Int64() for column in TOKEN_COLUMNS},
}
MODEL_COLUMN_CANDIDATES = ("model", "model_name", "raw_model", "name")
REQUIRED_COLUMNS = ("api_key_id", "api_key_name", "requests", "total_cost_usd")
PERIOD_COLUMNS = ("period_start", "period_end")
# Names the loader reads or may read: one of them twice in a header is refused.
KNOWN_COLUMNS = frozenset(
    (*REQUIRED_COLUMNS, *MODEL_COLUMN_CANDIDATES, *TOKEN_COLUMNS, *PERIOD_COLUMNS, "org_id")
)

INTEGER_COLUMNS = frozenset(("requests", *TOKEN_COLUMNS))
SUMMED_COLUMNS = ("requests", "total_cost_usd", *TOKEN_COLUMNS)
TYPES: dict[str, pl.DataType] = {
    **{column: SCHEMA[column] for column in SUMMED_COLUMNS},
    "period_start": pl.Date(),
    "period_end": pl.Date(),
}
COLUMNS = tuple(SCHEMA)
ROW = "__row__"
_RUN = "__run__"
# The most requests or tokens an export may add up to, per column and for prompt + completion
# together: up to here every sum of its counts is exact as an Int64 and as a Float64. No real
# export comes near it (9,007,199,254,740,992); a bigger one is refused, never wrapped around.
MAX_COUNT = 2**53


# Up to this many keys, `top_models` ranks only their rows (a copy of them); more, every key's
# (ranked in place, kept, then filtered): a copy of most of the export costs more than it saves.
_FEW_KEYS = 1_000


@dataclass(frozen=True)
class ExportFile:
    """One downloaded part of an export and the local dates its request covered."""

    path: Path
    first_day: date | None = None  # None: unknown, skip the period check
    last_day: date | None = None
    record_count: int | None = None  # the rows the export answer announced; None: unknown
    saved: bool = False  # a saved file (`check --csv`): may lack the period columns (logged)
    shape: CsvShape | None = None  # measured as the file was written; None: measured here


@dataclass(frozen=True)
class Usage:
    """An export as loaded: `frame` has `SCHEMA`, one row per (api_key_id, model)."""

    frame: pl.DataFrame
    has_tokens: bool  # the export carried the BYOK token columns
    model_column: str | None  # the header used for the model; None without rows
    rows_read: int  # data rows read across all parts
    _top_models: dict[int, pl.DataFrame] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @cached_property
    def per_key(self) -> pl.DataFrame:
        """Totals per key, the biggest spender first: api_key_id, api_key_name, requests,
        total_cost_usd, tokens (prompt + completion; null where not reported), models."""
        return _per_key(self)

    def top_models(self, n: int = 3, keys: Sequence[str] | None = None) -> pl.DataFrame:
        """The `n` models with the highest spend per key: api_key_id, model, total_cost_usd,
        requests; sorted by key, then spend descending. Equal spend: the earlier row wins.

        `keys`: only these keys' (the 20 a table lists need not rank 1,000,000 rows); kept on
        the object only when every key's were asked for."""
        if keys is not None and (n in self._top_models or len(keys) > _FEW_KEYS):
            return self.top_models(n).filter(pl.col("api_key_id").is_in(list(keys)))
        if keys is not None:
            return _top_models(self, n, keys)
        if n not in self._top_models:
            self._top_models[n] = _top_models(self, n)
        return self._top_models[n]


def _per_key(usage: Usage) -> pl.DataFrame:
    prompt, completion = pl.col("sum_prompt_tokens"), pl.col("sum_completion_tokens")
    reported = prompt.is_not_null() | completion.is_not_null()
    row_tokens: pl.Expr = pl.when(reported).then(prompt.fill_null(0) + completion.fill_null(0))
    if not usage.has_tokens:
        row_tokens = pl.lit(None, dtype=pl.Int64)
    return (
        usage.frame.lazy()
        .group_by("api_key_id")
        .agg(
            pl.col("api_key_name").last(),
            pl.col("requests").sum(),
            pl.col("total_cost_usd").sum(),
            row_tokens.sum().alias("tokens"),
            row_tokens.count().alias("reported"),
            pl.len().cast(pl.Int64).alias("models"),
        )
        .with_columns(pl.when(pl.col("reported") > 0).then(pl.col("tokens")).alias("tokens"))
        .drop("reported")
        .sort(
            ["total_cost_usd", "api_key_name", "api_key_id"],
            descending=[True, False, False],
            nulls_last=True,
        )
        .collect()
    )


def _top_models(usage: Usage, n: int, keys: Sequence[str] | None = None) -> pl.DataFrame:
    by_spend = pl.col("total_cost_usd").rank("ordinal", descending=True)
    rows = usage.frame.select("api_key_id", "model", "total_cost_usd", "requests")
    if keys is not None:  # these keys' rows, in the frame's order
        rows = rows.filter(pl.col("api_key_id").is_in(list(keys)))
    frame = rows.lazy()
    # An export lists a key's rows together. Then the top n of each run of equal ids are a
    # superset of the top n of each key, found in cheap slice groups, where `over` a hash of
    # every id is not cheap; the exact pass below then sees only those candidates.
    runs = rows.get_column("api_key_id").rle_id()
    if runs.len() and (runs[-1] + 1) * 4 <= runs.len():
        frame = (
            frame.with_columns(runs.set_sorted().alias(_RUN))
            .filter(by_spend.over(_RUN) <= n)
            .drop(_RUN)
        )
    return (
        frame.filter(by_spend.over("api_key_id") <= n)
        .sort(["api_key_id", "total_cost_usd"], descending=[False, True], maintain_order=True)
        .collect()
    )
