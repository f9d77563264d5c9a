"""Every detector on the histories that break naive code: none at all, one day, all zeros,
huge values, today without a history. Each finds nothing where there is nothing to find and
never crashes."""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from histories import MONDAY, Row, days_before, frame, steady
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import detecting, periods
from costwatch.config import Budget, Limits, parse_config
from costwatch.config.detect import AnomalyConfig, UnitCostConfig, UnownedConfig
from costwatch.detect import Anomaly, anomalies, key_events, spend_rates, unit_costs
from costwatch.detect.rate import SNAPSHOT
from costwatch.state import SqliteState

HISTORY = days_before(MONDAY, 30)
BERLIN = ZoneInfo("Europe/Berlin")
BUDGETS = (Budget(name="bots", keys=("*-bot",), limits=Limits(cost_usd=10)),)


def at_ten(usage: pl.DataFrame) -> pl.DataFrame:
    """Each day's use as that day's snapshot of 10:00 (per key, summed over models)."""
    per_key = usage.group_by("day", "api_key_id").agg(
        pl.col("api_key_name").last(), pl.col("requests", "total_cost_usd").sum()
    )
    return per_key.with_columns(pl.lit(10).alias("hour")).select(list(SNAPSHOT)).cast(SNAPSHOT)  # type: ignore[arg-type]


def run_all(rows: list[Row], covered: list[date]) -> dict[str, pl.DataFrame]:
    usage = frame(rows)
    return {
        "anomalies": anomalies(usage, MONDAY, covered, AnomalyConfig(), BUDGETS),
        "spend_rates": spend_rates(at_ten(usage), MONDAY, 10, covered, AnomalyConfig()),
        "unit_costs": unit_costs(usage, MONDAY, covered, UnitCostConfig()),
        "key_events": key_events(usage, MONDAY, covered, BUDGETS, UnownedConfig(enabled=True)),
    }


CASES = {
    "no history at all": ([], HISTORY),
    "nothing held": ([], []),
    "one day, today": ([(MONDAY, "a-bot", "m", 80.0, 900)], []),
    "all zeros": (steady("a-bot", "m", 0.0, 0, [*HISTORY, MONDAY]), HISTORY),
    "only yesterday": ([(HISTORY[-1], "a-bot", "m", 5.0, 100)], HISTORY),
}


@pytest.mark.parametrize(("rows", "covered"), CASES.values(), ids=CASES.keys())
def test_nothing_to_find_finds_nothing(rows: list[Row], covered: list[date]) -> None:
    assert {name: found.height for name, found in run_all(rows, covered).items()} == {
        "anomalies": 0,
        "spend_rates": 0,
        "unit_costs": 0,
        "key_events": 0,
    }


def test_a_key_with_only_today_is_new_and_nothing_else() -> None:
    found = run_all([(MONDAY, "stray", "m", 80.0, 900)], HISTORY)
    assert found["anomalies"].is_empty()  # no baseline of its own
    assert found["spend_rates"].is_empty()
    assert found["unit_costs"].is_empty()  # no baseline, and it costs money
    assert found["key_events"].get_column("kind").to_list() == ["unowned", "new"]


def test_huge_values_are_judged_without_overflowing_into_alerts() -> None:
    rows = steady("a-bot", "m", 1e300, 10**15, [*HISTORY, MONDAY])
    found = run_all(rows, HISTORY)
    assert found["anomalies"].is_empty()
    assert found["spend_rates"].is_empty()
    assert found["unit_costs"].is_empty()
    spike = [*steady("a-bot", "m", 1e300, 10**15, HISTORY), (MONDAY, "a-bot", "m", 1e308, 10**15)]
    spiked = run_all(spike, HISTORY)
    (row,) = spiked["anomalies"].filter(pl.col("model").is_null()).to_dicts()
    assert row["ratio"] == pytest.approx(1e8)
    assert row["normal"] == 1e300
    (rate,) = spiked["spend_rates"].filter(pl.col("metric") == "cost_usd").to_dicts()
    assert (rate["ratio"], rate["normal"], rate["hour"]) == (pytest.approx(1e8), 1e300, 10)


RATE_CONFIG = parse_config(
    """
langdock: {api_key: x}
schedule: {timezone: Europe/Berlin}
budgets:
  - {name: bots, keys: "*-bot", limits: {cost_usd: 10}}
unit_cost: {enabled: false}
""",
    env={},
)


@settings(max_examples=25, deadline=None)
@given(
    past=st.lists(
        st.tuples(
            st.integers(1, 30),  # days back
            st.integers(0, 23),
            st.sampled_from(["a-bot", "b-bot"]),
            st.sampled_from([0.0, 0.5, 10.0, 1e300]),
        ),
        max_size=40,
        unique_by=lambda r: r[:3],
    ),
    today=st.lists(
        st.tuples(st.sampled_from(["a-bot", "b-bot"]), st.sampled_from([0.0, 7.0, 1e300])),
        max_size=2,
        unique_by=lambda r: r[0],
    ),
    hour=st.integers(0, 23),
)
def test_any_snapshots_through_the_store_never_crash_and_never_alert_on_nothing(
    past: list[tuple[int, int, str, float]], today: list[tuple[str, float]], hour: int
) -> None:
    """The wired path: snapshots kept by a real store, today's recorded and judged by the
    cycle's `detecting.due`, each at most once a day."""
    now = periods.local_midnight(MONDAY, BERLIN) + timedelta(hours=hour, minutes=20)
    with tempfile.TemporaryDirectory() as folder, SqliteState.open(Path(folder) / "s.db") as state:
        hours: dict[tuple[int, int], list[tuple[str, float]]] = {}
        for back, at, key, cost in past:
            hours.setdefault((back, at), []).append((key, cost))
        with state.transaction() as transaction:
            for (back, at), keys in hours.items():
                transaction.put_snapshot(
                    "Europe/Berlin",
                    MONDAY - timedelta(days=back),
                    at,
                    snapshot_rows(keys),
                    taken_at=now,
                    keep_from=MONDAY - timedelta(days=30),
                )
        export = frame([(MONDAY, key, "m", cost, int(min(cost, 1e12))) for key, cost in today])
        with state.transaction() as transaction:
            found = detecting.due(transaction, RATE_CONFIG, {"Europe/Berlin": export}, now)
            detecting.record(transaction, found, now)
        rates = [f for f in found if isinstance(f, Anomaly) and f.kind == "spend_rate"]
        for rate in rates:
            assert rate.value > rate.normal
            assert rate.value >= (5.0 if rate.metric == "cost_usd" else 500)
            assert rate.hour == now.astimezone(BERLIN).hour
        with state.transaction() as transaction:
            again = detecting.due(transaction, RATE_CONFIG, {"Europe/Berlin": export}, now)
            assert again == ()  # once a day
            assert (MONDAY, now.astimezone(BERLIN).hour) in transaction.snapshots(
                "Europe/Berlin", MONDAY, MONDAY
            ).taken


def snapshot_rows(rows: list[tuple[str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(f"id-{k}", k, int(min(c, 1e12)), c) for k, c in rows],
        schema={
            "api_key_id": pl.String(),
            "api_key_name": pl.String(),
            "requests": pl.Int64(),
            "total_cost_usd": pl.Float64(),
        },
        orient="row",
    )
