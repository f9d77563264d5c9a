"""A Langdock usage export (CSV) as one typed, validated polars frame, and its aggregations.

load(files) -> Usage        the parts of one export, summed; no parts (404) is zero usage
load_csv(path) -> Usage     a saved export (`costwatch check --csv`)

model.py     `Usage` (aggregations cached on it), `SCHEMA`, the columns, `ExportFile`
loader.py    one part after another: header, shape, typed scan, checks, aggregate
layout.py    which header columns a part is read from
checks.py    the rows announced, field counts, exact totals, the period covered
cells.py     the diagnostic path that names the first bad cell
csvshape.py  records and fields of CSV bytes, counted as they arrive
"""

from costwatch.usage.loader import load, load_csv
from costwatch.usage.model import (
    KNOWN_COLUMNS,
    MAX_COUNT,
    MODEL_COLUMN_CANDIDATES,
    PERIOD_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEMA,
    TOKEN_COLUMNS,
    ExportFile,
    Usage,
)

__all__ = [
    "KNOWN_COLUMNS",
    "MAX_COUNT",
    "MODEL_COLUMN_CANDIDATES",
    "PERIOD_COLUMNS",
    "REQUIRED_COLUMNS",
    "SCHEMA",
    "TOKEN_COLUMNS",
    "ExportFile",
    "Usage",
    "load",
    "load_csv",
]
