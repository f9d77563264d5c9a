"""Which header columns one part of an export is read from, and the lazy scan that reads them.

The header is read through polars without type inference; the model column is the first of
`MODEL_COLUMN_CANDIDATES` found; a known column named twice is refused (polars would rename
one and read the other); a required column missing is refused naming the header (quoted).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from costwatch.errors import UsageError
from costwatch.quote import quote, quote_items
from costwatch.usage.model import (
    KNOWN_COLUMNS,
    MODEL_COLUMN_CANDIDATES,
    PERIOD_COLUMNS,
    REQUIRED_COLUMNS,
    TOKEN_COLUMNS,
    TYPES,
    ExportFile,
)

log = logging.getLogger("costwatch.usage")


@dataclass(frozen=True)
class Layout:
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


def layout_of(file: ExportFile, header: tuple[str, ...]) -> Layout:
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
    return Layout(
        path=file.path,
        model_column=model,
        tokens=tuple(column for column in TOKEN_COLUMNS if column in header),
        periods=wants_period and not no_period,
    )


def scan_columns(layout: Layout, *, typed: bool) -> pl.LazyFrame:
    overrides = {layout.source(c): TYPES[c] for c in layout.columns if typed and c in TYPES}
    scan = pl.scan_csv(
        layout.path, infer_schema=False, schema_overrides=overrides, raise_if_empty=False
    )
    return scan.select(pl.col(layout.source(column)).alias(column) for column in layout.columns)


def read_header(path: Path) -> tuple[str, ...]:
    """The column names polars reads; a known name given twice is refused."""
    try:
        if path.stat().st_size == 0:
            return ()
        scan = pl.scan_csv(path, infer_schema=False, raise_if_empty=False)
        names = tuple(scan.collect_schema().names())
        written = written_header(path) if names else []
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the export: {exc.strerror}") from exc
    except pl.exceptions.PolarsError as exc:
        raise unreadable(path, exc) from exc
    twice = repeated_known(written)
    if twice is not None:
        raise UsageError(
            f"{path}: the header names column '{twice}' twice: which one holds the data is unknown",
            column=twice,
        )
    return names


def repeated_known(names: Sequence[str]) -> str | None:
    """The first known column name given a second time (one pass, however long the header)."""
    seen: set[str] = set()
    for name in names:
        if name in KNOWN_COLUMNS:
            if name in seen:
                return name
            seen.add(name)
    return None


def written_header(path: Path) -> list[str]:
    """The header's names as written (polars renames a repeated one), read as its first record
    by the csv module; [] when it cannot be (then polars' reading of it says what is wrong)."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        try:
            return next(csv.reader(file), [])
        except (UnicodeDecodeError, csv.Error):
            return []


def unreadable(path: Path, exc: pl.exceptions.PolarsError) -> UsageError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "utf-8" in reason.lower() or "utf8" in reason.lower():
        return UsageError(f"{path}: not a readable CSV export: not valid UTF-8 text")
    return UsageError(f"{path}: not a readable CSV export: {quote(reason)}")  # it may echo data
