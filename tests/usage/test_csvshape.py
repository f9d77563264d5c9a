"""usage/csvshape.py: records and fields of CSV bytes, as Python's csv module and polars count."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwatch.usage.csvshape import CsvShape, measure

FIELD = st.one_of(
    st.sampled_from(["", "k1", "12,345.67", 'say "hi"', "two\nlines", "crlf\r\nin", '""', ","]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)
ROW = st.lists(FIELD, min_size=1, max_size=6)


def encode(rows: list[list[str]], line_end: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=line_end).writerows(rows)
    return out.getvalue().encode()


def fed(content: bytes, cuts: list[int]) -> CsvShape:
    """`content` fed in the chunks that `cuts` (offsets) make."""
    shape = CsvShape()
    edges = [0, *sorted({c % (len(content) + 1) for c in cuts}), len(content)]
    for start, end in itertools.pairwise(edges):
        shape.feed(content[start:end])
    return shape


def widths(rows: list[list[str]]) -> list[int]:
    """Field counts as written; csv writes a lone empty field as `""`, a row of its own."""
    return [len(row) for row in rows]


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(ROW, min_size=1, max_size=8),
    line_end=st.sampled_from(["\n", "\r\n"]),
    final_line_end=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_records_and_fields_match_what_was_written_in_any_chunks(
    rows: list[list[str]], line_end: str, final_line_end: bool, cuts: list[int]
) -> None:
    content = encode(rows, line_end)
    if not final_line_end:
        content = content[: -len(line_end)]
    shape = fed(content, cuts)
    counts = widths(rows)
    assert shape.records == len(rows)
    assert shape.fields == counts[0]
    ragged = next(((i, n) for i, n in enumerate(counts) if n != counts[0]), None)
    assert shape.first_ragged == ragged
    assert not shape.ends_in_quote
    assert shape.size == len(content)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(ROW, min_size=2, max_size=8),
    cut=st.integers(1, 10_000),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_a_cut_is_seen_as_fewer_records_a_short_last_one_or_an_open_quote(
    rows: list[list[str]], cut: int, cuts: list[int]
) -> None:
    """Cut anywhere, bytes never look like the whole: something says they are incomplete."""
    width = len(rows[0])
    rows = [(row + [""] * width)[:width] for row in rows]  # a file that is not ragged
    content = encode(rows, "\r\n")
    cut_at = cut % len(content)
    shape = fed(content[:cut_at], cuts)
    if cut_at == 0:
        assert shape.records == 0
        return
    incomplete = (
        shape.records < len(rows)
        or shape.cut_short
        or shape.ends_in_quote
        or shape.first_ragged is not None
    )
    if not incomplete:  # then only the last value of the last row, or its line end, was cut
        text = content[:cut_at].decode("utf-8", errors="replace")
        got = list(csv.reader(io.StringIO(text, newline="")))
        assert got[:-1] == rows[:-1]
        assert got[-1][:-1] == rows[-1][:-1]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.lists(FIELD, min_size=3, max_size=3), min_size=1, max_size=8))
def test_polars_reads_as_many_rows_as_the_shape_counts(
    tmp_path: Path, rows: list[list[str]]
) -> None:
    path = tmp_path / "shape.csv"
    path.write_bytes(encode([["a", "b", "c"], *rows], "\r\n"))
    shape = measure(path)
    frame = pl.read_csv(path, infer_schema=False)
    assert (shape.rows, shape.fields, shape.first_ragged) == (frame.height, 3, None)


def test_an_open_quote_at_the_end_is_seen() -> None:
    shape = CsvShape()
    shape.feed(b'a,b\n1,"cut off')
    assert shape.ends_in_quote
    assert shape.records == 2


def test_a_row_with_a_field_too_many_is_named_by_its_number() -> None:
    shape = CsvShape()
    shape.feed(b"a,b,c\r\n1,2,3\r\n4,12,345.67,6\r\n7,8,9\r\n")
    assert shape.first_ragged == (2, 4)
    assert (shape.records, shape.rows) == (4, 3)


def test_a_last_row_without_a_line_end_and_missing_fields_is_cut_short() -> None:
    shape = CsvShape()
    shape.feed(b"a,b,c\n1,2,3\n4,5")
    assert shape.cut_short
    assert shape.first_ragged == (2, 2)
    whole = CsvShape()
    whole.feed(b"a,b,c\n1,2,3\n4,5,6")
    assert not whole.cut_short
    assert whole.first_ragged is None


def test_nothing_fed_is_no_records_and_no_fields() -> None:
    shape = CsvShape()
    shape.feed(b"")
    assert (shape.records, shape.rows, shape.fields, shape.first_ragged) == (0, 0, 0, None)
