"""A Langdock usage export (CSV) as one typed, validated polars frame, and its aggregations.

`load` reads the parts of one `/export/api-keys` export made with `group_by=model` and returns a
`Usage` whose frame has the fixed `SCHEMA`: one row per (api_key_id, model), parts summed.

How one part is read (no per-row Python, the file is never read into a Python string):

1. The header, through polars without type inference: find the model column
   (`MODEL_COLUMN_CANDIDATES`, first found wins), the required and the optional columns; a
   known column named twice is refused (polars would rename one and read the other).
2. The shape (`costwatch.csvshape`): every record must have the header's number of fields and
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

import csv
import logging
import math
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from costwatch.csvshape import CsvShape, measure
from costwatch.errors import (
    ExportIncompleteError,
    ExportPeriodError,
    ExportProtocolError,
    UsageError,
)
from costwatch.quote import quote, quote_items

log = logging.getLogger(__name__)

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

_INTEGER_COLUMNS = frozenset(("requests", *TOKEN_COLUMNS))
_SUMMED_COLUMNS = ("requests", "total_cost_usd", *TOKEN_COLUMNS)
_TYPES: dict[str, pl.DataType] = {
    **{column: SCHEMA[column] for column in _SUMMED_COLUMNS},
    "period_start": pl.Date(),
    "period_end": pl.Date(),
}
_COLUMNS = tuple(SCHEMA)
_ROW = "__row__"
_TOKENS = "__tokens__"  # prompt + completion, in `_totals`
_RUN = "__run__"
_PERIOD_SLACK = timedelta(days=1)
_INT64_LIMIT = 2.0**63
# The most requests or tokens an export may add up to, per column and for prompt + completion
# together: up to here every sum of its counts is exact as an Int64 and as a Float64. No real
# export comes near it (9,007,199,254,740,992); a bigger one is refused, never wrapped around.
MAX_COUNT = 2**53


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


def load(files: Sequence[ExportFile]) -> Usage:
    """Load the parts of one export and sum them; no parts (the API's 404) is zero usage."""
    parts = [_read_part(file) for file in files]
    if len(parts) > 1:
        _check_totals("the export's parts together", _add_totals(p.totals for p in parts))
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


def per_key(usage: Usage) -> pl.DataFrame:
    """Totals per key, the biggest spender first: api_key_id, api_key_name, requests,
    total_cost_usd, tokens (prompt + completion; null where not reported), models.

    Remembered for the latest frame: a cycle's alert context and its report ask for the same.
    """
    return _remembered("per_key", usage.frame, 0, lambda: _per_key(usage))


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


def top_models(usage: Usage, n: int = 3) -> pl.DataFrame:
    """The `n` models with the highest spend per key: api_key_id, model, total_cost_usd,
    requests; sorted by key, then spend descending. Equal spend: the earlier row wins.

    Remembered for the latest frame and `n`, as `per_key`."""
    return _remembered("top_models", usage.frame, n, lambda: _top_models(usage, n))


def _top_models(usage: Usage, n: int) -> pl.DataFrame:
    by_spend = pl.col("total_cost_usd").rank("ordinal", descending=True)
    frame = usage.frame.lazy().select("api_key_id", "model", "total_cost_usd", "requests")
    # An export lists a key's rows together. Then the top n of each run of equal ids are a
    # superset of the top n of each key, found in cheap slice groups, where `over` a hash of
    # every id is not cheap; the exact pass below then sees only those candidates.
    runs = usage.frame.get_column("api_key_id").rle_id()
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


# (frame it was computed from, held weakly; n; result), by function: one entry each
_MEMO: dict[str, tuple[weakref.ref[pl.DataFrame], int, pl.DataFrame]] = {}


def _remembered(
    name: str, frame: pl.DataFrame, n: int, compute: Callable[[], pl.DataFrame]
) -> pl.DataFrame:
    """`compute()`, or its result for the same frame object and `n` if it is the latest."""
    hit = _MEMO.get(name)
    if hit is not None and hit[0]() is frame and hit[1] == n:
        return hit[2]
    result = compute()
    _MEMO[name] = (weakref.ref(frame), n, result)
    return result


# --- one part -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    frame: pl.DataFrame  # SCHEMA columns, unique per (api_key_id, model)
    rows: int = 0
    empty_cells: int = 0
    has_tokens: bool = False
    model_column: str | None = None
    totals: Mapping[str, float] = field(default_factory=dict)  # `_totals` of the rows


@dataclass(frozen=True)
class _Layout:
    """Which header columns one part is read from, under their canonical names."""

    path: Path
    model_column: str
    tokens: tuple[str, ...]  # the token columns the header has
    periods: bool  # read period_start/period_end for the period check

    @property
    def columns(self) -> tuple[str, ...]:
        optional = self.tokens + (PERIOD_COLUMNS if self.periods else ())
        return ("api_key_id", "api_key_name", "model", "requests", "total_cost_usd", *optional)

    def source(self, column: str) -> str:
        return self.model_column if column == "model" else column


def _read_part(file: ExportFile) -> _Part:
    header = _read_header(file.path)
    if not header:
        _check_record_count(file, 0)
        return _Part(_empty_frame())
    layout = _layout(file, header)
    shape, rows = _shape_and_rows(file, layout, len(header))
    if rows.height != shape.rows:
        raise UsageError(
            f"{file.path}: polars read {rows.height} rows where the file has {shape.rows} records"
        )
    stats = _stats(rows, layout)
    if stats.bad_values:
        _raise_first_bad_cell(layout, None)
    totals = _totals(rows)
    _check_totals(str(file.path), totals)
    if layout.periods:
        _check_period(file, rows, stats)
    return _Part(
        frame=_aggregate(rows, layout, stats),
        rows=rows.height,
        empty_cells=stats.empty_cells,
        has_tokens=bool(layout.tokens),
        model_column=layout.model_column if rows.height else None,
        totals=totals,
    )


def _read_header(path: Path) -> tuple[str, ...]:
    """The column names polars reads; a known name given twice is refused."""
    try:
        if path.stat().st_size == 0:
            return ()
        scan = pl.scan_csv(path, infer_schema=False, raise_if_empty=False)
        names = tuple(scan.collect_schema().names())
        written = _written_header(path) if names else []
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the export: {exc.strerror}") from exc
    except pl.exceptions.PolarsError as exc:
        raise _unreadable(path, exc) from exc
    twice = _repeated_known(written)
    if twice is not None:
        raise UsageError(
            f"{path}: the header names column '{twice}' twice: which one holds the data is unknown",
            column=twice,
        )
    return names


def _repeated_known(names: Sequence[str]) -> str | None:
    """The first known column name given a second time (one pass, however long the header)."""
    seen: set[str] = set()
    for name in names:
        if name in KNOWN_COLUMNS:
            if name in seen:
                return name
            seen.add(name)
    return None


def _written_header(path: Path) -> list[str]:
    """The header's names as written (polars renames a repeated one), read as its first record
    by the csv module; [] when it cannot be (then polars' reading of it says what is wrong)."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        try:
            return next(csv.reader(file), [])
        except (UnicodeDecodeError, csv.Error):
            return []


def _shape_and_rows(
    file: ExportFile, layout: _Layout, columns: int
) -> tuple[CsvShape, pl.DataFrame]:
    """The file's shape, checked, and its typed rows. A shape measured as the file was written
    is taken as it is; otherwise it is measured while polars reads the rows (polars releases
    the GIL, so the two passes overlap). The shape's verdict comes first: a ragged row makes
    bad cells of its neighbours, and the row is the news, not the cells."""
    if file.shape is not None:
        _check_shape(file, file.shape, columns)
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
    _check_shape(file, shape, columns)
    if isinstance(rows, UsageError):
        raise rows
    return shape, rows


def _check_record_count(file: ExportFile, rows: int) -> None:
    """The part holds the rows its export answer announced (when known)."""
    announced = file.record_count
    if announced is None or rows == announced:
        return
    message = f"{file.path}: the file holds {rows} rows but the export announced {announced}"
    if rows < announced:
        raise ExportIncompleteError(message + " (recordCount)")
    raise ExportProtocolError(message + " (recordCount)")


def _check_shape(file: ExportFile, shape: CsvShape, columns: int) -> None:
    """The rows announced are there, every record has the header's number of fields, and the
    file ends outside quotes."""
    _check_record_count(file, shape.rows)
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


def _layout(file: ExportFile, header: tuple[str, ...]) -> _Layout:
    listed = quote_items(header)  # outside text: escaped and capped
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        names = ", ".join(f"'{column}'" for column in missing)
        plural = "s" if len(missing) > 1 else ""
        raise UsageError(
            f"{file.path}: missing required column{plural} {names} (the header has: {listed})",
            column=missing[0],
        )
    model = next((c for c in MODEL_COLUMN_CANDIDATES if c in header), None)
    if model is None:
        raise UsageError(
            f"{file.path}: no model column: looked for "
            f"{', '.join(MODEL_COLUMN_CANDIDATES)} (the header has: {listed})"
        )
    log.debug("%s: using '%s' as the model column", file.path, model)
    wants_period = file.first_day is not None or file.last_day is not None
    no_period = [column for column in PERIOD_COLUMNS if column not in header]
    if wants_period and no_period and not file.saved:
        raise UsageError(
            f"{file.path}: missing column '{no_period[0]}': the export cannot be checked "
            f"against the range asked for (the header has: {listed})",
            column=no_period[0],
        )
    if wants_period and no_period:
        log.warning("%s: no %s column: its period cannot be checked", file.path, no_period[0])
    return _Layout(
        path=file.path,
        model_column=model,
        tokens=tuple(column for column in TOKEN_COLUMNS if column in header),
        periods=wants_period and not no_period,
    )


def _scan(layout: _Layout, *, typed: bool) -> pl.LazyFrame:
    overrides = {layout.source(c): _TYPES[c] for c in layout.columns if typed and c in _TYPES}
    scan = pl.scan_csv(
        layout.path, infer_schema=False, schema_overrides=overrides, raise_if_empty=False
    )
    return scan.select(pl.col(layout.source(column)).alias(column) for column in layout.columns)


def _read_rows(layout: _Layout) -> pl.DataFrame:
    """The typed rows: the fast path, else the diagnostic path (which raises on a bad cell)."""
    try:
        return _scan(layout, typed=True).collect()
    except pl.exceptions.PolarsError as exc:
        strings = _read_strings(layout)
        _raise_first_bad_cell(layout, strings)
        try:
            return _convert(strings, layout)
        except pl.exceptions.PolarsError:
            raise _unreadable(layout.path, exc) from exc


@dataclass(frozen=True)
class _Stats:
    bad_values: int  # > 0: some cell is bad and must be diagnosed
    empty_cells: int  # empty requests/total_cost_usd cells
    first: date | None = None  # earliest period_start
    last: date | None = None  # latest period_end
    latest_start: date | None = None  # latest period_start
    earliest_end: date | None = None  # earliest period_end
    empty_periods: int = 0  # empty period_start/period_end cells
    inverted: int = 0  # rows whose period_start is after their period_end
    distinct_pairs: int = 0  # distinct hashes of (api_key_id, model); < rows: maybe repeated


def _stats(rows: pl.DataFrame, layout: _Layout) -> _Stats:
    """One pass of cheap aggregates over the typed rows."""
    numbers = [pl.col(column) for column in _SUMMED_COLUMNS if column in rows.columns]
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
    return _Stats(**rows.select(exprs).row(0, named=True))


def _totals(rows: pl.DataFrame) -> dict[str, float]:
    """Each count column's exact sum (in Int128: no wrap), prompt + completion's, and the
    cost's (a float sum: it cannot wrap, but it can overflow to infinity)."""
    counts = [c for c in ("requests", *TOKEN_COLUMNS) if c in rows.columns]
    exprs = [*(pl.col(c).cast(pl.Int128).sum() for c in counts), pl.col("total_cost_usd").sum()]
    sums = rows.select(exprs).row(0, named=True)
    totals: dict[str, float] = {c: int(sums[c] or 0) for c in counts}
    totals[_TOKENS] = totals.get("sum_prompt_tokens", 0) + totals.get("sum_completion_tokens", 0)
    totals["total_cost_usd"] = float(sums["total_cost_usd"] or 0.0)
    return totals


def _add_totals(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    summed: dict[str, float] = {}
    for totals in parts:
        for column, total in totals.items():
            summed[column] = summed.get(column, 0) + total
    return summed


def _check_totals(where: str, totals: Mapping[str, float]) -> None:
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
            what = "prompt and completion tokens" if column == _TOKENS else f"column '{column}'"
            raise UsageError(
                f"{where}: {what} adds up to {total:,}, past the {MAX_COUNT:,} that costwatch "
                "adds up exactly (no real export comes near it)",
                column=None if column == _TOKENS else column,
            )


def _check_period(file: ExportFile, rows: pl.DataFrame, stats: _Stats) -> None:
    """Every row's period is the range asked for, give or take a day at either end.

    The export's period_start/period_end are the report's dates, the same on every row
    whatever days had usage; a day of slack either way allows for dates written in UTC for a
    range asked for in another zone. A row for more (another period) or for less (a part of
    the range missing) than the range is refused.
    """
    numbered = rows.with_row_index(_ROW, offset=1)
    start, end = pl.col("period_start"), pl.col("period_end")
    if stats.empty_periods:
        row, *cells = (
            numbered.filter(start.is_null() | end.is_null()).select(_ROW, start, end).row(0)
        )
        column = PERIOD_COLUMNS[0] if cells[0] is None else PERIOD_COLUMNS[1]
        raise UsageError(
            f"{file.path}: column '{column}', row {row}: is empty", column=column, row=row
        )
    if stats.inverted:
        bad = numbered.filter(start > end)
        row, first_day, last_day = bad.select(_ROW, *PERIOD_COLUMNS).row(0)
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
            short = short | (start > file.first_day + _PERIOD_SLACK)
        if file.last_day is not None:
            short = short | (end < file.last_day - _PERIOD_SLACK)
        row, first_day, last_day = numbered.filter(short).select(_ROW, start, end).row(0)
        raise ExportPeriodError(
            f"{file.path}: row {row} covers {first_day}..{last_day} but {wanted} was requested"
        )


def _before(day: date | None, bound: date | None) -> bool:
    """`day` lies more than the slack before `bound` (False when either is unknown)."""
    return day is not None and bound is not None and day < bound - _PERIOD_SLACK


def _aggregate(rows: pl.DataFrame, layout: _Layout, stats: _Stats) -> pl.DataFrame:
    """The part's rows as SCHEMA, unique per (api_key_id, model)."""
    frame = rows
    if stats.empty_cells:
        frame = frame.with_columns(pl.col("requests", "total_cost_usd").fill_null(0))
    if len(layout.tokens) < len(TOKEN_COLUMNS):
        absent = [c for c in TOKEN_COLUMNS if c not in layout.tokens]
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(c) for c in absent)
    frame = frame.select(_COLUMNS)
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
        .select(_COLUMNS)
    )


def _rename(frame: pl.DataFrame, names: pl.DataFrame) -> pl.DataFrame:
    """Give every row of a key the key's name from `names` (api_key_id, name)."""
    return (
        frame.join(names, on="api_key_id", how="left", maintain_order="left")
        .with_columns(pl.col("name").alias("api_key_name"))
        .select(_COLUMNS)
    )


def _combine(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Sum the parts; a key's name comes from the last part that has the key."""
    if not frames:
        return _empty_frame()
    if len(frames) == 1:
        return frames[0]
    stacked = pl.concat(frames, how="vertical")
    names = stacked.group_by("api_key_id", maintain_order=True).agg(
        pl.col("api_key_name").drop_nulls().last().alias("name")
    )
    return _rename(_sum_per_key_and_model(stacked), names)


def _empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


# --- the diagnostic path --------------------------------------------------------------------


def _read_strings(layout: _Layout) -> pl.DataFrame:
    try:
        return _scan(layout, typed=False).with_row_index(_ROW, offset=1).collect()
    except pl.exceptions.PolarsError as exc:
        raise _unreadable(layout.path, exc) from exc


def _raise_first_bad_cell(layout: _Layout, strings: pl.DataFrame | None) -> None:
    """Raise UsageError for the first bad cell (row, then column order); return if none.

    Called with `strings=None` when the fast path's aggregates found a bad value: then the
    same cell must be found here, and not finding it is an error of its own.
    """
    expected = strings is None
    if strings is None:
        strings = _read_strings(layout)
    checked = [c for c in layout.columns if c == "api_key_id" or c in _TYPES]
    problems = strings.select(_ROW, *(_problem(column).alias(column) for column in checked))
    hits = problems.filter(pl.any_horizontal(pl.col(checked).is_not_null())).head(1)
    if hits.height:
        hit = hits.row(0, named=True)
        row = int(hit[_ROW])
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
    inexact = text.cast(pl.Int64, strict=False).is_null() if column in _INTEGER_COLUMNS else None
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


def _convert(strings: pl.DataFrame, layout: _Layout) -> pl.DataFrame:
    """The diagnosed string cells in their final types (every cell is known to be valid)."""
    converted: list[pl.Expr] = []
    for column in layout.columns:
        text = pl.col(column).str.strip_chars_start()
        if column in PERIOD_COLUMNS:
            converted.append(text.str.to_date("%Y-%m-%d", strict=False).alias(column))
        elif column in _INTEGER_COLUMNS:
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


def _unreadable(path: Path, exc: pl.exceptions.PolarsError) -> UsageError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "utf-8" in reason.lower() or "utf8" in reason.lower():
        return UsageError(f"{path}: not a readable CSV export: not valid UTF-8 text")
    return UsageError(f"{path}: not a readable CSV export: {quote(reason)}")  # it may echo data
