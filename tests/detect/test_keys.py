"""costwatch.detect.keys: unowned spend (no budget but a catch-all selects the key), a key
seen for the first time, a dormant key that starts again, on histories whose answer is known."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from histories import MONDAY, Row, days_before, frame, steady
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch.config import Budget, Limits
from costwatch.config.detect import UnownedConfig
from costwatch.detect import key_events
from costwatch.detect.keys import is_catch_all

HISTORY = days_before(MONDAY, 60)
LIMITS = Limits(cost_usd=100)
TEAM = Budget(name="team-a", keys=("team-a-*",), exclude=("team-a-lab",), limits=LIMITS)
POOL = Budget(name="data", keys=("etl",), scope="shared", limits=LIMITS)
EVERY = Budget(name="every-key", keys=("*",), limits=LIMITS)
WORKSPACE = Budget(name="workspace", keys=("*",), scope="shared", limits=LIMITS)
FALLBACK = Budget(name="others", keys=("*-bot",), fallback=True, limits=LIMITS)
BUDGETS = (TEAM, POOL, EVERY, WORKSPACE, FALLBACK)
CONFIG = UnownedConfig(enabled=True)


def events(rows: list[Row], **kwargs: object) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name, *_ in table(rows, **kwargs).rows()]


def table(rows: list[Row], **kwargs: object) -> pl.DataFrame:
    config = kwargs.pop("config", CONFIG)
    assert isinstance(config, UnownedConfig)
    covered = kwargs.pop("covered", HISTORY)
    budgets = kwargs.pop("budgets", BUDGETS)
    result = key_events(frame(rows), MONDAY, covered, budgets, config)  # type: ignore[arg-type]
    return result.select("kind", "api_key_name", "cost_usd", "last_seen", "idle_days")


def known(name: str) -> list[Row]:
    return steady(name, "gpt-4o", 2.0, 10, HISTORY[-5:])


def test_a_key_only_a_catch_all_selects_is_unowned_spend() -> None:
    rows = [*known("team-a-bot"), *known("etl"), *known("stray"), *known("team-a-lab")]
    rows += [(MONDAY, name, "gpt-4o", 5.0, 10) for name in ("team-a-bot", "etl", "stray")]
    rows += [(MONDAY, "team-a-lab", "gpt-4o", 3.0, 10), (MONDAY, "tiny", "gpt-4o", 0.5, 10)]
    rows += known("tiny")
    assert events(rows) == [("unowned", "stray"), ("unowned", "team-a-lab")]
    assert events(rows, config=UnownedConfig(enabled=False)) == []


def test_catch_alls_are_fallbacks_and_star_globs() -> None:
    assert [is_catch_all(b) for b in BUDGETS] == [False, False, True, True, True]


def test_with_no_budget_naming_keys_every_spender_is_unowned() -> None:
    rows = [*known("a"), (MONDAY, "a", "m", 1.0, 1)]
    assert events(rows, budgets=()) == [("unowned", "a")]
    assert events(rows, budgets=(EVERY,)) == [("unowned", "a")]


def test_a_key_seen_for_the_first_time_once_the_history_holds_enough_days() -> None:
    rows = [*known("etl"), (MONDAY, "etl", "m", 1.0, 1), (MONDAY, "fresh", "m", 0.0, 3)]
    assert events(rows) == [("new", "fresh")]
    assert events(rows, covered=HISTORY[-29:]) == []  # 29 of the 30 days: a fresh store
    assert events(rows, config=UnownedConfig(enabled=True, new_keys=False)) == []


def test_a_dormant_key_that_starts_again() -> None:
    old = MONDAY - timedelta(days=40)
    rows = [(old, "etl", "m", 9.0, 9), (MONDAY, "etl", "m", 1.0, 1)]
    rows += [
        (MONDAY - timedelta(days=10), "team-a-x", "m", 1.0, 1),
        (MONDAY, "team-a-x", "m", 1, 1),
    ]
    assert table(rows).rows() == [("dormant", "etl", 1.0, old, 40)]
    assert events(rows, config=UnownedConfig(enabled=True, dormant_days=45)) == []
    assert events(rows, config=UnownedConfig(enabled=True, dormant=False)) == []
    # a day used at $0 without requests is no use: still dormant
    assert events([*rows, (MONDAY - timedelta(days=5), "etl", "m", 0.0, 0)]) == [("dormant", "etl")]


@settings(max_examples=100, deadline=None)
@given(
    series=st.lists(
        st.tuples(
            st.integers(0, 60),
            st.sampled_from(["team-a-x", "etl", "stray"]),
            st.sampled_from([0.0, 0.5, 5.0, 1e300]),
            st.sampled_from([0, 1, 10**12]),
        ),
        max_size=40,
    ),
    held=st.integers(0, 60),
)
def test_any_history_never_crashes_and_never_reports_a_key_without_use_today(
    series: list[tuple[int, str, float, int]], held: int
) -> None:
    rows = [(MONDAY - timedelta(days=back), name, "m", c, r) for back, name, c, r in series]
    result = table(rows, covered=days_before(MONDAY, held))
    used_today = {name for back, name, c, r in series if back == 0 and (c or r)}
    assert set(result.get_column("api_key_name")) <= used_today
    unowned = result.filter(pl.col("kind") == "unowned")
    assert (unowned.get_column("cost_usd") >= CONFIG.min_spend_usd).all()
    assert "team-a-x" not in unowned.get_column("api_key_name").to_list()


def test_unowned_spend_is_opt_in_new_and_dormant_keys_are_not() -> None:
    rows = [*known("stray"), (MONDAY, "stray", "gpt-4o", 5.0, 10), (MONDAY, "fresh", "m", 1, 1)]
    assert events(rows, config=UnownedConfig()) == [("new", "fresh")]
