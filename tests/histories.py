"""Daily usage histories whose answer is known, as a store's `usage_by_day` hands them over:
`usage.SCHEMA` plus a `day` column, one row per day x key x model."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl

from costwatch.usage.model import SCHEMA, TOKEN_COLUMNS

MONDAY = date(2026, 11, 30)
Row = tuple[date, str, str, float, int]  # day, key name, model, cost, requests


def days_before(today: date, count: int) -> list[date]:
    """The `count` days before `today`, oldest first."""
    return [today - timedelta(days=back) for back in range(count, 0, -1)]


def frame(rows: Iterable[Row], *, tokens: dict[int, int] | None = None) -> pl.DataFrame:
    """The daily frame of `rows`; a key's id is `id-<name>`. `tokens` gives the prompt tokens
    of row number i (completion 0); the others report none."""
    listed = list(rows)
    data: dict[str, list[object]] = {
        "day": [r[0] for r in listed],
        "api_key_id": [f"id-{r[1]}" for r in listed],
        "api_key_name": [r[1] for r in listed],
        "model": [r[2] for r in listed],
        "requests": [r[4] for r in listed],
        "total_cost_usd": [r[3] for r in listed],
    }
    given = tokens or {}
    for column in TOKEN_COLUMNS:
        data[column] = [
            given.get(i) if column == "sum_prompt_tokens" else None for i in range(len(listed))
        ]
    data["sum_completion_tokens"] = [0 if i in given else None for i in range(len(listed))]
    return pl.DataFrame(data, schema={"day": pl.Date(), **SCHEMA})


def steady(key: str, model: str, cost: float, requests: int, days: Iterable[date]) -> list[Row]:
    return [(day, key, model, cost, requests) for day in days]
