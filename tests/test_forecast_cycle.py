"""A cycle's forecasts from the stored days: the simulator's export, the real client, a real
SQLite history, and the alert that goes into the outbox and is rendered for Slack.

The stored days are the simulator workspace's own usage of those local days (it is exact and
additive over adjacent ranges), so the expected rate is the window's stored spend over its
days, and the projection what is spent plus that rate over the rest of the month.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest

from costwatch import cycle, forecast, notices, periods
from costwatch.config import Config, parse_config
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.slack.render import as_terminal_text, render
from costwatch.state import SqliteState
from costwatch.usage import SCHEMA

KEY = "ld-FORECAST-k3y"
ZONE = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # 15:30 on Friday 20 November in Berlin
TODAY = NOW.astimezone(ZONE).date()
DAY = timedelta(days=1)
WORKSPACE = Workspace(keys=5, hourly_cost_usd=0.4)


def config(base_url: str, limit: float, extra: str = "", method: str = "trailing") -> Config:
    text = f"""
        langdock: {{base_url: "{base_url}", api_key: {KEY}, allow_insecure_download: true}}
        schedule: {{timezone: Europe/Berlin}}
        defaults: {{forecast: {{method: {method}, min_spend_usd: 0}}}}
        budgets:
          - name: workspace
            keys: "*"
            scope: shared
            thresholds: [100]
            limits: {{cost_usd: {limit!r}}}
        {extra}
    """
    return parse_config(textwrap.dedent(text))


def day_usage(day: date) -> pl.DataFrame:
    """The workspace's usage of one local day, as the store keeps it."""
    start = periods.local_midnight(day, ZONE)
    rows = WORKSPACE.usage(start, periods.local_midnight(day + DAY, ZONE))
    return pl.DataFrame(
        [
            (r.api_key_id, r.api_key_name, r.model, r.requests, r.total_cost_usd) + (None,) * 5
            for r in rows
        ],
        schema=SCHEMA,
        orient="row",
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(WORKSPACE, api_key=KEY, clock=lambda: NOW) as server:
        yield server


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    with SqliteState.open(tmp_path / "state.db") as opened:
        for n in range(1, 31):  # the 30 days before today
            day = TODAY - n * DAY
            opened.put_day(ZONE.key, day, day_usage(day), exported_at=NOW, settled=True)
        yield opened


def run(sim: Simulator, state: SqliteState, cfg: Config) -> cycle.Outcome:
    with httpx.Client(timeout=10) as http:
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        return cycle.run_once(cycle.Deps(cfg, client=client, state=state), NOW)


def expected(state: SqliteState, used: float) -> float:
    """Spent, plus the 14 stored days' mean over the rest of today and 10 more days."""
    window = state.usage_between(ZONE.key, TODAY - 14 * DAY, TODAY - DAY)
    rate = float(window.get_column("total_cost_usd").sum()) / 14
    midnight = periods.local_midnight(TODAY + DAY, ZONE)
    left_today = (midnight - NOW) / (midnight - periods.local_midnight(TODAY, ZONE))
    return used + rate * (left_today + 10)


def test_a_cycle_forecasts_from_the_stored_days_and_its_alert_says_so(
    sim: Simulator, state: SqliteState
) -> None:
    probe = run(sim, state, config(sim.base_url, 1e9))
    (pool,) = probe.findings.filter(pl.col("metric") == "cost_usd").iter_rows(named=True)
    assert pool["forecast_method"] == "trailing 14-day rate"
    assert pool["projected"] == pytest.approx(expected(state, pool["used"]), rel=1e-9)
    # A limit between what is spent and the projection: a forecast alert, which says how.
    limit = (pool["used"] + pool["projected"]) / 2
    outcome = run(sim, state, config(sim.base_url, limit))
    assert outcome.plan is not None
    (alert,) = outcome.plan.alerts
    assert (alert.kind, alert.forecast_method) == ("forecast", "trailing 14-day rate")
    (item,) = [row for row in state.pending() if row.kind == "alert"]  # the detectors' aside
    notice = notices.read(item.kind, item.payload, written_at=NOW)
    text = as_terminal_text(render(notice, now=NOW))
    assert "from the trailing 14-day rate" in text


def test_with_the_history_off_or_method_linear_the_forecast_is_linear(
    sim: Simulator, state: SqliteState
) -> None:
    off = config(sim.base_url, 1e9, "history: {enabled: false}")
    linear = config(sim.base_url, 1e9, method="linear")
    for cfg in (off, linear):
        outcome = run(sim, state, cfg)
        assert set(outcome.findings.get_column("forecast_method")) == {forecast.LINEAR}
