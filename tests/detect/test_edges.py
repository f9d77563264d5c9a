"""Every detector on the histories that break naive code: none at all, one day, all zeros,
huge values, today without a history. Each finds nothing where there is nothing to find and
never crashes."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from histories import MONDAY, Row, days_before, frame, steady

from costwatch.config import Budget, Limits
from costwatch.config.detect import AnomalyConfig, UnitCostConfig, UnownedConfig
from costwatch.detect import anomalies, key_events, unit_costs

HISTORY = days_before(MONDAY, 30)
BUDGETS = (Budget(name="bots", keys=("*-bot",), limits=Limits(cost_usd=10)),)


def run_all(rows: list[Row], covered: list[date]) -> dict[str, pl.DataFrame]:
    usage = frame(rows)
    return {
        "anomalies": anomalies(usage, MONDAY, covered, AnomalyConfig(), BUDGETS),
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
        "unit_costs": 0,
        "key_events": 0,
    }


def test_a_key_with_only_today_is_new_and_nothing_else() -> None:
    found = run_all([(MONDAY, "stray", "m", 80.0, 900)], HISTORY)
    assert found["anomalies"].is_empty()  # no baseline of its own
    assert found["unit_costs"].is_empty()  # no baseline, and it costs money
    assert found["key_events"].get_column("kind").to_list() == ["unowned", "new"]


def test_huge_values_are_judged_without_overflowing_into_alerts() -> None:
    rows = steady("a-bot", "m", 1e300, 10**15, [*HISTORY, MONDAY])
    found = run_all(rows, HISTORY)
    assert found["anomalies"].is_empty()
    assert found["unit_costs"].is_empty()
    spike = [*steady("a-bot", "m", 1e300, 10**15, HISTORY), (MONDAY, "a-bot", "m", 1e308, 10**15)]
    (row,) = run_all(spike, HISTORY)["anomalies"].filter(pl.col("model").is_null()).to_dicts()
    assert row["ratio"] == pytest.approx(1e8)
    assert row["normal"] == 1e300
