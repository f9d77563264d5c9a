"""costwatch.detect.rate: today so far against the same hour of normal days, over hourly
snapshots whose answer is known; a runaway loop at 10:00 is seen, an ordinary morning is not."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from histories import MONDAY, days_before
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch.config.detect import AnomalyConfig
from costwatch.detect import spend_rates
from costwatch.detect.rate import SNAPSHOT
from costwatch.errors import UsageError

HISTORY = days_before(MONDAY, 28)
CONFIG = AnomalyConfig(metrics=("cost_usd",))
Snap = tuple[date, int, str, float]  # day, hour, key name, cost so far


def snapshots(rows: list[Snap]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "day": [r[0] for r in rows],
            "hour": [r[1] for r in rows],
            "api_key_id": [f"id-{r[2]}" for r in rows],
            "api_key_name": [r[2] for r in rows],
            "requests": [int(min(r[3], 1e12)) for r in rows],
            "total_cost_usd": [r[3] for r in rows],
        },
        schema=SNAPSHOT,
    )


def workday(day: date, key: str = "bot", per_hour: float = 1.0) -> list[Snap]:
    """A key that spends `per_hour` from 8:00 to 18:00: its snapshots of every hour."""
    return [(day, h, key, per_hour * min(max(h - 7, 0), 10)) for h in range(24) if h >= 8]


def found(rows: list[Snap], hour: int = 10, **kwargs: object) -> pl.DataFrame:
    recorded = kwargs.pop("recorded", HISTORY)
    config = kwargs.pop("config", CONFIG)
    assert isinstance(config, AnomalyConfig)
    return spend_rates(snapshots(rows), MONDAY, hour, recorded, config)  # type: ignore[arg-type]


def test_a_runaway_morning_is_seen_at_ten_against_the_same_hour_of_normal_days() -> None:
    history = [snap for day in HISTORY for snap in workday(day, per_hour=3.0)]
    today = [(MONDAY, 8, "bot", 3.0), (MONDAY, 9, "bot", 30.0), (MONDAY, 10, "bot", 72.0)]
    (row,) = found(history + today).to_dicts()
    assert (row["api_key_name"], row["hour"], row["value"]) == ("bot", 10, 72.0)
    assert (row["normal"], row["ratio"], row["basis"]) == (9.0, 8.0, "same weekday")
    # at nine it was $30 against $6: already 5x
    assert found(history + today, hour=9).get_column("ratio").to_list() == [5.0]
    assert found(history + today, config=CONFIG.model_copy(update={"rate": False})).is_empty()


def test_an_ordinary_morning_and_a_small_one_say_nothing() -> None:
    history = [snap for day in HISTORY for snap in workday(day, per_hour=3.0)]
    assert found(history + workday(MONDAY, per_hour=3.0)).is_empty()
    tiny = [snap for day in HISTORY for snap in workday(day, per_hour=0.01)]
    assert found([*tiny, (MONDAY, 10, "bot", 4.0)]).is_empty()  # under the $5 floor


def test_days_without_a_snapshot_of_that_hour_are_unknown_not_zero() -> None:
    history = [snap for day in HISTORY for snap in workday(day, per_hour=3.0)]
    today = [(MONDAY, 10, "bot", 72.0)]
    assert found(history + today, recorded=HISTORY[-3:]).is_empty()  # 3 days: no baseline
    # recorded days on which the key had spent nothing by ten (it starts at two) are $0 days
    afternoons = [(day, 14, "bot", 50.0) for day in HISTORY]
    (row,) = found(afternoons + today, recorded=HISTORY).to_dicts()
    assert (row["normal"], row["ratio"]) == (0.0, None)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (pl.lit(None, dtype=pl.Int8).alias("hour"), "hour"),
        (pl.lit(24, dtype=pl.Int8).alias("hour"), "hour"),
        (pl.lit(float("inf")).alias("total_cost_usd"), "total_cost_usd"),
    ],
)
def test_snapshots_that_cannot_be_trusted_are_refused(change: pl.Expr, column: str) -> None:
    broken = snapshots([(MONDAY, 10, "bot", 1.0)]).with_columns(change)
    with pytest.raises(UsageError) as caught:
        spend_rates(broken, MONDAY, 10, HISTORY, CONFIG)
    assert caught.value.column == column


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 30),
            st.integers(0, 23),
            st.sampled_from("ab"),
            st.sampled_from([0.0, 0.5, 10.0, 1e300]),
        ),
        max_size=60,
        unique_by=lambda r: r[:3],
    ),
    hour=st.integers(-1, 24),
    held=st.integers(0, 30),
)
def test_any_snapshots_never_crash_and_never_alert_on_nothing(
    rows: list[tuple[int, int, str, float]], hour: int, held: int
) -> None:
    snaps = [(date.fromordinal(MONDAY.toordinal() - b), h, k, c) for b, h, k, c in rows]
    result = found(snaps, hour=hour, recorded=days_before(MONDAY, held))
    assert result.filter((pl.col("value") <= 0) | (pl.col("value") <= pl.col("normal"))).is_empty()
    assert (result.get_column("hour") == hour).all()
    assert (result.get_column("value") >= CONFIG.min_spend_usd).all()
