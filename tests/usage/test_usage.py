"""costwatch.usage: a Langdock export CSV becomes a typed frame, or a precise UsageError."""

from __future__ import annotations

import csv as stdcsv
import io
import logging
import math
import tempfile
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwatch.errors import (
    ExportIncompleteError,
    ExportPeriodError,
    ExportProtocolError,
    UsageError,
)
from costwatch.usage import (
    MODEL_COLUMN_CANDIDATES,
    SCHEMA,
    TOKEN_COLUMNS,
    ExportFile,
    Usage,
    load,
    load_csv,
)

BASIC = "period_start,period_end,org_id,api_key_id,api_key_name,model,requests,total_cost_usd"
BYOK = BASIC + "," + ",".join(TOKEN_COLUMNS)
SEPTEMBER = "2026-09-01,2026-09-30,org1"


def write(tmp_path: Path, content: str | bytes, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def csv(*rows: str, header: str = BASIC) -> str:
    return "\n".join([header, *rows]) + "\n"


def records(usage: Usage, *columns: str) -> list[tuple[object, ...]]:
    return usage.frame.select(columns).rows()


# --- what a valid export may look like -------------------------------------------------------

TOLERATED: list[tuple[str, bytes, list[tuple[object, ...]]]] = [
    (
        "a UTF-8 BOM before the header",
        b"\xef\xbb\xbf" + csv(f"{SEPTEMBER},k1,bot,gpt-4o,3,1.5").encode(),
        [("k1", "bot", "gpt-4o", 3, 1.5)],
    ),
    (
        "CRLF line ends",
        csv(f"{SEPTEMBER},k1,bot,gpt-4o,3,1.5", f"{SEPTEMBER},k2,b2,gpt-4o,1,0.5")
        .replace("\n", "\r\n")
        .encode(),
        [("k1", "bot", "gpt-4o", 3, 1.5), ("k2", "b2", "gpt-4o", 1, 0.5)],
    ),
    (
        "a quoted name with a comma, quotes and a newline",
        csv(f'{SEPTEMBER},k1,"Sales, EMEA ""pilot""\nline two",gpt-4o,3,1.5').encode(),
        [("k1", 'Sales, EMEA "pilot"\nline two', "gpt-4o", 3, 1.5)],
    ),
    (
        "non-ASCII names",
        csv(f"{SEPTEMBER},k1,Forschung München 研究,gpt-4o,3,1.5").encode(),
        [("k1", "Forschung München 研究", "gpt-4o", 3, 1.5)],
    ),
    (
        "extra columns the vendor added later, anywhere",
        csv(
            f"x,{SEPTEMBER},k1,bot,gpt-4o,3,1.5,eu",
            header="new_first," + BASIC + ",region",
        ).encode(),
        [("k1", "bot", "gpt-4o", 3, 1.5)],
    ),
    (
        "no trailing newline",
        csv(f"{SEPTEMBER},k1,bot,gpt-4o,3,1.5").rstrip("\n").encode(),
        [("k1", "bot", "gpt-4o", 3, 1.5)],
    ),
    (
        "a whole-number float in requests (3.0)",
        csv(f"{SEPTEMBER},k1,bot,gpt-4o,3.0,1.5").encode(),
        [("k1", "bot", "gpt-4o", 3, 1.5)],
    ),
    (
        "no period or org columns",
        b"api_key_id,api_key_name,model,requests,total_cost_usd\nk1,bot,gpt-4o,3,1.5\n",
        [("k1", "bot", "gpt-4o", 3, 1.5)],
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [pytest.param(content, expected, id=label) for label, content, expected in TOLERATED],
)
def test_tolerated_export_loads_into_the_schema(
    tmp_path: Path, content: bytes, expected: list[tuple[object, ...]]
) -> None:
    usage = load_csv(write(tmp_path, content))
    assert usage.frame.schema == pl.Schema(SCHEMA)
    columns = ("api_key_id", "api_key_name", "model", "requests", "total_cost_usd")
    assert records(usage, *columns) == expected
    assert usage.rows_read == len(expected)


@pytest.mark.parametrize(
    "content",
    [b"", BASIC.encode(), (BASIC + "\n").encode(), (BYOK + "\r\n").encode(), b"\xef\xbb\xbf"],
    ids=["zero bytes", "header without newline", "header only", "BYOK header, CRLF", "BOM only"],
)
def test_empty_export_is_zero_usage_with_the_schema(tmp_path: Path, content: bytes) -> None:
    usage = load_csv(write(tmp_path, content))
    assert usage.frame.schema == pl.Schema(SCHEMA)
    assert usage.frame.height == 0
    assert usage.rows_read == 0
    assert usage.model_column is None


def test_no_files_is_zero_usage_with_the_schema() -> None:
    usage = load([])
    assert usage.frame.schema == pl.Schema(SCHEMA)
    assert usage.frame.height == 0
    assert (usage.has_tokens, usage.model_column, usage.rows_read) == (False, None, 0)


def test_empty_requests_and_cost_read_as_zero_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        csv(
            f"{SEPTEMBER},k1,bot,gpt-4o,,1.5",
            f"{SEPTEMBER},k2,b2,gpt-4o,2,",
            f"{SEPTEMBER},k3,b3,m,,",
        ),
    )
    with caplog.at_level(logging.WARNING, logger="costwatch.usage"):
        usage = load_csv(path)
    assert records(usage, "api_key_id", "requests", "total_cost_usd") == [
        ("k1", 0, 1.5),
        ("k2", 2, 0.0),
        ("k3", 0, 0.0),
    ]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["4 empty requests/total_cost_usd cells read as 0"]


def test_empty_token_cells_stay_null(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,bot,gpt-4o,3,1.5,10,,,,", header=BYOK))
    usage = load_csv(path)
    assert records(usage, *TOKEN_COLUMNS) == [(10, None, None, None, None)]
    assert usage.has_tokens


# --- what must be refused, and how it is said ------------------------------------------------

REFUSED: list[tuple[str, str, str, str | None, int | None]] = [
    (
        "text in the cost column",
        csv(*[f"{SEPTEMBER},k{i},n,m,1,1" for i in range(4)], f"{SEPTEMBER},k4,n,m,1,abc"),
        "column 'total_cost_usd', row 5: 'abc' is not a number",
        "total_cost_usd",
        5,
    ),
    (
        "a negative request count",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,-3,1"),
        "column 'requests', row 2: '-3' is negative",
        "requests",
        2,
    ),
    (
        "a negative cost",
        csv(f"{SEPTEMBER},k1,n,m,1,-0.5"),
        "column 'total_cost_usd', row 1: '-0.5' is negative",
        "total_cost_usd",
        1,
    ),
    (
        "a fractional request count",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,3.5,1"),
        "column 'requests', row 2: '3.5' is not a whole number",
        "requests",
        2,
    ),
    (
        "NaN as a cost",
        csv(f"{SEPTEMBER},k1,n,m,1,NaN"),
        "column 'total_cost_usd', row 1: 'NaN' is not a number",
        "total_cost_usd",
        1,
    ),
    (
        "an infinite cost",
        csv(f"{SEPTEMBER},k1,n,m,1,inf"),
        "column 'total_cost_usd', row 1: 'inf' is not a number",
        "total_cost_usd",
        1,
    ),
    (
        "a negative token count",
        csv(f"{SEPTEMBER},k1,n,m,1,1,5,5,0,0,-1", header=BYOK),
        "column 'no_cache_tokens', row 1: '-1' is negative",
        "no_cache_tokens",
        1,
    ),
    (
        "text in a token column",
        csv(f"{SEPTEMBER},k1,n,m,1,1,5,x5,0,0,1", header=BYOK),
        "column 'sum_completion_tokens', row 1: 'x5' is not a number",
        "sum_completion_tokens",
        1,
    ),
    (
        "an empty api_key_id",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,1,1", f"{SEPTEMBER},,n,m,1,1"),
        "column 'api_key_id', row 3: the API key id is empty",
        "api_key_id",
        3,
    ),
    (
        'a quoted empty api_key_id ("")',
        csv(f'{SEPTEMBER},"",n,m,1,1'),
        "column 'api_key_id', row 1: the API key id is empty",
        "api_key_id",
        1,
    ),
    (
        "the first bad row wins over a later one in an earlier column",
        csv(f"{SEPTEMBER},k1,n,m,1,oops", f"{SEPTEMBER},k2,n,m,x,1"),
        "column 'total_cost_usd', row 1: 'oops' is not a number",
        "total_cost_usd",
        1,
    ),
    (
        "rows are counted as records, not lines",
        csv(f'{SEPTEMBER},k1,"two\nlines",m,1,1', f"{SEPTEMBER},k2,n,m,1,-1"),
        "column 'total_cost_usd', row 2: '-1' is negative",
        "total_cost_usd",
        2,
    ),
    (
        "an unquoted comma in a name is a field too many",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k1,Sales, EMEA,gpt,1,1"),
        "row 2 has 9 fields where the header has 8 (a value with an unquoted comma?)",
        None,
        2,
    ),
    (
        "a missing required column",
        "period_start,api_key_id,api_key_name,model,total_cost_usd\n2026-09-01,k1,n,m,1\n",
        "missing required column 'requests' (the header has: "
        "'period_start', 'api_key_id', 'api_key_name', 'model', 'total_cost_usd')",
        "requests",
        None,
    ),
    (
        "no model column",
        "api_key_id,api_key_name,requests,total_cost_usd\nk1,n,1,1\n",
        "no model column: looked for model, model_name, raw_model, name "
        "(the header has: 'api_key_id', 'api_key_name', 'requests', 'total_cost_usd')",
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("content", "message", "column", "row"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSED],
)
def test_refused_export_names_column_and_row(
    tmp_path: Path, content: str, message: str, column: str | None, row: int | None
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(UsageError) as caught:
        load_csv(path)
    assert str(caught.value) == f"{path}: {message}"
    assert (caught.value.column, caught.value.row) == (column, row)


@pytest.mark.parametrize(
    "content",
    [
        b"api_key_id,api_key_name,model,requests,total_cost_usd\nk1,\xff\xfe,m,1,1\n",
        b"\xff\xfe\x00a\x00b",
    ],
    ids=["invalid UTF-8 in a name", "UTF-16 bytes"],
)
def test_unparseable_csv_is_a_usage_error(tmp_path: Path, content: str | bytes) -> None:
    path = write(tmp_path, content)
    with pytest.raises(UsageError, match=f"^{path}: "):
        load_csv(path)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the export"):
        load_csv(tmp_path / "absent.csv")


# --- ragged rows and duplicated header names ---------------------------------------------------

RAGGED: list[tuple[str, str, int, int, str]] = [
    (
        "an unquoted thousands separator in the cost",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,3,12,345.67"),
        2,
        9,
        "a value with an unquoted comma?",
    ),
    (
        "a row cut short before its cost",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,3", f"{SEPTEMBER},k3,n,m,1,1"),
        2,
        7,
        "the row is cut short?",
    ),
    (
        "the last row cut short without a line end",
        csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,3").rstrip("\n"),
        2,
        7,
        "the row is cut short?",
    ),
    (
        "a BYOK row missing its last token cell",
        csv(f"{SEPTEMBER},k1,n,m,1,1,5,5,0,0,1", f"{SEPTEMBER},k2,n,m,1,1,5,5,0,0", header=BYOK),
        2,
        12,
        "the row is cut short?",
    ),
    (
        "a trailing comma",
        csv(f"{SEPTEMBER},k1,n,m,1,1,"),
        1,
        9,
        "a value with an unquoted comma?",
    ),
    (
        "an empty line among the rows",
        csv(f"{SEPTEMBER},k1,n,m,1,1", "", f"{SEPTEMBER},k2,n,m,1,1"),
        2,
        1,
        "the row is cut short?",
    ),
    (
        "rows are counted as records, not lines",
        csv(f'{SEPTEMBER},k1,"two\nlines, quoted",m,1,1', f"{SEPTEMBER},k2,n,m,1,1,1"),
        2,
        9,
        "a value with an unquoted comma?",
    ),
]


@pytest.mark.parametrize(
    ("content", "row", "fields", "hint"),
    [pytest.param(*case[1:], id=case[0]) for case in RAGGED],
)
def test_a_row_with_more_or_fewer_fields_than_the_header_is_refused_by_its_number(
    tmp_path: Path, content: str, row: int, fields: int, hint: str
) -> None:
    path = write(tmp_path, content)
    header = len(content.split("\n", 1)[0].split(","))
    with pytest.raises(UsageError) as caught:
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    assert str(caught.value) == (
        f"{path}: row {row} has {fields} fields where the header has {header} ({hint})"
    )
    assert (caught.value.column, caught.value.row) == (None, row)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), fields=st.sampled_from([-2, -1, 1, 2]), value=st.sampled_from(["", "7"]))
def test_a_field_more_or_less_in_any_row_at_any_place_is_refused_naming_that_row(
    tmp_path: Path, data: st.DataObject, fields: int, value: str
) -> None:
    rows = list(stdcsv.reader(io.StringIO(VALID, newline="")))
    row = data.draw(st.integers(1, len(rows) - 1), label="row")
    cells = rows[row]
    at = data.draw(st.integers(0, len(cells) - 1), label="at")
    if fields > 0:
        cells[at:at] = [value] * fields
    else:
        del cells[at : at - fields]
    out = io.StringIO()
    stdcsv.writer(out, lineterminator="\n").writerows(rows)
    path = write(tmp_path, out.getvalue(), "ragged.csv")
    with pytest.raises(UsageError) as caught:
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    assert caught.value.row == row
    assert "fields where the header has" in str(caught.value)


@pytest.mark.parametrize(
    "column",
    ["total_cost_usd", "requests", "api_key_id", "model", "sum_prompt_tokens", "period_end"],
)
def test_a_duplicated_header_name_is_refused_naming_the_column(tmp_path: Path, column: str) -> None:
    header = BYOK + "," + column
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,1,1,5,5,0,0,1,3", header=header))
    with pytest.raises(UsageError) as caught:
        load_csv(path)
    assert str(caught.value) == (
        f"{path}: the header names column '{column}' twice: which one holds the data is unknown"
    )
    assert caught.value.column == column


def test_a_duplicated_column_that_is_not_read_is_tolerated(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"x,y,{SEPTEMBER},k1,n,m,1,1", header="region,region," + BASIC))
    assert records(load_csv(path), "api_key_id", "total_cost_usd") == [("k1", 1.0)]


# --- rows read against the rows announced (the export answer's recordCount) ------------------

TWO_ROWS = csv(f"{SEPTEMBER},k1,n,m,1,1", f"{SEPTEMBER},k2,n,m,1,1")
RECORD_COUNTS: list[tuple[str, str, int, type[Exception], str]] = [
    ("a 0-byte file", "", 3, ExportIncompleteError, "0 rows but the export announced 3"),
    ("the header only", csv(), 3, ExportIncompleteError, "0 rows but the export announced 3"),
    ("a row missing", TWO_ROWS, 3, ExportIncompleteError, "2 rows but the export announced 3"),
    ("a row too many", TWO_ROWS, 1, ExportProtocolError, "2 rows but the export announced 1"),
]


@pytest.mark.parametrize(
    ("content", "announced", "error", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in RECORD_COUNTS],
)
def test_a_part_whose_rows_are_not_the_rows_announced_is_refused(
    tmp_path: Path, content: str, announced: int, error: type[Exception], message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(error) as caught:
        load([ExportFile(path, record_count=announced)])
    assert str(caught.value) == f"{path}: the file holds {message} (recordCount)"


@pytest.mark.parametrize(
    ("content", "announced"), [("", 0), (csv(), 0), (TWO_ROWS, 2)], ids=["empty", "header", "two"]
)
def test_a_part_with_the_rows_announced_loads(tmp_path: Path, content: str, announced: int) -> None:
    path = write(tmp_path, content)
    assert load([ExportFile(path, record_count=announced)]).rows_read == announced


# --- the model column ------------------------------------------------------------------------


@pytest.mark.parametrize("model_column", MODEL_COLUMN_CANDIDATES)
def test_model_column_is_detected_and_logged(
    tmp_path: Path, model_column: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path, f"api_key_id,api_key_name,{model_column},requests,total_cost_usd\nk1,n,gpt,1,2\n"
    )
    with caplog.at_level(logging.DEBUG, logger="costwatch.usage"):
        usage = load_csv(path)
    assert usage.model_column == model_column
    assert records(usage, "model") == [("gpt",)]
    assert [r.getMessage() for r in caplog.records if r.name == "costwatch.usage"] == [
        f"{path}: using '{model_column}' as the model column"
    ]


def test_first_model_candidate_in_order_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path, "name,raw_model,api_key_id,api_key_name,requests,total_cost_usd\nA,B,k,n,1,1\n"
    )
    usage = load_csv(path)
    assert (usage.model_column, records(usage, "model")) == ("raw_model", [("B",)])


# --- BYOK ------------------------------------------------------------------------------------


def test_byok_export_carries_tokens(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,2,1,100,50,30,10,60", header=BYOK))
    usage = load_csv(path)
    assert usage.has_tokens
    assert records(usage, *TOKEN_COLUMNS) == [(100, 50, 30, 10, 60)]
    assert usage.per_key["tokens"].to_list() == [150]


def test_non_byok_export_has_null_tokens(tmp_path: Path) -> None:
    usage = load_csv(write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,2,1")))
    assert not usage.has_tokens
    assert records(usage, *TOKEN_COLUMNS) == [(None,) * len(TOKEN_COLUMNS)]
    assert usage.per_key["tokens"].to_list() == [None]


# --- several parts, repeated rows ------------------------------------------------------------


def test_parts_are_summed_per_key_and_model_with_the_last_name(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        csv(
            "2026-09-01,2026-09-15,o,k1,old name,gpt,2,1.0,10,5,,,",
            "2026-09-01,2026-09-15,o,k2,other,gpt,1,0.5,,,,,",
            header=BYOK,
        ),
        "part1.csv",
    )
    second = write(
        tmp_path,
        csv(
            "2026-09-16,2026-09-30,o,k1,new name,gpt,3,2.0,20,,,,",
            "2026-09-16,2026-09-30,o,k1,new name,claude,1,4.0,,,,,",
            header=BYOK,
        ),
        "part2.csv",
    )
    usage = load([ExportFile(first), ExportFile(second)])
    assert usage.rows_read == 4
    columns = ("api_key_id", "api_key_name", "model", "requests", "total_cost_usd")
    assert sorted(records(usage, *columns, "sum_prompt_tokens", "sum_completion_tokens")) == [
        ("k1", "new name", "claude", 1, 4.0, None, None),
        ("k1", "new name", "gpt", 5, 3.0, 30, 5),
        ("k2", "other", "gpt", 1, 0.5, None, None),
    ]


def test_repeated_key_and_model_in_one_file_are_summed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        csv(
            f"{SEPTEMBER},k1,n,gpt,1,1.0",
            f"{SEPTEMBER},k1,n,claude,1,1.0",
            f"{SEPTEMBER},k1,n,gpt,2,0.5",
        ),
    )
    usage = load_csv(path)
    assert records(usage, "api_key_id", "model", "requests", "total_cost_usd") == [
        ("k1", "gpt", 3, 1.5),
        ("k1", "claude", 1, 1.0),
    ]
    assert usage.rows_read == 3


def test_empty_part_beside_a_full_one_adds_nothing(tmp_path: Path) -> None:
    full = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,1,1.0"), "full.csv")
    empty = write(tmp_path, "", "empty.csv")
    usage = load([ExportFile(empty), ExportFile(full)])
    assert records(usage, "api_key_id", "requests") == [("k1", 1)]
    assert usage.model_column == "model"


# --- the period check ------------------------------------------------------------------------

PERIODS = [
    ("2026-09-01", "2026-09-30", date(2026, 9, 1), date(2026, 9, 30)),  # exactly
    ("2026-08-31", "2026-10-01", date(2026, 9, 1), date(2026, 9, 30)),  # one day of UTC slack
    ("2026-09-02", "2026-09-29", date(2026, 9, 1), date(2026, 9, 30)),  # the same, inward
    ("2026-11-20", "2026-11-20", date(2026, 11, 20), date(2026, 11, 20)),  # the open day
    ("2026-09-01", "2026-09-30", None, None),  # bounds unknown: no check
]


@pytest.mark.parametrize(("start", "end", "first_day", "last_day"), PERIODS)
def test_period_within_the_request_passes(
    tmp_path: Path, start: str, end: str, first_day: date | None, last_day: date | None
) -> None:
    path = write(tmp_path, csv(f"{start},{end},o,k1,n,m,1,1"))
    assert load_csv(path, first_day=first_day, last_day=last_day).rows_read == 1


def test_period_outside_the_request_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,1,1"))
    with pytest.raises(ExportPeriodError) as caught:
        load_csv(path, first_day=date(2026, 11, 1), last_day=date(2026, 11, 25))
    assert str(caught.value) == (
        f"{path}: export covers 2026-09-01..2026-09-30 but 2026-11-01..2026-11-25 was requested"
    )
    assert caught.value.reason == "period_mismatch"


@pytest.mark.parametrize(
    ("start", "end"),
    [("2026-08-30", "2026-09-30"), ("2026-09-01", "2026-10-02")],
    ids=["two days early", "two days late"],
)
def test_period_beyond_one_day_of_slack_is_refused(tmp_path: Path, start: str, end: str) -> None:
    path = write(tmp_path, csv(f"{start},{end},o,k1,n,m,1,1"))
    with pytest.raises(ExportPeriodError, match="was requested"):
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))


PARTIAL: list[tuple[str, list[str], str]] = [
    (
        "a CSV for the first half of the range",
        ["2026-09-01,2026-09-15,o,k1,n,m,1,1"],
        "row 1 covers 2026-09-01..2026-09-15 but 2026-09-01..2026-09-30 was requested",
    ),
    (
        "a CSV for the second half of the range",
        ["2026-09-16,2026-09-30,o,k1,n,m,1,1"],
        "row 1 covers 2026-09-16..2026-09-30 but 2026-09-01..2026-09-30 was requested",
    ),
    (
        "one row for less than the range among rows for all of it",
        [
            f"{SEPTEMBER},k1,n,m,1,1",
            "2026-09-01,2026-09-20,o,k2,n,m,1,1",
            f"{SEPTEMBER},k3,n,m,1,1",
        ],
        "row 2 covers 2026-09-01..2026-09-20 but 2026-09-01..2026-09-30 was requested",
    ),
    (
        "two days short at the end",
        ["2026-09-01,2026-09-28,o,k1,n,m,1,1"],
        "row 1 covers 2026-09-01..2026-09-28 but 2026-09-01..2026-09-30 was requested",
    ),
]


@pytest.mark.parametrize(
    ("rows", "message"), [pytest.param(*case[1:], id=case[0]) for case in PARTIAL]
)
def test_a_period_covering_less_than_the_range_asked_for_is_refused(
    tmp_path: Path, rows: list[str], message: str
) -> None:
    path = write(tmp_path, csv(*rows))
    with pytest.raises(ExportPeriodError) as caught:
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    assert str(caught.value) == f"{path}: {message}"
    assert caught.value.reason == "period_mismatch"


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(-4, 4),
    end=st.integers(-4, 4),
    first=st.dates(date(2026, 1, 1), date(2026, 12, 31)),
    days=st.integers(0, 40),
)
def test_a_period_is_accepted_exactly_when_it_is_within_a_day_of_the_range(
    start: int, end: int, first: date, days: int
) -> None:
    """Within one day of the requested bounds, either way (UTC dates of a local range), or
    refused; never a part of the range read as all of it."""
    last = first + timedelta(days=days)
    period = (first + timedelta(days=start), last + timedelta(days=end))
    if period[0] > period[1]:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), csv(f"{period[0]},{period[1]},o,k1,n,m,1,1"))
        if abs(start) <= 1 and abs(end) <= 1:
            assert load_csv(path, first_day=first, last_day=last).rows_read == 1
        else:
            with pytest.raises(ExportPeriodError):
                load_csv(path, first_day=first, last_day=last)


def test_an_empty_period_cell_is_refused_when_the_range_is_known(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,1,1", ",2026-09-30,o,k2,n,m,1,1"))
    with pytest.raises(UsageError) as caught:
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    assert str(caught.value) == f"{path}: column 'period_start', row 2: is empty"
    assert (caught.value.column, caught.value.row) == ("period_start", 2)


def test_a_download_without_period_columns_is_refused_when_the_range_is_known(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "api_key_id,api_key_name,model,requests,total_cost_usd\nk1,n,m,1,1\n")
    with pytest.raises(UsageError) as caught:
        load([ExportFile(path, date(2026, 9, 1), date(2026, 9, 30))])
    assert str(caught.value) == (
        f"{path}: missing column 'period_start': the export cannot be checked against the "
        "range asked for (the header has: 'api_key_id', 'api_key_name', 'model', 'requests', "
        "'total_cost_usd')"
    )
    # A saved file written without them (check --csv) is read, with a warning.
    assert load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30)).rows_read == 1
    assert "no period_start column: its period cannot be checked" in caplog.text


def test_period_start_after_end_is_refused_with_its_row(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,1,1", "2026-09-30,2026-09-01,o,k2,n,m,1,1"))
    with pytest.raises(ExportPeriodError) as caught:
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    assert str(caught.value) == (
        f"{path}: row 2: period_start 2026-09-30 is after period_end 2026-09-01"
    )


def test_bad_date_in_a_period_column_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, csv(f"{SEPTEMBER},k1,n,m,1,1", "2026-09-01,2026-02-30,o,k2,n,m,1,1"))
    with pytest.raises(UsageError) as caught:
        load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    assert str(caught.value) == (
        f"{path}: column 'period_end', row 2: '2026-02-30' is not a date (YYYY-MM-DD)"
    )
    assert (caught.value.column, caught.value.row) == ("period_end", 2)


def test_each_part_is_checked_against_its_own_range(tmp_path: Path) -> None:
    early = write(tmp_path, csv("2026-09-01,2026-09-15,o,k1,n,m,1,1"), "a.csv")
    late = write(tmp_path, csv("2026-09-16,2026-09-30,o,k1,n,m,1,1"), "b.csv")
    parts = [
        ExportFile(early, date(2026, 9, 1), date(2026, 9, 15)),
        ExportFile(late, date(2026, 9, 1), date(2026, 9, 15)),
    ]
    with pytest.raises(ExportPeriodError, match=f"^{late}: export covers 2026-09-16..2026-09-30"):
        load(parts)


# --- aggregations ----------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> Usage:
    rows = [
        "k1,alpha,gpt,10,5.0,100,10,,,",
        "k1,alpha,claude,5,1.0,50,,,,",
        "k1,alpha,mistral,1,1.0,,,,,",
        "k1,alpha,llama,1,0.5,,,,,",
        "k2,beta,gpt,100,20.0,,,,,",
        "k3,gamma,gpt,1,5.0,,,,,",
        "k4,delta,gpt,3,7.5,,,,,",
    ]
    return load_csv(write(tmp_path, csv(*[f"{SEPTEMBER},{r}" for r in rows], header=BYOK)))


def test_per_key_sums_and_orders_by_spend_then_name(workspace: Usage) -> None:
    table = workspace.per_key
    assert table.columns == [
        "api_key_id",
        "api_key_name",
        "requests",
        "total_cost_usd",
        "tokens",
        "models",
    ]
    assert table.rows() == [
        ("k2", "beta", 100, 20.0, None, 1),
        ("k1", "alpha", 17, 7.5, 160, 4),
        ("k4", "delta", 3, 7.5, None, 1),
        ("k3", "gamma", 1, 5.0, None, 1),
    ]


def test_per_key_of_zero_usage_is_empty(tmp_path: Path) -> None:
    assert load([]).per_key.height == 0


def test_top_models_keeps_the_biggest_per_key(workspace: Usage) -> None:
    assert workspace.top_models(2).rows() == [
        ("k1", "gpt", 5.0, 10),
        ("k1", "claude", 1.0, 5),
        ("k2", "gpt", 20.0, 100),
        ("k3", "gpt", 5.0, 1),
        ("k4", "gpt", 7.5, 3),
    ]


def test_top_models_breaks_ties_by_row_order(workspace: Usage) -> None:
    top = workspace.top_models(3).filter(pl.col("api_key_id") == "k1")
    assert top["model"].to_list() == ["gpt", "claude", "mistral"]


def test_top_models_is_exact_when_a_keys_rows_are_scattered(tmp_path: Path) -> None:
    rows = [f"{SEPTEMBER},k{i % 7},n,m{i},1,{(i * 37) % 101}" for i in range(200)]
    usage = load_csv(write(tmp_path, csv(*rows)))
    expected = (
        usage.frame.sort(["api_key_id", "total_cost_usd"], descending=[False, True])
        .group_by("api_key_id", maintain_order=True)
        .head(3)
        .select("api_key_id", "model", "total_cost_usd", "requests")
    )
    assert usage.top_models().rows() == expected.rows()


def test_top_models_of_some_keys_are_theirs_of_every_key(tmp_path: Path) -> None:
    rows = [f"{SEPTEMBER},k{i % 7},n,m{i},1,{(i * 37) % 101}" for i in range(200)]
    path = write(tmp_path, csv(*rows))
    every = load_csv(path).top_models(3)
    many = [f"k{i}" for i in range(1, 1500, 2)] + [f"x{i}" for i in range(500)]  # > _FEW_KEYS
    for keys in (["k3"], ["k1", "k5", "nobody"], [], many):
        expected = every.filter(pl.col("api_key_id").is_in(keys)).rows()
        fresh = load_csv(path)
        assert fresh.top_models(3, keys).rows() == expected  # ranked for these keys alone
        fresh.top_models(3)
        assert fresh.top_models(3, keys).rows() == expected  # read from every key's


# --- properties ------------------------------------------------------------------------------

VALID = csv(
    f"{SEPTEMBER},k1,bot,gpt-4o,3,1.5,10,5,1,1,8",
    f'{SEPTEMBER},k2,"a, ""b""",claude,1,0.25,,,,,',
    f"{SEPTEMBER},k3,ü,gpt-4o,0,0,0,0,0,0,0",
    header=BYOK,
)
HEADER = (BYOK + "\n").encode()
CELL_TEXT = st.one_of(
    st.sampled_from(["", "-1", "3.5", "1e3", "nan", "inf", "x", '"', ",", "\n", "2026-13-01"]),
    st.text(max_size=8),
)


def assert_sane_or_refused(load_it: Callable[[], Usage]) -> None:
    try:
        usage = load_it()
    except (UsageError, ExportPeriodError):
        return
    frame = usage.frame
    assert frame.schema == pl.Schema(SCHEMA)
    assert frame.height <= usage.rows_read
    for column in ("requests", "total_cost_usd", *TOKEN_COLUMNS):
        assert not (frame[column] < 0).any()
    assert all(math.isfinite(cost) for cost in frame["total_cost_usd"])
    assert frame["api_key_id"].null_count() == 0


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(HEADER.__add__)))
def test_arbitrary_bytes_load_sanely_or_raise_usage_error(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, content, "fuzz.csv")
    assert_sane_or_refused(lambda: load_csv(path, first_day=date(2026, 9, 1)))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), text=CELL_TEXT)
def test_one_mutated_cell_loads_sanely_or_raises_usage_error(
    tmp_path: Path, data: st.DataObject, text: str
) -> None:
    lines = VALID.splitlines()
    row = data.draw(st.integers(0, len(lines) - 1), label="line")
    cells = lines[row].split(",")
    column = data.draw(st.integers(0, len(cells) - 1), label="cell")
    cells[column] = text
    lines[row] = ",".join(cells)
    path = write(tmp_path, "\n".join(lines) + "\n", "mutated.csv")
    assert_sane_or_refused(
        lambda: load_csv(path, first_day=date(2026, 9, 1), last_day=date(2026, 9, 30))
    )
