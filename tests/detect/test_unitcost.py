"""costwatch.detect.unitcost on known series: a price change, a swap behind a name and rows
with requests but $0 cost are found; prompts growing, a free model, thin days say nothing."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from histories import MONDAY, Row, days_before, frame, steady
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch.config import parse_config
from costwatch.config.detect import UnitCostConfig
from costwatch.detect import unit_costs

HISTORY = days_before(MONDAY, 28)
CONFIG = UnitCostConfig()


def found(rows: list[Row], tokens: dict[int, int] | None = None, **kwargs: object) -> pl.DataFrame:
    config = kwargs.pop("config", CONFIG)
    assert isinstance(config, UnitCostConfig)
    covered = kwargs.pop("covered", HISTORY)
    return unit_costs(frame(rows, tokens=tokens), MONDAY, covered, config)  # type: ignore[arg-type]


def priced(today_cost: float, requests: int = 1000) -> list[Row]:
    return [
        *steady("bot", "gpt-4o", 10.0, 1000, HISTORY),
        (MONDAY, "bot", "gpt-4o", today_cost, requests),
    ]


def test_a_price_that_triples_is_a_drift_per_request() -> None:
    (row,) = found(priced(30.0)).to_dicts()
    assert (row["model"], row["kind"], row["basis"]) == ("gpt-4o", "drift", "per request")
    assert row["rate"] == pytest.approx(0.03)
    assert row["normal"] == pytest.approx(0.01)
    assert row["ratio"] == pytest.approx(3.0)
    assert row["baseline_days"] == 28


def test_a_cheaper_model_behind_the_same_name_is_a_drift_down() -> None:
    (row,) = found(priced(4.0)).to_dicts()
    assert row["ratio"] == pytest.approx(0.4)


@pytest.mark.parametrize("today_cost", [14.0, 6.0])
def test_an_ordinary_move_says_nothing(today_cost: float) -> None:
    assert found(priced(today_cost)).is_empty()


def test_a_thin_day_says_nothing_about_a_price() -> None:
    assert found(priced(3.0, requests=99)).is_empty()


def test_too_few_baseline_days_say_nothing() -> None:
    assert found(priced(30.0), covered=HISTORY[-3:]).is_empty()
    assert not found(priced(30.0), covered=HISTORY[-4:]).is_empty()


def test_per_1k_tokens_prompts_growing_are_no_price_change_and_a_price_change_is() -> None:
    rows = priced(20.0)  # twice the cost per request, for twice the tokens: the same price
    tokens = {i: 100_000 for i in range(28)} | {28: 200_000}
    assert found(rows, tokens).is_empty()
    tokens[28] = 50_000  # twice the cost per request for half the tokens: 4x per 1k tokens
    (row,) = found(rows, tokens).to_dicts()
    assert (row["basis"], row["normal"], row["ratio"]) == ("per 1k tokens", 0.1, 4.0)


def test_requests_without_cost_on_a_model_that_costs_money_are_flagged() -> None:
    rows = [
        *steady("bot", "gpt-4o", 10.0, 1000, HISTORY),
        (MONDAY, "bot", "gpt-4o", 10.0, 1000),
        (MONDAY, "etl", "gpt-4o", 0.0, 300),
        (MONDAY, "lab", "gpt-4o", 0.0, 200),
    ]
    (row,) = found(rows).to_dicts()
    assert row["kind"] == "zero_cost"
    assert (row["zero_cost_requests"], row["zero_cost_keys"]) == (500.0, 2)


def test_a_model_that_is_always_free_and_a_new_model_priced_at_nothing() -> None:
    byok = [*steady("bot", "byok", 0.0, 1000, HISTORY), (MONDAY, "bot", "byok", 0.0, 1000)]
    assert found(byok).is_empty()
    new = [(MONDAY, "bot", "brand-new", 0.0, 400)]
    assert found(new).get_column("kind").to_list() == ["zero_cost"]


def test_switched_off_and_read_from_the_file() -> None:
    assert found(priced(30.0), config=UnitCostConfig(enabled=False)).is_empty()
    text = "langdock: {api_key: x}\nunit_cost: {min_change: 50%, min_requests: 10}\n"
    assert parse_config(text, env={}).unit_cost == UnitCostConfig(min_change=0.5, min_requests=10)


@settings(max_examples=100, deadline=None)
@given(
    series=st.lists(
        st.tuples(
            st.integers(0, 30),
            st.sampled_from(["m", "n"]),
            st.sampled_from([0.0, 0.001, 5.0, 1e300]),
            st.sampled_from([0, 1, 100, 10**12]),
        ),
        max_size=60,
    ),
    held=st.integers(0, 30),
)
def test_any_history_never_crashes_and_never_flags_nothing(
    series: list[tuple[int, str, float, int]], held: int
) -> None:
    rows = [(MONDAY - timedelta(days=back), "k", m, c, r) for back, m, c, r in series]
    result = found(rows, covered=days_before(MONDAY, held))
    assert (result.get_column("requests") >= CONFIG.min_requests).all()
    drift = result.filter(pl.col("kind") == "drift")
    assert (drift.get_column("baseline_days") >= CONFIG.min_baseline_days).all()
    assert drift.filter(~pl.col("ratio").is_finite()).is_empty()
    zero = result.filter(pl.col("kind") == "zero_cost")
    assert (zero.get_column("zero_cost_requests") >= CONFIG.min_requests).all()
