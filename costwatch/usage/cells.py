"""The diagnostic path: a part's cells read as strings, to name the first bad one.

Taken only when the fast, typed scan fails or its aggregates find a bad value: the same columns
are read as strings with their row numbers, and `raise_first_bad_cell` raises `UsageError`
naming the column and the row (row, then column order). Values the strict parser refused but
that are fine (`3.0` requests) are converted by `convert`.
"""

from __future__ import annotations

import polars as pl

from costwatch.errors import UsageError
from costwatch.quote import quote
from costwatch.usage.layout import Layout, scan_columns, unreadable
from costwatch.usage.model import INTEGER_COLUMNS, PERIOD_COLUMNS, ROW, TYPES

_INT64_LIMIT = 2.0**63


def read_strings(layout: Layout) -> pl.DataFrame:
    try:
        return scan_columns(layout, typed=False).with_row_index(ROW, offset=1).collect()
    except pl.exceptions.PolarsError as exc:
        raise unreadable(layout.path, exc) from exc


def raise_first_bad_cell(layout: Layout, strings: pl.DataFrame | None) -> None:
    """Raise UsageError for the first bad cell (row, then column order); return if none.

    Called with `strings=None` when the fast path's aggregates found a bad value: then the
    same cell must be found here, and not finding it is an error of its own.
    """
    expected = strings is None
    if strings is None:
        strings = read_strings(layout)
    checked = [c for c in layout.columns if c == "api_key_id" or c in TYPES]
    problems = strings.select(ROW, *(_problem(column).alias(column) for column in checked))
    hits = problems.filter(pl.any_horizontal(pl.col(checked).is_not_null())).head(1)
    if hits.height:
        hit = hits.row(0, named=True)
        row = int(hit[ROW])
        column = next(c for c in checked if hit[c] is not None)
        value = strings[column][row - 1]
        problem = str(hit[column]) if column == "api_key_id" else f"{_show(value)} {hit[column]}"
        raise UsageError(
            f"{layout.path}: column '{layout.source(column)}', row {row}: {problem}",
            column=layout.source(column),
            row=row,
        )
    if expected:
        raise UsageError(f"{layout.path}: a value failed validation but could not be located")


def _problem(column: str) -> pl.Expr:
    """Per row: what is wrong with this string cell, or null when it is fine."""
    raw = pl.col(column)
    if column == "api_key_id":
        empty = raw.is_null() | (raw.str.len_bytes() == 0)  # as the fast path checks
        return pl.when(empty).then(pl.lit("the API key id is empty"))
    text = raw.str.strip_chars_start()  # as the CSV parser: leading blanks are allowed
    present = text.str.len_bytes() > 0
    if column in PERIOD_COLUMNS:
        invalid = present & text.str.to_date("%Y-%m-%d", strict=False).is_null()
        return pl.when(invalid).then(pl.lit("is not a date (YYYY-MM-DD)"))
    number = text.cast(pl.Float64, strict=False)
    # Integer columns: a value the integer parser takes is fine; otherwise it must be a whole,
    # finite float in range ("3.0").
    inexact = text.cast(pl.Int64, strict=False).is_null() if column in INTEGER_COLUMNS else None
    problem = (
        pl.when(present & (number.is_null() | ~number.is_finite()))
        .then(pl.lit("is not a number"))
        .when(present & (number < 0))
        .then(pl.lit("is negative"))
    )
    if inexact is not None:
        problem = (
            problem.when(present & inexact & (number != number.floor()))
            .then(pl.lit("is not a whole number"))
            .when(present & inexact & (number >= _INT64_LIMIT))
            .then(pl.lit("is too large"))
        )
    return problem


def convert(strings: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    """The diagnosed string cells in their final types (every cell is known to be valid)."""
    converted: list[pl.Expr] = []
    for column in layout.columns:
        text = pl.col(column).str.strip_chars_start()
        if column in PERIOD_COLUMNS:
            converted.append(text.str.to_date("%Y-%m-%d", strict=False).alias(column))
        elif column in INTEGER_COLUMNS:
            exact = text.cast(pl.Int64, strict=False)
            converted.append(
                pl.coalesce(
                    exact, text.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
                ).alias(column)
            )
        elif column == "total_cost_usd":
            converted.append(text.cast(pl.Float64, strict=False).alias(column))
        else:
            converted.append(pl.col(column))
    return strings.select(converted)


def _show(value: str | None, limit: int = 40) -> str:
    return quote("" if value is None else value, limit)
