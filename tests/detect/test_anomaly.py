"""costwatch.detect.anomaly on series whose answer is known: a key's day far above its own
normal is found with how far, since when and which model drives it; ordinary patterns, small
numbers, short histories and days the store does not hold say nothing."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest
from histories import MONDAY, Row, days_before, frame, steady
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch.config import Budget, Limits, parse_config
from costwatch.config.detect import AnomalyConfig, AnomalyOverride
from costwatch.detect import anomalies
from costwatch.errors import UsageError

HISTORY = days_before(MONDAY, 28)
CONFIG = AnomalyConfig()


def found(rows: list[Row], config: AnomalyConfig = CONFIG, **kwargs: object) -> pl.DataFrame:
    covered = kwargs.pop("covered", HISTORY)
    today = kwargs.pop("today", MONDAY)
    assert isinstance(today, date)
    budgets = kwargs.pop("budgets", ())
    return anomalies(frame(rows), today, covered, config, budgets)  # type: ignore[arg-type]


def cost(result: pl.DataFrame, *, model: str | None = None) -> dict[str, object]:
    """The one cost anomaly of the key (model None) or of the key x model."""
    rows = result.filter(pl.col("metric") == "cost_usd")
    rows = rows.filter(pl.col("model").is_null() if model is None else pl.col("model") == model)
    (row,) = rows.to_dicts()
    return row


def test_a_steady_key_at_80_dollars_instead_of_10_is_eight_times_normal_driven_by_its_model() -> (
    None
):
    rows = steady("bot", "gpt-4o", 6.0, 100, HISTORY) + steady("bot", "mini", 4.0, 100, HISTORY)
    rows += [(MONDAY, "bot", "gpt-4o", 74.0, 100), (MONDAY, "bot", "mini", 6.0, 100)]
    result = found(rows)
    key = cost(result)
    assert key["api_key_name"] == "bot"
    assert key["value"] == 80.0
    assert key["normal"] == 10.0
    assert key["ratio"] == 8.0
    assert key["since"] == MONDAY
    assert key["driver_model"] == "gpt-4o"
    assert key["driver_share"] == pytest.approx(68 / 70)
    assert key["basis"] == "same weekday"
    assert key["baseline_days"] == 4
    model = cost(result, model="gpt-4o")
    assert model["ratio"] == pytest.approx(74 / 6)
    # mini went from $4 to $6: 1.5x, not an anomaly; requests did not move at all
    assert result.filter(pl.col("model") == "mini").is_empty()
    assert result.filter(pl.col("metric") == "requests").is_empty()


def test_since_is_the_first_day_of_the_run_above_the_level() -> None:
    rows = steady("bot", "gpt-4o", 10.0, 100, HISTORY[:-3])
    rows += steady("bot", "gpt-4o", 80.0, 100, [*HISTORY[-3:], MONDAY])
    rows[-5] = (HISTORY[-5], "bot", "gpt-4o", 90.0, 100)  # an earlier spike, not in the run
    key = cost(found(rows))
    assert key["since"] == MONDAY - timedelta(days=3)
    assert key["normal"] == 10.0


def test_a_day_the_store_does_not_hold_breaks_the_run() -> None:
    rows = steady("bot", "gpt-4o", 10.0, 100, HISTORY[:-3])
    rows += steady("bot", "gpt-4o", 80.0, 100, [*HISTORY[-3:], MONDAY])
    covered = [day for day in HISTORY if day != HISTORY[-2]]
    assert cost(found(rows, covered=covered))["since"] == MONDAY - timedelta(days=1)


def test_a_weekly_monday_batch_is_not_flagged_on_monday() -> None:
    rows = [
        (day, "batch", "gpt-4o", 50.0 if day.weekday() == 0 else 1.0, 100)
        for day in [*HISTORY, MONDAY]
    ]
    assert found(rows).filter(pl.col("metric") == "cost_usd").is_empty()
    everyday = AnomalyConfig(seasonality="none", metrics=("cost_usd",))
    flagged = cost(found(rows, everyday))
    assert (flagged["normal"], flagged["basis"]) == (1.0, "all days")


def test_a_weekend_job_is_judged_against_weekends() -> None:
    saturday = MONDAY - timedelta(days=2)
    history = days_before(saturday, 28)
    rows = [
        (day, "etl", "gpt-4o", 40.0 if day.weekday() >= 5 else 0.5, 10)
        for day in [*history, saturday]
    ]
    groups = AnomalyConfig(seasonality="weekday_weekend", metrics=("cost_usd",))
    assert found(rows, groups, today=saturday, covered=history).is_empty()
    everyday = AnomalyConfig(seasonality="none", metrics=("cost_usd",))
    assert cost(found(rows, everyday, today=saturday, covered=history))["normal"] == 0.5


def test_small_numbers_say_nothing_however_far_they_move() -> None:
    rows = [*steady("tiny", "mini", 0.02, 1, HISTORY), (MONDAY, "tiny", "mini", 0.2, 10)]
    assert found(rows).is_empty()
    scaled = [*steady("big", "mini", 2.0, 100, HISTORY), (MONDAY, "big", "mini", 20.0, 1000)]
    assert cost(found(scaled))["ratio"] == 10.0


def test_a_noisy_key_is_flagged_only_beyond_its_ordinary_swing() -> None:
    rows = [(day, "noisy", "gpt-4o", 10.0 if i % 2 else 30.0, 100) for i, day in enumerate(HISTORY)]
    noisy = AnomalyConfig(seasonality="none", metrics=("cost_usd",))
    # median 20, MAD 10: the level is 20 + 5 x 1.4826 x 10 = 94.13, above 3 x 20
    assert found([*rows, (MONDAY, "noisy", "gpt-4o", 90.0, 100)], noisy).is_empty()
    key = cost(found([*rows, (MONDAY, "noisy", "gpt-4o", 100.0, 100)], noisy))
    assert key["level"] == pytest.approx(20 + 5 * 1.4826 * 10)
    assert key["spread"] == pytest.approx(1.4826 * 10)


def test_days_without_rows_are_zero_days_only_when_the_store_holds_them() -> None:
    # used on the four Mondays only: with every day held, Mondays are its normal ...
    mondays = [day for day in HISTORY if day.weekday() == 0]
    rows = [*steady("bot", "gpt-4o", 10.0, 100, mondays), (MONDAY, "bot", "gpt-4o", 10.0, 100)]
    everyday = AnomalyConfig(seasonality="none", metrics=("cost_usd",))
    key = cost(found(rows, everyday))  # ... and against every day, $0 is its normal
    assert (key["normal"], key["ratio"], key["baseline_days"]) == (0.0, None, 28)
    # held only on those Mondays, the other days are unknown, not $0
    assert found(rows, everyday, covered=mondays).is_empty()


def test_a_key_too_young_for_a_baseline_is_not_judged() -> None:
    rows = [*steady("new", "gpt-4o", 10.0, 100, HISTORY[-3:]), (MONDAY, "new", "gpt-4o", 900.0, 9)]
    assert found(rows, AnomalyConfig(seasonality="none")).is_empty()
    # four days of its own life are enough
    rows = [*steady("new", "gpt-4o", 10.0, 100, HISTORY[-4:]), (MONDAY, "new", "gpt-4o", 900.0, 9)]
    assert cost(found(rows, AnomalyConfig(seasonality="none")))["baseline_days"] == 4


def test_a_budget_sets_its_keys_sensitivity_and_the_rest_keep_the_global_one() -> None:
    rows = [*steady("etl-1", "gpt-4o", 10.0, 100, HISTORY), (MONDAY, "etl-1", "gpt-4o", 80.0, 1)]
    rows += [*steady("bot", "gpt-4o", 10.0, 100, HISTORY), (MONDAY, "bot", "gpt-4o", 80.0, 1)]
    etl = Budget(name="etl", keys=("etl-*",), limits=Limits(cost_usd=100))
    other = Budget(name="other", keys=("*",), limits=Limits(cost_usd=100))
    config = AnomalyConfig(budgets={"etl": AnomalyOverride(min_ratio=10)}, models=False)
    result = found(rows, config, budgets=(etl, other))
    assert result.get_column("api_key_name").to_list() == ["bot"]
    silent = AnomalyConfig(budgets={"etl": AnomalyOverride(enabled=False)}, models=False)
    assert found(rows, silent, budgets=(other, etl)).get_column("api_key_name").to_list() == ["bot"]


def test_requests_are_judged_with_their_own_floor() -> None:
    rows = [*steady("bot", "gpt-4o", 1.0, 200, HISTORY), (MONDAY, "bot", "gpt-4o", 1.0, 2000)]
    result = found(rows, AnomalyConfig(models=False))
    assert result.select("metric", "value", "normal").rows() == [("requests", 2000.0, 200.0)]
    assert found(rows, AnomalyConfig(min_requests=5000)).is_empty()


def test_switched_off_it_finds_nothing() -> None:
    rows = [*steady("bot", "gpt-4o", 10.0, 100, HISTORY), (MONDAY, "bot", "gpt-4o", 80.0, 100)]
    assert found(rows, AnomalyConfig(enabled=False)).is_empty()


def test_the_section_is_read_from_the_file_and_refers_to_budgets_that_exist() -> None:
    text = (
        "langdock: {api_key: x}\n"
        "budgets: [{name: etl, keys: 'etl-*', limits: {cost_usd: 10}}]\n"
        "anomalies: {metrics: cost_usd, seasonality: none, budgets: {etl: {min_ratio: 6}}}\n"
    )
    config = parse_config(text, env={}).anomalies
    assert config.metrics == ("cost_usd",)
    assert config.budgets["etl"].min_ratio == 6


@pytest.mark.parametrize(
    ("column", "value"),
    [("total_cost_usd", float("nan")), ("total_cost_usd", -1.0), ("requests", None)],
)
def test_a_history_that_cannot_be_trusted_is_refused_naming_the_column(
    column: str, value: object
) -> None:
    broken = frame(steady("bot", "gpt-4o", 1.0, 1, [MONDAY])).with_columns(
        pl.lit(value).cast(pl.Float64 if column == "total_cost_usd" else pl.Int64).alias(column)
    )
    with pytest.raises(UsageError) as caught:
        anomalies(broken, MONDAY, HISTORY, CONFIG)
    assert caught.value.column == column


def test_a_history_without_a_day_column_is_refused() -> None:
    with pytest.raises(UsageError, match="no day column"):
        anomalies(frame([]).drop("day"), MONDAY, HISTORY, CONFIG)


VALUES = st.sampled_from([0.0, 0.0, 0.01, 1.0, 10.0, 80.0, 1e6, 1e300])


@settings(max_examples=150, deadline=None)
@given(
    series=st.lists(
        st.tuples(st.integers(0, 30), st.sampled_from("ab"), st.sampled_from(["m", "n"]), VALUES),
        max_size=60,
    ),
    held=st.integers(0, 30),
)
def test_any_history_never_crashes_and_never_alerts_on_nothing(
    series: list[tuple[int, str, str, float]], held: int
) -> None:
    rows = [
        (MONDAY - timedelta(days=back), key, model, value, int(min(value, 1e12)))
        for back, key, model, value in series
    ]
    result = found(rows, covered=days_before(MONDAY, held))
    assert result.filter(pl.col("value") <= 0).is_empty()
    assert result.filter(pl.col("value") <= pl.col("normal")).is_empty()
    assert result.filter(~pl.col("value").is_finite()).is_empty()
    assert (result.get_column("baseline_days") >= CONFIG.min_baseline_days).all()
    today = {(f"id-{key}", model) for back, key, model, value in series if back == 0 and value}
    assert set(result.select("api_key_id", "driver_model").drop_nulls().rows()) <= today
    if all(value == 0 for *_, value in series):
        assert result.is_empty()


def test_a_day_given_twice_for_a_key_and_model_is_summed() -> None:
    rows = steady("bot", "gpt-4o", 10.0, 100, HISTORY)
    rows += [(MONDAY, "bot", "gpt-4o", 40.0, 100), (MONDAY, "bot", "gpt-4o", 40.0, 100)]
    key = cost(found(rows, AnomalyConfig(metrics=("cost_usd",))), model="gpt-4o")
    assert (key["value"], key["ratio"]) == (80.0, 8.0)
