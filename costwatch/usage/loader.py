"""A Langdock usage export (CSV) as one typed, validated polars frame, and its aggregations.

`load` reads the parts of one `/export/api-keys` export made with `group_by=model` and returns a
`Usage` whose frame has the fixed `SCHEMA`: one row per (api_key_id, model), parts summed.

How one part is read (no per-row Python, the file is never read into a Python string):

1. The header, through polars without type inference: find the model column
   (`MODEL_COLUMN_CANDIDATES`, first found wins), the required and the optional columns; a
   known column named twice is refused (polars would rename one and read the other).
2. The shape (`costwatch.usage.csvshape`): every record must have the header's number of fields and
   the file must not end inside quotes. polars' projected scan checks neither.
3. Fast path: one lazy `scan_csv` of only those columns, parsed straight into their final types,
   then one `select` of cheap aggregates (minimums, null counts, finiteness, period bounds) and
   the exact (Int128) totals of the count columns.
4. Only when step 3 fails or finds a bad value: the diagnostic path reads the same columns as
   strings with their row numbers and raises `UsageError` naming the column and the first bad
   row. Values the strict parser refused but that are fine (`3.0` requests) are converted there.

Any parse problem is an exception; no frame is ever built from data that failed to parse.
Counts (requests, tokens) that add up past `MAX_COUNT`, in a part or across parts, are refused:
below it every later sum of them (per key, per pool, prompt + completion) is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from costwatch.errors import UsageError
from costwatch.usage.cells import convert, raise_first_bad_cell, read_strings
from costwatch.usage.checks import (
    Stats,
    add_totals,
    check_period,
    check_record_count,
    check_shape,
    check_totals,
    count_totals,
    part_stats,
)
from costwatch.usage.csvshape import CsvShape, measure
from costwatch.usage.layout import Layout, layout_of, read_header, scan_columns, unreadable
from costwatch.usage.model import COLUMNS, SCHEMA, TOKEN_COLUMNS, ExportFile, Usage

log = logging.getLogger("costwatch.usage")


def load(files: Sequence[ExportFile]) -> Usage:
    """Load the parts of one export and sum them; no parts (the API's 404) is zero usage."""
    parts = [_read_part(file) for file in files]
    if len(parts) > 1:
        check_totals("the export's parts together", add_totals(p.totals for p in parts))
    empty_cells = sum(part.empty_cells for part in parts)
    if empty_cells:
        log.warning("%d empty requests/total_cost_usd cells read as 0", empty_cells)
    with_rows = [part for part in parts if part.rows]
    return Usage(
        frame=_combine([part.frame for part in with_rows]),
        has_tokens=any(part.has_tokens for part in parts),
        model_column=with_rows[0].model_column if with_rows else None,
        rows_read=sum(part.rows for part in parts),
    )


def load_csv(path: Path, *, first_day: date | None = None, last_day: date | None = None) -> Usage:
    """Load a single saved export file (`costwatch check --csv`). Its period columns, if it has
    them, must cover the range; one written without them is read with a warning."""
    return load([ExportFile(path, first_day, last_day, saved=True)])


@dataclass(frozen=True)
class _Part:
    frame: pl.DataFrame  # SCHEMA columns, unique per (api_key_id, model)
    rows: int = 0
    empty_cells: int = 0
    has_tokens: bool = False
    model_column: str | None = None
    totals: Mapping[str, float] = field(default_factory=dict)  # `count_totals` of the rows


def _read_part(file: ExportFile) -> _Part:
    header = read_header(file.path)
    if not header:
        check_record_count(file, 0)
        return _Part(empty_frame())
    layout = layout_of(file, header)
    shape, rows = _shape_and_rows(file, layout, len(header))
    if rows.height != shape.rows:
        raise UsageError(
            f"{file.path}: polars read {rows.height} rows where the file has {shape.rows} records"
        )
    stats = part_stats(rows, layout)
    if stats.bad_values:
        raise_first_bad_cell(layout, None)
    totals = count_totals(rows)
    check_totals(str(file.path), totals)
    if layout.periods:
        check_period(file, rows, stats)
    return _Part(
        frame=_aggregate(rows, layout, stats),
        rows=rows.height,
        empty_cells=stats.empty_cells,
        has_tokens=bool(layout.tokens),
        model_column=layout.model_column if rows.height else None,
        totals=totals,
    )


def _shape_and_rows(
    file: ExportFile, layout: Layout, columns: int
) -> tuple[CsvShape, pl.DataFrame]:
    """The file's shape, checked, and its typed rows. A shape measured as the file was written
    is taken as it is; otherwise it is measured while polars reads the rows (polars releases
    the GIL, so the two passes overlap). The shape's verdict comes first: a ragged row makes
    bad cells of its neighbours, and the row is the news, not the cells."""
    if file.shape is not None:
        check_shape(file, file.shape, columns)
        return file.shape, _read_rows(layout)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="costwatch-csvshape") as pool:
        measuring = pool.submit(measure, file.path)
        try:
            rows: pl.DataFrame | UsageError = _read_rows(layout)
        except UsageError as error:
            rows = error
        try:
            shape = measuring.result()
        except OSError as exc:
            raise UsageError(f"{file.path}: cannot read the export: {exc.strerror}") from exc
    check_shape(file, shape, columns)
    if isinstance(rows, UsageError):
        raise rows
    return shape, rows


def _read_rows(layout: Layout) -> pl.DataFrame:
    """The typed rows: the fast path, else the diagnostic path (which raises on a bad cell)."""
    try:
        return scan_columns(layout, typed=True).collect()
    except pl.exceptions.PolarsError as exc:
        strings = read_strings(layout)
        raise_first_bad_cell(layout, strings)
        try:
            return convert(strings, layout)
        except pl.exceptions.PolarsError:
            raise unreadable(layout.path, exc) from exc


def _aggregate(rows: pl.DataFrame, layout: Layout, stats: Stats) -> pl.DataFrame:
    """The part's rows as SCHEMA, unique per (api_key_id, model)."""
    frame = rows
    if stats.empty_cells:
        frame = frame.with_columns(pl.col("requests", "total_cost_usd").fill_null(0))
    if len(layout.tokens) < len(TOKEN_COLUMNS):
        absent = [c for c in TOKEN_COLUMNS if c not in layout.tokens]
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(c) for c in absent)
    frame = frame.select(COLUMNS)
    if stats.distinct_pairs < frame.height:
        frame = _sum_per_key_and_model(frame)
    return frame


def _sum_per_key_and_model(frame: pl.DataFrame) -> pl.DataFrame:
    """Sum rows of the same (api_key_id, model); a token sum is null only if all cells are."""
    tokens = [
        pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in TOKEN_COLUMNS
    ]
    return (
        frame.group_by("api_key_id", "model", maintain_order=True)
        .agg(
            pl.col("api_key_name").drop_nulls().last(),
            pl.col("requests", "total_cost_usd").sum(),
            *tokens,
        )
        .select(COLUMNS)
    )


def _rename(frame: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """Give every row of a key the key's name from `names` (api_key_id, name)."""
    return (
        frame.join(names, on="api_key_id", how="left", maintain_order="left")
        .with_columns(pl.col("name").alias("api_key_name"))
        .select(COLUMNS)
    )


def _combine(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Sum the parts; a key's name comes from the last part that has the key."""
    if not frames:
        return empty_frame()
    if len(frames) == 1:
        return frames[0]
    stacked = pl.concat(frames, how="vertical")
    names = stacked.group_by("api_key_id", maintain_order=True).agg(
        pl.col("api_key_name").drop_nulls().last().alias("name")
    )
    return _rename(_sum_per_key_and_model(stacked), names)


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)
