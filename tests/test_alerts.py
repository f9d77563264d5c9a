"""alerts: the lifecycle, simulated cycle by cycle through the real budgets and plan.

A `Sim` runs evaluate -> noteworthy -> plan at an explicit `now` and feeds the plan's ledger
writes back as the next cycle's ledger, as `state.commit` does.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from costwatch import alerts, budgets
from costwatch.alerts import Alert, LedgerEntry, LedgerKey, Plan
from costwatch.budgets import Finding
from costwatch.config import Config, parse_config
from costwatch.usage import SCHEMA

USAGE_SCHEMA = SCHEMA
NOV = datetime(2026, 11, 10, tzinfo=UTC)  # a third of November 2026 (UTC) is gone
MID_NOVEMBER = datetime(2026, 11, 16, tzinfo=UTC)  # half of it
NOVEMBER = "month:2026-11-01@UTC"


def config(text: str) -> Config:
    return parse_config("langdock: {api_key: x}\n" + textwrap.dedent(text))


def per_key(extra: str = "", limits: str = "{cost_usd: 100}") -> Config:
    """One per-key budget "b" over every key; `extra` adds budget fields (flow-style YAML)."""
    return config(
        f"""
        schedule: {{timezone: UTC}}
        budgets:
          - {{name: b, keys: "*", limits: {limits}{", " + extra if extra else ""}}}
        """
    )


def usage(rows: Iterable[tuple[str, str, int, float]]) -> pl.DataFrame:
    """Rows of (key name, model, requests, cost); the key's id is "id-<name>"."""
    return pl.DataFrame(
        [
            (f"id-{name}", name, model, requests, cost, None, None, None, None, None)
            for name, model, requests, cost in rows
        ],
        schema=USAGE_SCHEMA,
        orient="row",
    )


def spend(costs: dict[str, float] | float) -> pl.DataFrame:
    """Spend per key name; a bare number is key "k"'s spend."""
    by_key = costs if isinstance(costs, dict) else {"k": costs}
    return usage((name, "gpt-4o", 1, cost) for name, cost in by_key.items())


@dataclass
class Sim:
    """Cycles against one ledger, as the daemon runs them against the state file."""

    ledger: dict[LedgerKey, LedgerEntry] = field(default_factory=dict)
    sent: list[tuple[datetime, Alert]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # all findings of the last cycle

    def cycle(self, cfg: Config, frame: pl.DataFrame, now: datetime) -> Plan:
        resolved = budgets.rules(cfg, now)
        frames = dict.fromkeys(budgets.export_ranges(resolved), frame)
        evaluated = budgets.evaluate(resolved, frames, now).findings
        self.findings = budgets.as_findings(evaluated)
        result = alerts.plan(
            budgets.noteworthy(evaluated, alerts.known_findings(self.ledger)),
            {rule.name: rule for rule in resolved},
            self.ledger,
            cfg.silences,
            now,
        )
        # The cycle hands `plan` every finding as a frame: the same plan.
        rules = {rule.name: rule for rule in resolved}
        assert alerts.plan(evaluated, rules, self.ledger, cfg.silences, now) == result
        for entry in result.ledger:
            self.ledger[entry.key] = entry
        self.sent.extend((now, alert) for alert in result.alerts)
        return result


def fired(plan: Plan) -> list[tuple[str, float]]:
    return [(alert.kind, alert.threshold) for alert in plan.alerts]


def actual(*levels: float) -> list[tuple[str, float]]:
    return [("actual", level) for level in levels]


FORECAST = [("forecast", 100.0)]
NO_FORECAST = "forecast: false"


# --- once per threshold and period, escalation -----------------------------------------------


def test_a_threshold_fires_once_per_period_however_often_it_is_seen() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST)
    assert fired(sim.cycle(cfg, spend(60), NOV)) == actual(50)
    assert fired(sim.cycle(cfg, spend(60), NOV + timedelta(minutes=15))) == []
    assert fired(sim.cycle(cfg, spend(79), NOV + timedelta(hours=5))) == []
    assert list(sim.ledger) == [("b", "id-k", "", "cost_usd", "actual", NOVEMBER)]


def test_crossing_50_and_80_between_two_cycles_sends_one_alert_for_80() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST)
    assert fired(sim.cycle(cfg, spend(10), NOV)) == []
    plan = sim.cycle(cfg, spend(85), NOV + timedelta(minutes=15))
    assert fired(plan) == actual(80)
    assert plan.alerts[0].severity == "warning"
    assert fired(sim.cycle(cfg, spend(90), NOV + timedelta(minutes=30))) == []


def test_a_jump_from_nothing_to_over_the_limit_sends_one_critical_alert_at_100() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST)
    assert fired(sim.cycle(cfg, spend(0), NOV)) == []
    plan = sim.cycle(cfg, spend(150), NOV + timedelta(minutes=15))
    assert fired(plan) == actual(100)
    assert (plan.alerts[0].severity, plan.alerts[0].ratio) == ("critical", 1.5)


def test_escalation_to_a_higher_threshold_fires_again_with_the_use_since_the_last_alert() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST)
    assert fired(sim.cycle(cfg, spend(85), NOV)) == actual(80)
    plan = sim.cycle(cfg, spend(100), NOV + timedelta(hours=1))
    assert fired(plan) == actual(100)
    assert (plan.alerts[0].previous_used, plan.alerts[0].used) == (85.0, 100.0)
    assert fired(sim.cycle(cfg, spend(130), NOV + timedelta(hours=2))) == []


def test_each_metric_model_and_subject_has_its_own_thresholds() -> None:
    cfg = per_key(
        NO_FORECAST + ", models: {gpt-4o: {cost_usd: 50}}", limits="{cost_usd: 100, requests: 2}"
    )
    plan = Sim().cycle(cfg, usage([("a", "gpt-4o", 2, 60.0), ("b", "claude", 1, 85.0)]), NOV)
    got = {(a.subject, a.model, a.metric, a.threshold) for a in plan.alerts}
    assert got == {
        ("id-a", None, "cost_usd", 50),
        ("id-a", None, "requests", 100),
        ("id-a", "gpt-4o", "cost_usd", 100),
        ("id-b", None, "cost_usd", 80),
        ("id-b", None, "requests", 50),
    }


def test_a_shared_pool_alerts_once_for_the_pool_as_subject_star() -> None:
    cfg = config(
        """
        budgets: [{name: pool, scope: shared, keys: "*", limits: {cost_usd: 100}, forecast: false}]
        """
    )
    sim = Sim()
    plan = sim.cycle(cfg, spend({"a": 30, "b": 30}), NOV)
    assert [(a.subject, a.api_key_id, a.scope, a.threshold) for a in plan.alerts] == [
        ("*", None, "shared", 50)
    ]
    assert fired(sim.cycle(cfg, spend({"a": 30, "b": 31}), NOV + timedelta(hours=1))) == []


# --- repeat ----------------------------------------------------------------------------------


def test_repeat_resends_at_or_over_100_percent_only_once_its_interval_has_passed() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST + ", repeat: 24h")
    assert fired(sim.cycle(cfg, spend(100), NOV)) == actual(100)
    assert fired(sim.cycle(cfg, spend(110), NOV + timedelta(hours=23, minutes=59))) == []
    plan = sim.cycle(cfg, spend(120), NOV + timedelta(hours=24))
    assert fired(plan) == actual(100)
    assert plan.alerts[0].repeat
    assert plan.alerts[0].previous_used == 100.0
    assert fired(sim.cycle(cfg, spend(130), NOV + timedelta(hours=47))) == []
    assert fired(sim.cycle(cfg, spend(140), NOV + timedelta(hours=48))) == actual(100)


def test_repeat_does_not_resend_below_100_percent() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST + ", repeat: 1h")
    assert fired(sim.cycle(cfg, spend(99), NOV)) == actual(80)
    assert fired(sim.cycle(cfg, spend(99.99), NOV + timedelta(days=3))) == []


def test_repeat_follows_the_spend_not_the_top_threshold() -> None:
    # Thresholds stop at 80, but the key is at 150 % of its limit: that is worth repeating.
    sim, cfg = Sim(), per_key(NO_FORECAST + ", repeat: 12h, thresholds: [50, 80]")
    assert fired(sim.cycle(cfg, spend(150), NOV)) == actual(80)
    plan = sim.cycle(cfg, spend(150), NOV + timedelta(hours=12))
    assert [(a.threshold, a.repeat, a.ratio) for a in plan.alerts] == [(80, True, 1.5)]


def test_without_repeat_a_subject_over_its_limit_is_told_once() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST)
    assert fired(sim.cycle(cfg, spend(200), NOV)) == actual(100)
    assert fired(sim.cycle(cfg, spend(300), NOV + timedelta(days=5))) == []


# --- a new period re-arms --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "before", "after", "first", "second"),
    [
        ("UTC", datetime(2026, 11, 30, 23, 45, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC),
         "month:2026-11-01@UTC", "month:2026-12-01@UTC"),
        # Both instants are Oct 31 in UTC; in Berlin the second is already November, and
        # October there was 745 hours long (the clocks went back on Oct 25).
        ("Europe/Berlin", datetime(2026, 10, 31, 22, 30, tzinfo=UTC),
         datetime(2026, 10, 31, 23, 30, tzinfo=UTC),
         "month:2026-10-01@Europe/Berlin", "month:2026-11-01@Europe/Berlin"),
        # New York leaves summer time on Nov 1 2026, the first day of the new period.
        ("America/New_York", datetime(2026, 11, 1, 3, 30, tzinfo=UTC),
         datetime(2026, 11, 1, 4, 30, tzinfo=UTC),
         "month:2026-10-01@America/New_York", "month:2026-11-01@America/New_York"),
        # Sydney leaves summer time on Apr 5 2026, in the new period's first week.
        ("Australia/Sydney", datetime(2026, 3, 31, 12, 30, tzinfo=UTC),
         datetime(2026, 3, 31, 13, 30, tzinfo=UTC),
         "month:2026-03-01@Australia/Sydney", "month:2026-04-01@Australia/Sydney"),
        # Berlin enters summer time on Mar 29 2026: March is 743 hours long there.
        ("Europe/Berlin", datetime(2026, 3, 31, 21, 30, tzinfo=UTC),
         datetime(2026, 3, 31, 22, 30, tzinfo=UTC),
         "month:2026-03-01@Europe/Berlin", "month:2026-04-01@Europe/Berlin"),
    ],
)  # fmt: skip
def test_a_new_period_rearms_every_threshold(
    zone: str, before: datetime, after: datetime, first: str, second: str
) -> None:
    cfg = config(
        f"""
        schedule: {{timezone: {zone}}}
        budgets: [{{name: b, keys: "*", limits: {{cost_usd: 100}}, repeat: 1h}}]
        """
    )
    sim = Sim()
    plan = sim.cycle(cfg, spend(100), before)
    assert [(a.threshold, a.period) for a in plan.alerts] == [(100, first)]
    assert fired(sim.cycle(cfg, spend(100), before + timedelta(minutes=10))) == []
    plan = sim.cycle(cfg, spend(85), after)  # the new period's first export
    assert [(a.threshold, a.period, a.repeat) for a in plan.alerts] == [(80, second, False)]


def test_a_day_budget_rearms_at_local_midnight_on_a_25_hour_day() -> None:
    cfg = config(
        """
        schedule: {timezone: Europe/Berlin}
        budgets: [{name: b, keys: "*", limits: {cost_usd: 10}, period: day, forecast: false}]
        """
    )
    sim = Sim()
    # Oct 25 2026 in Berlin runs from Oct 24 22:00 UTC to Oct 25 23:00 UTC (25 hours).
    assert fired(sim.cycle(cfg, spend(6), datetime(2026, 10, 25, 22, 30, tzinfo=UTC))) == actual(50)
    late = sim.cycle(cfg, spend(6), datetime(2026, 10, 25, 22, 59, tzinfo=UTC))
    assert fired(late) == []
    plan = sim.cycle(cfg, spend(6), datetime(2026, 10, 25, 23, 0, tzinfo=UTC))
    assert [(a.threshold, a.period) for a in plan.alerts] == [(50, "day:2026-10-26@Europe/Berlin")]


# --- a limit change mid-period ---------------------------------------------------------------

Step = tuple[float, float, list[tuple[str, float]]]  # limit, spend, what fires


@pytest.mark.parametrize(
    ("budget", "steps"),
    [
        pytest.param(
            NO_FORECAST,
            [(100, 85, actual(80)), (1000, 85, []), (1000, 500, actual(50)),
             (1000, 850, actual(80))],
            id="raise below every threshold: re-armed silently, each fires again when crossed",
        ),
        pytest.param(
            NO_FORECAST,
            [(100, 85, actual(80)), (120, 85, []), (120, 97, actual(80))],
            id="raise to where 50 is still crossed: silent, 80 fires when crossed again",
        ),
        pytest.param(
            NO_FORECAST,
            [(100, 55, actual(50)), (60, 55, actual(80)), (60, 56, [])],
            id="lower past a new threshold: it fires",
        ),
        pytest.param(
            NO_FORECAST,
            [(100, 55, actual(50)), (50, 55, actual(100))],
            id="lower below the use: 100 fires",
        ),
        pytest.param(
            NO_FORECAST,
            [(100, 85, actual(80)), (90, 85, []), (90, 89, [])],
            id="lower but not past what fired: silent",
        ),
        pytest.param(
            NO_FORECAST,
            [(100, 120, actual(100)), (200, 120, []), (200, 170, actual(80)),
             (200, 200, actual(100))],
            id="raise after 100 fired: the new limit's thresholds fire as they are crossed",
        ),
        pytest.param(
            NO_FORECAST,
            [(100, 85, actual(80)), (100, 85, []), (100, 99, [])],
            id="an unchanged limit re-arms nothing",
        ),
        # Forecast rows: thresholds [100] only, checked at half of November (projection 2x).
        pytest.param(
            "thresholds: [100], forecast: {min_spend_usd: 0}",
            [(100, 60, FORECAST), (150, 60, []), (150, 80, FORECAST)],
            id="forecast, raised above the projection: re-armed silently, fires when due again",
        ),
        pytest.param(
            "thresholds: [100], forecast: {min_spend_usd: 0}",
            [(100, 60, FORECAST), (110, 60, []), (110, 62, [])],
            id="forecast, raised but still projected over: silent",
        ),
        pytest.param(
            "thresholds: [100], forecast: {min_spend_usd: 0}",
            [(100, 60, FORECAST), (80, 60, []), (80, 80, actual(100))],
            id="forecast, lowered and still due: silent until the new limit is reached",
        ),
        pytest.param(
            "thresholds: [100], forecast: {min_spend_usd: 0}",
            [(100, 60, FORECAST), (50, 60, actual(100))],
            id="forecast, lowered below the use: 100 fires",
        ),
    ],
)  # fmt: skip
def test_a_limit_change_rearms_against_the_new_limit(budget: str, steps: list[Step]) -> None:
    sim = Sim()
    for index, (limit, used, expected) in enumerate(steps):
        cfg = per_key(budget, limits=f"{{cost_usd: {limit}}}")
        plan = sim.cycle(cfg, spend(used), MID_NOVEMBER + timedelta(minutes=15 * index))
        assert fired(plan) == expected, f"step {index}: {limit=} {used=}"


def test_a_limit_raise_records_the_rearmed_level_against_the_new_limit() -> None:
    sim = Sim()
    sim.cycle(per_key(NO_FORECAST), spend(85), NOV)
    plan = sim.cycle(per_key(NO_FORECAST, limits="{cost_usd: 1000}"), spend(85), NOV)
    assert plan.alerts == ()
    ((entry),) = plan.ledger
    assert (entry.level, entry.limit, entry.used, entry.sent_at) == (0.0, 1000.0, 85.0, NOV)


def test_a_limit_raise_while_a_forecast_fires_keeps_the_rearmed_actual_level() -> None:
    # 50 fires against $100 early in the month, before a forecast may speak. Then the limit
    # goes to $200 at 25 % of the month with $80 spent: below every threshold (re-armed) and on
    # course for $320, so the forecast fires. The re-armed level must be recorded in that same
    # cycle, or 50 % of $200 would later be taken as already announced.
    cfg = per_key("forecast: {min_spend_usd: 0}")
    raised = per_key("forecast: {min_spend_usd: 0}", limits="{cost_usd: 200}")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    sim = Sim()
    assert fired(sim.cycle(cfg, spend(55), start + timedelta(days=3))) == actual(50)
    assert fired(sim.cycle(raised, spend(80), start + timedelta(days=7.5))) == FORECAST
    assert fired(sim.cycle(raised, spend(100), start + timedelta(days=7.6))) == actual(50)


# --- forecast --------------------------------------------------------------------------------


def forecast_budget() -> Config:
    return per_key("thresholds: [80, 100], forecast: {min_spend_usd: 0}")


def test_a_forecast_fires_once_per_period_and_says_when_the_limit_is_reached() -> None:
    sim, cfg = Sim(), forecast_budget()
    plan = sim.cycle(cfg, spend(60), MID_NOVEMBER)  # $60 at half the month: on course for $120
    assert fired(plan) == FORECAST
    alert = plan.alerts[0]
    assert (alert.severity, alert.projected, alert.forecast_ratio) == ("warning", 120.0, 1.2)
    assert alert.overrun_at == datetime(2026, 11, 26, tzinfo=UTC)  # 15 days * 100 / 60 = 25 days
    assert fired(sim.cycle(cfg, spend(61), MID_NOVEMBER + timedelta(hours=1))) == []
    assert fired(sim.cycle(cfg, spend(70), MID_NOVEMBER + timedelta(days=2))) == []
    december = datetime(2026, 12, 16, tzinfo=UTC)
    assert fired(sim.cycle(cfg, spend(60), december)) == FORECAST  # a new period re-arms it


def test_an_actual_alert_in_the_same_cycle_carries_and_settles_the_forecast() -> None:
    sim, cfg = Sim(), per_key("forecast: {min_spend_usd: 0}")
    plan = sim.cycle(cfg, spend(60), MID_NOVEMBER)  # 50 % reached, on course for 120 %
    assert fired(plan) == actual(50)
    assert (plan.alerts[0].projected, plan.alerts[0].overrun_at) == (
        120.0,
        datetime(2026, 11, 26, tzinfo=UTC),
    )
    assert fired(sim.cycle(cfg, spend(62), MID_NOVEMBER + timedelta(hours=1))) == []
    assert fired(sim.cycle(cfg, spend(80), MID_NOVEMBER + timedelta(hours=2))) == actual(80)


def test_an_actual_alert_without_a_due_forecast_leaves_the_forecast_armed() -> None:
    sim, cfg = Sim(), per_key("forecast: {min_spend_usd: 0}")
    # $50 at 16 of 30 days: on course for $93.75; then $70 at 17 days: for $123.53.
    assert fired(sim.cycle(cfg, spend(50), datetime(2026, 11, 17, tzinfo=UTC))) == actual(50)
    assert fired(sim.cycle(cfg, spend(70), datetime(2026, 11, 18, tzinfo=UTC))) == FORECAST


@pytest.mark.parametrize(
    ("thresholds", "steps", "previous"),
    [
        # (day of November, spend): the forecast at $60, then 80 % at $85: +$25 since it.
        ("[80, 100]", [(16, 60.0), (18, 85.0)], [None, 60.0]),
        # 50 % at $50, the forecast at $70, 80 % at $85: each counts from the one before.
        ("[50, 80, 100]", [(17, 50.0), (18, 70.0), (19, 85.0)], [None, 50.0, 70.0]),
        # 80 % at $85 (carrying the forecast), then 100 % at $100: from the 80 % alert.
        ("[50, 80, 100]", [(10, 85.0), (11, 100.0)], [None, 85.0]),
    ],
)
def test_since_the_last_alert_counts_from_the_latest_alert_of_either_kind(
    thresholds: str, steps: list[tuple[int, float]], previous: list[float | None]
) -> None:
    sim, cfg = Sim(), per_key(f"thresholds: {thresholds}, forecast: {{min_spend_usd: 0}}")
    seen = []
    for day, used in steps:
        (alert,) = sim.cycle(cfg, spend(used), datetime(2026, 11, day, tzinfo=UTC)).alerts
        seen.append(alert.previous_used)
    assert seen == previous


def test_no_forecast_is_sent_once_100_percent_fired() -> None:
    rule = budgets.rules(per_key(), MID_NOVEMBER)[0]
    finding = Finding(
        budget="b", scope="key", api_key_id="id-k", api_key_name="k", model=None,
        metric="cost_usd", used=90.0, limit=100.0, ratio=0.9, level=80, projected=180.0,
        forecast_ratio=1.8, forecast_due=True, overrun_at=None, period=NOVEMBER,
    )  # fmt: skip
    entry = LedgerEntry("b", "id-k", "", "cost_usd", "actual", NOVEMBER, 100, 100, 100, NOV)
    plan = alerts.plan([finding], {"b": rule}, {entry.key: entry}, [], MID_NOVEMBER)
    assert plan == Plan(alerts=(), silenced=(), ledger=())


def test_a_forecast_is_not_sent_before_min_elapsed_or_min_spend() -> None:
    cfg = per_key(
        "thresholds: [100], forecast: {min_elapsed: 50%, min_spend_usd: 20}",
        limits="{cost_usd: 30}",
    )
    sim = Sim()
    hour = timedelta(hours=1)
    assert fired(sim.cycle(cfg, spend(16), MID_NOVEMBER - hour)) == []  # 49.9 % of the month
    assert fired(sim.cycle(cfg, spend(16), MID_NOVEMBER + hour)) == []  # on course, but $16
    assert fired(sim.cycle(cfg, spend(20), MID_NOVEMBER + 2 * hour)) == FORECAST


# --- silences --------------------------------------------------------------------------------

SILENCE_BUDGETS = """
schedule: {timezone: UTC}
budgets:
  - {name: team-a, keys: "*", limits: {cost_usd: 100}, forecast: false}
  - {name: workspace, scope: shared, keys: "*", limits: {cost_usd: 200}, forecast: false}
"""
EVERYTHING = {("team-a", "id-support-bot"), ("team-a", "id-marketing"), ("workspace", "*")}


@pytest.mark.parametrize(
    ("silence", "silenced"),
    [
        ('{budget: "team-*", until: 2026-12-01T00:00:00Z, reason: r}',
         {("team-a", "id-support-bot"), ("team-a", "id-marketing")}),
        ('{keys: "support-*", until: 2026-12-01T00:00:00Z, reason: r}',
         {("team-a", "id-support-bot")}),
        ('{keys: "id-marketing", until: 2026-12-01T00:00:00Z, reason: r}',
         {("team-a", "id-marketing")}),
        ('{budget: team-a, keys: "support-*", until: 2026-12-01T00:00:00Z, reason: r}',
         {("team-a", "id-support-bot")}),
        # Both must match; a key glob other than "*" never matches a shared pool.
        ('{budget: workspace, keys: "support-*", until: 2026-12-01T00:00:00Z, reason: r}', set()),
        ('{keys: "*", until: 2026-12-01T00:00:00Z, reason: r}', EVERYTHING),
        ('{budget: "*", until: 2026-11-10T02:00:00+01:00, reason: r}', EVERYTHING),
        # Expired: at `now` exactly, or before it.
        ('{budget: "*", until: 2026-11-10T00:00:00Z, reason: r}', set()),
        ('{budget: "*", until: 2026-11-09T00:00:00Z, reason: r}', set()),
    ],
)  # fmt: skip
def test_silences_suppress_matching_alerts_and_show_them(
    silence: str, silenced: set[tuple[str, str]]
) -> None:
    cfg = config(SILENCE_BUDGETS + f"silences: [{silence}]")
    plan = Sim().cycle(cfg, spend({"support-bot": 60, "marketing": 60}), NOV)
    assert {(a.budget, a.subject) for a in plan.silenced} == silenced
    assert {(a.budget, a.subject) for a in plan.alerts} == EVERYTHING - silenced
    assert {a.silenced_by for a in plan.silenced} <= {"r"}
    assert {a.silenced_by for a in plan.alerts} <= {None}
    assert {(e.budget, e.subject) for e in plan.ledger} == EVERYTHING - silenced


def test_a_silenced_alert_fires_at_its_current_level_once_the_silence_expires() -> None:
    until = NOV + timedelta(hours=2)
    cfg = config(
        SILENCE_BUDGETS
        + f"silences: [{{budget: team-a, until: '{until.isoformat()}', reason: deploy}}]"
    )
    sim = Sim()
    plan = sim.cycle(cfg, spend({"support-bot": 60}), NOV)
    assert ([a.threshold for a in plan.silenced], fired(plan)) == ([50], [])
    plan = sim.cycle(cfg, spend({"support-bot": 85}), NOV + timedelta(hours=1))
    assert ([a.threshold for a in plan.silenced], fired(plan)) == ([80], [])
    plan = sim.cycle(cfg, spend({"support-bot": 85}), until)
    assert (plan.silenced, fired(plan)) == ((), actual(80))
    assert fired(sim.cycle(cfg, spend({"support-bot": 85}), until + timedelta(hours=1))) == []


def test_a_silenced_forecast_fires_once_the_silence_expires() -> None:
    until = MID_NOVEMBER + timedelta(hours=1)
    cfg = per_key("thresholds: [100], forecast: {min_spend_usd: 0}")
    cfg = cfg.model_copy(
        update={
            "silences": config(f"silences: [{{budget: b, until: '{until}', reason: r}}]").silences
        }
    )
    sim = Sim()
    plan = sim.cycle(cfg, spend(60), MID_NOVEMBER)
    assert ([a.kind for a in plan.silenced], plan.alerts) == (["forecast"], ())
    assert fired(sim.cycle(cfg, spend(60), until)) == FORECAST


# --- what an alert says ----------------------------------------------------------------------


def test_an_alert_carries_its_thresholds_severity_and_mentions_and_the_budgets_channel() -> None:
    cfg = per_key(
        'thresholds: [{at: 60, severity: critical, mention: ["<!here>", "<@U1>"]}, 90], '
        'mention: ["<@U1>", "<@U2>"], channel: "#team", forecast: false'
    )
    sim = Sim()
    (first,) = sim.cycle(cfg, spend(65), NOV).alerts
    assert (first.threshold, first.severity, first.channel) == (60, "critical", "#team")
    assert first.mention == ("<!here>", "<@U1>", "<@U2>")
    (second,) = sim.cycle(cfg, spend(95), NOV).alerts
    assert (second.threshold, second.severity, second.mention) == (
        90,
        "warning",
        ("<@U1>", "<@U2>"),
    )


def test_an_alert_keeps_the_key_name_as_data() -> None:
    name = "<!channel> *urgent* <https://evil.example|click>"
    (alert,) = Sim().cycle(per_key(NO_FORECAST), spend({name: 60}), NOV).alerts
    assert (alert.api_key_name, alert.api_key_id) == (name, f"id-{name}")


# --- properties ------------------------------------------------------------------------------

PROPERTY_CONFIG = """
schedule: {{timezone: UTC}}
defaults: {{thresholds: {thresholds}, forecast: {{min_elapsed: 0.2, min_spend_usd: 0}}}}
budgets:
  - name: each
    keys: "*"
    limits: {{cost_usd: 100, requests: 60}}
    models: {{"gpt-*": {{cost_usd: 40}}}}
    {repeat}
  - {{name: pool, scope: shared, keys: "*", limits: {{cost_usd: 250}}}}
{silences}
"""
START = datetime(2026, 11, 10, tzinfo=UTC)
Increment = tuple[str, str, int, int]  # key, model, requests, cost in eighths of a dollar
INCREMENTS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["gpt-4o", "claude"]),
        st.integers(0, 8),
        st.integers(0, 400),
    ),
    max_size=4,
)


Identity = tuple[str, str, str, str, str]  # budget, subject, model, metric, period


def identity(item: Alert | Finding) -> Identity:
    return (item.budget, item.subject, item.model or "", item.metric, item.period)


@settings(max_examples=80, deadline=None)
@given(
    thresholds=st.sets(st.sampled_from([25, 50, 80, 100, 120]), min_size=1),
    repeat=st.booleans(),
    silence_hours=st.none() | st.integers(0, 500),
    cycles=st.lists(st.tuples(st.integers(1, 36), INCREMENTS), min_size=1, max_size=20),
)
def test_growing_usage_sends_each_alert_once_in_rising_order_and_loses_nothing(
    thresholds: set[int],
    repeat: bool,
    silence_hours: int | None,
    cycles: list[tuple[int, list[Increment]]],
) -> None:
    until = None if silence_hours is None else START + timedelta(hours=silence_hours)
    silences = "" if until is None else f"silences: [{{budget: each, until: '{until}', reason: r}}]"
    cfg = config(
        PROPERTY_CONFIG.format(
            thresholds=sorted(thresholds),
            repeat="repeat: 24h" if repeat else "",
            silences=silences,
        )
    )

    def silenced(budget: str, now: datetime) -> bool:
        return budget == "each" and until is not None and now < until

    sim = Sim()
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    period = ""
    now = START
    covered: set[Identity] = set()  # forecasts sent, or settled by an actual alert
    last_cycle: dict[str, tuple[datetime, list[Finding]]] = {}  # per period
    steps = [(timedelta(hours=gap), increments) for gap, increments in cycles]
    end = START + sum((gap for gap, _ in steps), timedelta(0))
    if until is not None and until > end:
        steps.append((until - end, []))  # a last cycle once the silence has expired
    for gap, increments in steps:
        now += gap
        if budgets.rules(cfg, now)[0].period.key() != period:
            period, totals = budgets.rules(cfg, now)[0].period.key(), {}  # a new export
        for key, model, requests, eighths in increments:
            old = totals.get((key, model), (0, 0))
            totals[(key, model)] = (old[0] + requests, old[1] + eighths)
        frame = usage((k, m, r, c / 8) for (k, m), (r, c) in totals.items())
        plan = sim.cycle(cfg, frame, now)
        findings = {identity(f): f for f in sim.findings}
        for alert in plan.alerts:
            assert not silenced(alert.budget, now)
            finding = findings[identity(alert)]
            if alert.kind == "actual" and not alert.repeat:
                assert alert.threshold == finding.level  # the highest level, never a lower one
            if alert.kind == "forecast" or finding.forecast_due:
                covered.add(identity(alert))
        for finding in sim.findings:
            if finding.forecast_due and not silenced(finding.budget, now):
                assert identity(finding) in covered, "a due forecast was lost"
        last_cycle[period] = (now, sim.findings)

    sent = sim.sent
    for what in {a.kind + (" repeat" if a.repeat else "") for _, a in sent}:
        event(f"sent {what}")
    event(f"{len(last_cycle)} period(s), {'a' if until else 'no'} silence")
    # Once per identity, kind and threshold (repeats aside), each a higher level than the last.
    firsts = [(identity(a), a.kind, a.threshold) for _, a in sent if not a.repeat]
    assert len(firsts) == len(set(firsts))
    for kind_of in {(identity(a), a.kind) for _, a in sent}:
        mine = [(at, a) for at, a in sent if (identity(a), a.kind) == kind_of]
        levels = [a.threshold for _, a in mine if not a.repeat]
        assert levels == sorted(set(levels))
        for (before, _), (at, alert) in itertools.pairwise(mine):
            if alert.repeat:
                assert budgets.reaches(alert.used, alert.limit, 100)
                assert at - before >= timedelta(hours=24)
    assert repeat or not any(a.repeat for _, a in sent)
    # Nothing due is lost: the last level of every period went out, unless still silenced then.
    for at, findings_at_end in last_cycle.values():
        for finding in findings_at_end:
            if finding.level is not None and not silenced(finding.budget, at):
                went_out = {a.threshold for _, a in sent if identity(a) == identity(finding)}
                assert finding.level in went_out


# --- the plan's rows -------------------------------------------------------------------------


def test_alert_schema_names_every_alert_field_in_order() -> None:
    assert list(alerts.ALERT_SCHEMA) == [f.name for f in fields(Alert)]


def test_planned_rows_read_as_the_alerts_they_hold() -> None:
    sim, cfg = Sim(), per_key(NO_FORECAST)
    plan = sim.cycle(cfg, spend({"a": 60, "b": 85, "c": 150, "d": 1}), NOV)
    assert isinstance(plan.alerts, alerts.Rows)
    assert len(plan.alerts) == plan.alerts.frame.height == 3
    listed = list(plan.alerts)
    assert [a.threshold for a in listed] == [100, 80, 50]  # worst first, as the findings
    assert plan.alerts[0] == listed[0]
    assert plan.alerts[-1] == listed[-1]
    assert plan.alerts[1:] == tuple(listed[1:])
    assert plan.alerts[::2] == (listed[0], listed[2])
    assert plan.alerts == listed
    assert plan.alerts == tuple(listed)
    assert plan.alerts != listed[:2]
    assert alerts.alert_frame(listed).equals(plan.alerts.frame)
    assert alerts.alert_frame(listed[:1]).height == 1
    assert [e.key for e in plan.ledger] == [e.key for e in sim.ledger.values()]
