"""Quoting outside text: one line, nothing a terminal or a log reader acts on, bounded, lossless."""

from __future__ import annotations

import ast
import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwatch.quote import LIMIT, quote, quote_items

# Characters that end a line, move the cursor, recolour a terminal or reorder text.
HOSTILE = (
    "\n\r\x0b\x0c\x1b\x00\x7f\x85\u2028\u2029"  # line ends, ESC, NUL, DEL, NEL, separators
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # bidi embeddings, overrides, isolates
    "\u200b\u200e\u200f\u061c\ufeff"  # zero-width space, direction marks, BOM
)
_MARKER = re.compile(r"\.\.\. \((\d+) more characters?\)\Z")

texts = st.text(alphabet=st.characters(codec=None) | st.sampled_from(HOSTILE), max_size=400)


def _shown(quoted: str) -> tuple[str, int]:
    """The text a quoted literal holds, and how many characters its marker says were cut."""
    marker = _MARKER.search(quoted)
    literal = quoted[: marker.start()] if marker else quoted
    value = ast.literal_eval(literal)
    assert isinstance(value, str)
    return value, int(marker[1]) if marker else 0


@given(texts, st.integers(min_value=1, max_value=300))
def test_a_quoted_text_has_no_character_a_terminal_or_log_reader_acts_on(
    text: str, limit: int
) -> None:
    quoted = quote(text, limit)
    assert not any(
        unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"} for char in quoted
    )
    assert quoted.splitlines() == [quoted]


@given(texts, st.integers(min_value=1, max_value=300))
def test_a_quoted_text_is_a_prefix_of_the_text_and_says_how_much_was_cut(
    text: str, limit: int
) -> None:
    quoted = quote(text, limit)
    value, cut = _shown(quoted)
    assert text.startswith(value)
    assert len(value) + cut == len(text)
    assert len(quoted) <= limit + 2 + len("... (99999 more characters)")
    if len(text) <= limit // 10:  # every character fits even when it takes ten to escape
        assert (value, cut) == (text, 0)


def test_a_200_mb_line_is_quoted_in_a_few_hundred_characters() -> None:
    text = "period_start,period_end," + "x" * 200_000_000
    quoted = quote(text)
    assert len(quoted) < LIMIT + 40
    assert quoted.endswith(f"... ({len(text) - LIMIT} more characters)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpt-4.1", "'gpt-4.1'"),
        ("a\nb", "'a\\nb'"),
        ("\x1b[31mred", "'\\x1b[31mred'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("\u202eevil", "'\\u202eevil'"),
        ("Zürich 東京", "'Zürich 東京'"),
        ("", "''"),
    ],
)
def test_quote_escapes_controls_and_keeps_the_rest_readable(text: str, expected: str) -> None:
    assert quote(text) == expected


@given(st.lists(texts, max_size=50), st.integers(min_value=1, max_value=300))
def test_a_quoted_list_stays_within_its_budget_and_counts_what_it_left_out(
    items: list[str], limit: int
) -> None:
    quoted = quote_items(items, limit)
    assert "\n" not in quoted
    assert "\x1b" not in quoted
    assert len(quoted) <= limit + 2 * len("... (99999 more characters)") + 40
    left = re.search(r"(?:\A|, )\.\.\. \((\d+) more items?\)\Z", quoted)
    body = quoted[: left.start()] if left else quoted
    if "more character" not in body:  # no item was cut: the list reads back whole
        shown = ast.literal_eval(f"[{body}]")
        assert shown == items[: len(shown)]
        assert len(shown) + (int(left[1]) if left else 0) == len(items)


def test_a_header_of_a_million_columns_is_listed_in_a_few_hundred_characters() -> None:
    header = [f"column_{index}" for index in range(1_000_000)]
    listed = quote_items(header)
    assert listed.startswith("'column_0', 'column_1', ")
    assert len(listed) < LIMIT + 40
    assert re.search(r"\.\.\. \(\d{6} more items\)\Z", listed)
