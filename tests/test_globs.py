"""Globs mean the same in Python (fnmatch) and in polars (Rust regex), for any name, and so
does the rule that selects a key by its name or its id."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import globs

ALPHABET = st.sampled_from(list("ab-*?[]!^\\.$<>~#&@ \n,\"'Zü{}()|+"))
PATTERNS = st.text(ALPHABET, max_size=8)
NAMES = st.lists(st.text(ALPHABET, max_size=8), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(pattern=PATTERNS, names=NAMES)
def test_polars_regex_agrees_with_fnmatch(pattern: str, names: list[str]) -> None:
    frame = pl.DataFrame({"name": names})
    expr = globs.any_matches([pattern], names=pl.col("name"), ids=pl.lit("\x00no-id"))
    got = frame.select(expr.alias("hit"))["hit"].to_list()
    assert got == [globs.matches(pattern, name) for name in names]


@settings(max_examples=200, deadline=None)
@given(
    patterns=st.lists(PATTERNS, max_size=3),
    keys=st.lists(
        st.tuples(st.text(ALPHABET, max_size=4), st.text(ALPHABET, max_size=8)), min_size=1
    ),
)
def test_a_key_is_selected_by_the_same_rule_in_python_and_over_a_frame(
    patterns: list[str], keys: list[tuple[str, str]]
) -> None:
    """`key_matches` (the configuration, silences) and `any_matches` (budgets, validate) are
    one rule: a glob matches the key's name, or a pattern equals its id."""
    frame = pl.DataFrame({"id": [k for k, _ in keys], "name": [n for _, n in keys]})
    expr = globs.any_matches(patterns, names=pl.col("name"), ids=pl.col("id"))
    got = frame.with_columns(expr.alias("hit"))["hit"].to_list()
    assert got == [globs.key_matches(patterns, key_id, name) for key_id, name in keys]


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "anything at all", True),
        ("support-*", "support-bot-prod", True),
        ("support-*", "Support-bot", False),  # case-sensitive
        ("<!channel> *urgent*", "<!channel> *urgent*", True),
        ("team-[ab]-*", "team-a-1", True),
        ("team-[!ab]-*", "team-a-1", False),
        ("bot-?", "bot-12", False),
    ],
)
def test_glob_examples(pattern: str, name: str, expected: bool) -> None:
    assert globs.matches(pattern, name) is expected
    frame = pl.DataFrame({"name": [name]})
    assert frame.select(pl.col("name").str.contains(globs.to_regex(pattern))).item() is expected


def test_any_matches_takes_names_by_glob_and_ids_exactly() -> None:
    frame = pl.DataFrame({"id": ["k1", "k2", "k3"], "name": ["prod-a", "dev-b", "k1x"]})
    expr = globs.any_matches(["prod-*", "k3"], names=pl.col("name"), ids=pl.col("id"))
    assert frame.filter(expr)["id"].to_list() == ["k1", "k3"]


def test_unclosed_class_is_a_problem_and_a_good_glob_is_not() -> None:
    assert globs.problem("team-[ab") == "'[' at position 6 is never closed"
    assert globs.problem("team-[ab]*") is None
    assert globs.problem("") is not None


def test_a_name_with_glob_characters_is_matched_by_writing_it_exactly() -> None:
    assert globs.matches("team[a]", "team[a]")
    assert globs.matches("team[a]", "teama")  # and it is still a glob
    frame = pl.DataFrame({"id": ["k1", "k2"], "name": ["team[a]", "teamb"]})
    expr = globs.any_matches(["team[a]"], names=pl.col("name"), ids=pl.col("id"))
    assert frame.filter(expr)["id"].to_list() == ["k1"]
