"""What vouches for one part of an export before a frame is built from it: the rows the answer
announced, every record's field count, totals that add up exactly, and the period it covers.

Each check raises (`UsageError`, `ExportIncompleteError`, `ExportProtocolError`,
`ExportPeriodError`) naming the file, and the row and column where known; none builds a frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from costwatch.errors import (
    ExportIncompleteError,
    ExportPeriodError,
    ExportProtocolError,
    UsageError,
)
from costwatch.usage.csvshape import CsvShape
from costwatch.usage.layout import Layout
from costwatch.usage.model import (
    MAX_COUNT,
    PERIOD_COLUMNS,
    ROW,
    SUMMED_COLUMNS,
    TOKEN_COLUMNS,
    ExportFile,
)

PERIOD_SLACK = timedelta(days=1)
TOKENS = "__tokens__"  # prompt + completion, in `count_totals`


def check_record_count(file: ExportFile, rows: int) -> None:
    """The part holds the rows its export answer announced (when known)."""
    announced = file.record_count
    if announced is None or rows == announced:
        return
    message = f"{file.path}: the file holds {rows} rows but the export announced {announced}"
    if rows < announced:
        raise ExportIncompleteError(message + " (recordCount)")
    raise ExportProtocolError(message + " (recordCount)")


def check_shape(file: ExportFile, shape: CsvShape, columns: int) -> None:
    """The rows announced are there, every record has the header's number of fields, and the
    file ends outside quotes."""
    check_record_count(file, shape.rows)
    path = file.path
    if shape.ends_in_quote:
        raise UsageError(f"{path}: the file ends inside a quoted value (cut short?)")
    if shape.fields != columns:
        raise UsageError(f"{path}: the header has {shape.fields} fields but {columns} names")
    ragged = shape.first_ragged
    if ragged is not None:
        row, fields = ragged
        hint = "a value with an unquoted comma?" if fields > columns else "the row is cut short?"
        raise UsageError(
            f"{path}: row {row} has {fields} fields where the header has {columns} ({hint})",
            row=row,
        )


@dataclass(frozen=True)
class Stats:
    bad_values: int  # > 0: some cell is bad and must be diagnosed
    empty_cells: int  # empty requests/total_cost_usd cells
    first: date | None = None  # earliest period_start
    last: date | None = None  # latest period_end
    latest_start: date | None = None  # latest period_start
    earliest_end: date | None = None  # earliest period_end
    empty_periods: int = 0  # empty period_start/period_end cells
    inverted: int = 0  # rows whose period_start is after their period_end
    distinct_pairs: int = 0  # distinct hashes of (api_key_id, model); < rows: maybe repeated


def part_stats(rows: pl.DataFrame, layout: Layout) -> Stats:
    """One pass of cheap aggregates over the typed rows."""
    numbers = [pl.col(column) for column in SUMMED_COLUMNS if column in rows.columns]
    key = pl.col("api_key_id")
    bad = [
        key.null_count(),
        (key.str.len_bytes() == 0).sum(),
        (pl.min_horizontal(number.min() for number in numbers) < 0).cast(pl.UInt32),
        (~pl.col("total_cost_usd").is_finite()).sum(),
    ]
    # Equal to the row count, this proves every (api_key_id, model) unique; below it (a repeated
    # pair, or a 64-bit collision) the part takes the exact group_by.
    pair = pl.col("api_key_id").hash(1) ^ pl.col("model").hash(2)
    exprs = [
        pl.sum_horizontal(bad).alias("bad_values"),
        pair.n_unique().alias("distinct_pairs"),
        (pl.col("requests").null_count() + pl.col("total_cost_usd").null_count()).alias(
            "empty_cells"
        ),
    ]
    if layout.periods:
        start, end = pl.col("period_start"), pl.col("period_end")
        exprs += [start.min().alias("first"), end.max().alias("last")]
        exprs += [start.max().alias("latest_start"), end.min().alias("earliest_end")]
        exprs += [(start.null_count() + end.null_count()).alias("empty_periods")]
        exprs += [(start > end).sum().alias("inverted")]
    return Stats(**rows.select(exprs).row(0, named=True))


def count_totals(rows: pl.DataFrame) -> dict[str, float]:
    """Each count column's exact sum (in Int128: no wrap), prompt + completion's, and the
    cost's (a float sum: it cannot wrap, but it can overflow to infinity)."""
    counts = [c for c in ("requests", *TOKEN_COLUMNS) if c in rows.columns]
    exprs = [*(pl.col(c).cast(pl.Int128).sum() for c in counts), pl.col("total_cost_usd").sum()]
    sums = rows.select(exprs).row(0, named=True)
    totals: dict[str, float] = {c: int(sums[c] or 0) for c in counts}
    totals[TOKENS] = totals.get("sum_prompt_tokens", 0) + totals.get("sum_completion_tokens", 0)
    totals["total_cost_usd"] = float(sums["total_cost_usd"] or 0.0)
    return totals


def add_totals(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    summed: dict[str, float] = {}
    for totals in parts:
        for column, total in totals.items():
            summed[column] = summed.get(column, 0) + total
    return summed


def check_totals(where: str, totals: Mapping[str, float]) -> None:
    """Refuse counts that add up past MAX_COUNT, and a cost past the largest float (negative
    cells were refused before)."""
    for column, total in totals.items():
        if column == "total_cost_usd":
            if not math.isfinite(total):
                raise UsageError(
                    f"{where}: column 'total_cost_usd' adds up to more than a float can hold",
                    column=column,
                )
        elif total > MAX_COUNT:
            what = "prompt and completion tokens" if column == TOKENS else f"column '{column}'"
            raise UsageError(
                f"{where}: {what} adds up to {total:,}, past the {MAX_COUNT:,} that costwatch "
                "adds up exactly (no real export comes near it)",
                column=None if column == TOKENS else column,
            )


def check_period(file: ExportFile, rows: pl.DataFrame, stats: Stats) -> None:
    """Every row's period is the range asked for, give or take a day at either end.

    The export's period_start/period_end are the report's dates, the same on every row
    whatever days had usage; a day of slack either way allows for dates written in UTC for a
    range asked for in another zone. A row for more (another period) or for less (a part of
    the range missing) than the range is refused.
    """
    numbered = rows.with_row_index(ROW, offset=1)
    start, end = pl.col("period_start"), pl.col("period_end")
    if stats.empty_periods:
        row, *cells = (
            numbered.filter(start.is_null() | end.is_null()).select(ROW, start, end).row(0)
        )
        column = PERIOD_COLUMNS[0] if cells[0] is None else PERIOD_COLUMNS[1]
        raise UsageError(
            f"{file.path}: column '{column}', row {row}: is empty", column=column, row=row
        )
    if stats.inverted:
        bad = numbered.filter(start > end)
        row, first_day, last_day = bad.select(ROW, *PERIOD_COLUMNS).row(0)
        raise ExportPeriodError(
            f"{file.path}: row {row}: period_start {first_day} is after period_end {last_day}"
        )
    wanted = f"{file.first_day or '?'}..{file.last_day or '?'}"
    first, last = stats.first, stats.last
    if _before(first, file.first_day) or _before(file.last_day, last):
        raise ExportPeriodError(
            f"{file.path}: export covers {first}..{last} but {wanted} was requested"
        )
    if _before(file.first_day, stats.latest_start) or _before(stats.earliest_end, file.last_day):
        short = pl.lit(value=False)
        if file.first_day is not None:
            short = short | (start > file.first_day + PERIOD_SLACK)
        if file.last_day is not None:
            short = short | (end < file.last_day - PERIOD_SLACK)
        row, first_day, last_day = numbered.filter(short).select(ROW, start, end).row(0)
        raise ExportPeriodError(
            f"{file.path}: row {row} covers {first_day}..{last_day} but {wanted} was requested"
        )


def _before(day: date | None, bound: date | None) -> bool:
    """`day` lies more than the slack before `bound` (False when either is unknown)."""
    return day is not None and bound is not None and day < bound - PERIOD_SLACK
