"""budgets: selection, scope, per-model limits, levels and forecast, as tables and properties.

Configs are YAML through `parse_config`, usage is a polars frame in the export's schema, and
`now` is always an argument. Expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import fnmatch
import math
import textwrap
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import alerts, budgets
from costwatch.budgets import Finding
from costwatch.config import Config, parse_config
from costwatch.usage import SCHEMA

USAGE_SCHEMA = SCHEMA
# (api_key_id, api_key_name, model, requests, cost, prompt tokens, completion tokens)
Row = tuple[str, str, str, int, float, int | None, int | None]

NOV_START = datetime(2026, 11, 1, tzinfo=UTC)  # November 2026 in UTC: 30 days, 720 hours
MID_NOVEMBER = datetime(2026, 11, 16, tzinfo=UTC)  # exactly half of it


def config(text: str) -> Config:
    return parse_config("langdock: {api_key: x}\n" + textwrap.dedent(text))


def usage(rows: Iterable[Row]) -> pl.DataFrame:
    return pl.DataFrame(
        [(*row, None, None, None) for row in rows], schema=USAGE_SCHEMA, orient="row"
    )


def spend(costs: dict[str, float], model: str = "gpt-4o") -> pl.DataFrame:
    """One row per key (id "id-<name>"), one request each, no tokens."""
    return usage((f"id-{name}", name, model, 1, cost, None, None) for name, cost in costs.items())


def evaluate(cfg: Config, frame: pl.DataFrame, now: datetime = MID_NOVEMBER) -> list[Finding]:
    resolved = budgets.rules(cfg, now)
    frames = dict.fromkeys(budgets.export_ranges(resolved), frame)
    return budgets.as_findings(budgets.evaluate(resolved, frames, now).findings)


def one(
    found: Sequence[Finding],
    budget: str,
    *,
    subject: str = "*",
    model: str | None = None,
    metric: str = "cost_usd",
) -> Finding:
    matches = [
        f
        for f in found
        if (f.budget, f.subject, f.model, f.metric) == (budget, subject, model, metric)
    ]
    assert len(matches) == 1, f"{len(matches)} findings for {budget}/{subject}/{model}/{metric}"
    return matches[0]


def subjects(found: Sequence[Finding], budget: str) -> set[str]:
    return {f.subject for f in found if f.budget == budget}


# --- selection -------------------------------------------------------------------------------

KEYS: list[Row] = [
    ("id-1", "support-bot-prod", "gpt-4o", 1, 1.0, None, None),
    ("id-2", "support-bot-dev", "gpt-4o", 1, 1.0, None, None),
    ("id-3", "marketing", "gpt-4o", 1, 1.0, None, None),
    ("id-4", "team.(x)|y", "gpt-4o", 1, 1.0, None, None),  # regex syntax in a name
    ("id-5", "y-key", "gpt-4o", 1, 1.0, None, None),  # what "team.(x)|y" would hit as a regex
    ("id-6", "a*b", "gpt-4o", 1, 1.0, None, None),  # glob syntax in a name
    ("id-7", "axb", "gpt-4o", 1, 1.0, None, None),
    ("id-8", "<!channel> *hi* <https://evil.example|click>", "gpt-4o", 1, 1.0, None, None),
    ("id-9", "id-1", "gpt-4o", 1, 1.0, None, None),  # a name that looks like another key's id
]
ALL_IDS = {row[0] for row in KEYS}


@pytest.mark.parametrize(
    ("keys", "exclude", "selected"),
    [
        ('"*"', "[]", ALL_IDS),
        ('"support-bot-*"', "[]", {"id-1", "id-2"}),
        ('"support-bot-?rod"', "[]", {"id-1"}),
        ('"[sm]*"', "[]", {"id-1", "id-2", "id-3"}),
        # A list mixes an exact name, a glob and an api_key_id.
        ('["marketing", "support-bot-d*", "id-7"]', "[]", {"id-3", "id-2", "id-7"}),
        # An id is compared exactly, never as a glob; "id-1" is also a key's *name*.
        ('["id-1"]', "[]", {"id-1", "id-9"}),
        ('["id-*"]', "[]", {"id-9"}),
        ('"*"', '["support-*", "id-3"]', ALL_IDS - {"id-1", "id-2", "id-3"}),
        ('"support-*"', '["support-bot-dev"]', {"id-1"}),
        ('"support-*"', '["*"]', set()),
        # Regex syntax in a pattern is literal: no alternation, no "any character".
        ('["team.(x)|y"]', "[]", {"id-4"}),
        ('["team?(x)|y"]', "[]", {"id-4"}),
        # A glob star matches "a*b" and "axb"; "[*]" is how to mean a literal star.
        ('["a*b"]', "[]", {"id-6", "id-7"}),
        ('["a[*]b"]', "[]", {"id-6"}),
        # Slack markup in a name is just characters to match.
        ('["<!channel> *hi* <https://evil.example|click>"]', "[]", {"id-8"}),
        ('["<!channel>*"]', "[]", {"id-8"}),
        ('["nobody"]', "[]", set()),
    ],
)
def test_selection_matches_names_by_glob_and_ids_exactly(
    keys: str, exclude: str, selected: set[str]
) -> None:
    cfg = config(
        f"""
        budgets:
          - name: b
            keys: {keys}
            exclude: {exclude}
            limits: {{cost_usd: 100}}
        """
    )
    assert subjects(evaluate(cfg, usage(KEYS)), "b") == selected


def test_fallback_takes_only_keys_no_other_per_key_budget_selects() -> None:
    cfg = config(
        """
        budgets:
          - name: support
            keys: "support-*"
            exclude: [support-bot-dev]
            limits: {cost_usd: 100}
          - name: marketing
            keys: [id-3]
            limits: {cost_usd: 100}
          - name: workspace
            scope: shared
            keys: "*"
            limits: {cost_usd: 1000}
          - name: everyone-else
            keys: "*"
            fallback: true
            limits: {cost_usd: 50}
          - name: everyone-else-requests
            keys: "*"
            fallback: true
            limits: {requests: 10}
        """
    )
    found = evaluate(cfg, usage(KEYS))
    # support-bot-dev is excluded from "support", so nobody claims it: the fallback takes it.
    # The shared "workspace" budget selects every key but claims none of them.
    unclaimed = ALL_IDS - {"id-1", "id-3"}
    assert subjects(found, "everyone-else") == unclaimed
    assert subjects(found, "everyone-else-requests") == unclaimed  # fallbacks don't claim either
    assert subjects(found, "workspace") == {"*"}
    assert one(found, "workspace").used == len(KEYS)


def test_fallback_selects_nothing_when_every_key_is_budgeted() -> None:
    cfg = config(
        """
        budgets:
          - {name: all, keys: "*", limits: {cost_usd: 100}}
          - {name: rest, keys: "*", fallback: true, limits: {cost_usd: 50}}
        """
    )
    assert subjects(evaluate(cfg, usage(KEYS)), "rest") == set()


def test_key_names_with_markup_reach_the_finding_verbatim() -> None:
    name = KEYS[7][1]
    cfg = config('budgets: [{name: b, keys: "*", limits: {cost_usd: 1}}]')
    assert one(evaluate(cfg, usage(KEYS)), "b", subject="id-8").api_key_name == name


# --- shared vs per key, per model, tokens ----------------------------------------------------

TEAM: list[Row] = [
    ("k1", "alpha", "gpt-4o", 10, 30.0, 1000, 500),
    ("k1", "alpha", "gpt-4.1", 5, 20.0, 400, 100),
    ("k1", "alpha", "claude-sonnet", 1, 5.0, 100, 50),
    ("k2", "beta", "gpt-4o", 7, 40.0, 2000, 1000),
    ("k2", "beta", "mistral-large", 3, 25.0, None, None),
]


def test_shared_scope_checks_the_pool_sum_against_one_limit() -> None:
    cfg = config(
        """
        budgets:
          - {name: pool, scope: shared, keys: "*", limits: {cost_usd: 150, requests: 40}}
        """
    )
    found = evaluate(cfg, usage(TEAM))
    cost = one(found, "pool")
    assert (cost.api_key_id, cost.api_key_name, cost.scope) == (None, None, "shared")
    assert (cost.used, cost.limit, cost.ratio, cost.level) == (120.0, 150.0, 0.8, 80)
    requests = one(found, "pool", metric="requests")
    assert (requests.used, requests.level) == (26.0, 50)  # 65 % of 40
    assert len(found) == 2


def test_per_key_scope_checks_each_key_on_its_own() -> None:
    cfg = config('budgets: [{name: each, keys: "*", limits: {cost_usd: 100}}]')
    found = evaluate(cfg, usage(TEAM))
    alpha, beta = one(found, "each", subject="k1"), one(found, "each", subject="k2")
    assert (alpha.api_key_name, alpha.used, alpha.level) == ("alpha", 55.0, 50)
    assert (beta.api_key_name, beta.used, beta.level) == ("beta", 65.0, 50)
    assert {alpha.scope, beta.scope} == {"key"}


def test_a_model_limit_by_name_counts_only_that_model_within_each_key() -> None:
    cfg = config(
        """
        budgets:
          - name: each
            keys: "*"
            limits: {cost_usd: 1000}
            models: {gpt-4o: {cost_usd: 40}}
        """
    )
    found = evaluate(cfg, usage(TEAM))
    assert one(found, "each", subject="k1", model="gpt-4o").used == 30.0
    assert one(found, "each", subject="k2", model="gpt-4o").level == 100
    assert one(found, "each", subject="k1").used == 55.0  # the all-models finding is unchanged


def test_a_model_glob_sums_the_matching_models_within_a_subject() -> None:
    cfg = config(
        """
        budgets:
          - name: each
            keys: "*"
            limits: {cost_usd: 1000}
            models: {"gpt-4*": {cost_usd: 50, requests: 100}}
          - name: pool
            scope: shared
            keys: "*"
            limits: {cost_usd: 1000}
            models: {"gpt-4*": {cost_usd: 100}}
        """
    )
    found = evaluate(cfg, usage(TEAM))
    alpha = one(found, "each", subject="k1", model="gpt-4*")
    assert (alpha.used, alpha.level) == (50.0, 100)  # gpt-4o 30 + gpt-4.1 20, not claude
    assert one(found, "each", subject="k1", model="gpt-4*", metric="requests").used == 15
    assert one(found, "each", subject="k2", model="gpt-4*").used == 40.0
    assert one(found, "pool", model="gpt-4*").used == 90.0  # 30 + 20 + 40 over both keys


def test_a_model_limit_makes_no_finding_for_a_key_that_never_used_the_model() -> None:
    cfg = config(
        """
        budgets:
          - {name: each, keys: "*", limits: {cost_usd: 1000}, models: {mistral-*: {cost_usd: 9}}}
        """
    )
    found = evaluate(cfg, usage(TEAM))
    assert {f.subject for f in found if f.model == "mistral-*"} == {"k2"}


def test_tokens_are_prompt_plus_completion_and_checked_only_where_reported() -> None:
    rows = [*TEAM, ("k3", "gamma", "mistral-large", 3, 1.0, None, None)]
    cfg = config('budgets: [{name: each, keys: "*", limits: {tokens: 3000}}]')
    found = evaluate(cfg, usage(rows))
    # alpha: 1000+500 + 400+100 + 100+50; beta's mistral row has no tokens and adds nothing.
    assert one(found, "each", subject="k1", metric="tokens").used == 2150
    assert one(found, "each", subject="k2", metric="tokens").level == 100  # 3000 of 3000
    assert subjects(found, "each") == {"k1", "k2"}  # gamma has no tokens: no finding, not 0


def test_an_export_without_token_columns_gets_no_tokens_findings() -> None:
    cfg = config(
        """
        budgets:
          - {name: each, keys: "*", limits: {cost_usd: 100, tokens: 10}}
          - {name: pool, scope: shared, keys: "*", limits: {tokens: 10}}
        """
    )
    found = evaluate(cfg, spend({"a": 5.0, "b": 6.0}))
    assert {f.metric for f in found} == {"cost_usd"}


GAMMA: Row = ("k3", "gamma", "mistral-large", 3, 1.0, None, None)  # reports no tokens


@pytest.mark.parametrize(
    ("budget", "rows", "expected"),
    [
        # The case: a tokens-only budget on an export without token columns.
        ('{name: b, keys: "*", limits: {tokens: 10}}', "no tokens",
         [("tokens", None, "export_has_no_tokens")]),
        ('{name: b, keys: "*", limits: {cost_usd: 100, tokens: 10}}', "no tokens",
         [("tokens", None, "export_has_no_tokens")]),
        ('{name: b, scope: shared, keys: "*", limits: {tokens: 10}}', "no tokens",
         [("tokens", None, "export_has_no_tokens")]),
        ('{name: b, keys: "*", limits: {cost_usd: 9}, models: {"gpt-*": {tokens: 10}}}',
         "no tokens", [("tokens", "gpt-*", "export_has_no_tokens")]),
        # Tokens reported, but not by the keys this budget selects.
        ('{name: b, keys: gamma, limits: {tokens: 10}}', "team", [("tokens", None,
         "keys_report_no_tokens")]),
        ('{name: b, scope: shared, keys: gamma, limits: {tokens: 10}}', "team",
         [("tokens", None, "keys_report_no_tokens")]),
        # Evaluated, or nothing to evaluate: nothing to report.
        ('{name: b, keys: "*", limits: {tokens: 10}}', "team", []),
        ('{name: b, keys: "gamma", limits: {cost_usd: 10}}', "team", []),
        ('{name: b, keys: nobody, limits: {tokens: 10}}', "team", []),
        ('{name: b, keys: "*", limits: {tokens: 10}}', "empty", []),
        ('{name: b, keys: gamma, limits: {cost_usd: 9}, models: {"mistral-*": {tokens: 1}}}',
         "team", []),
    ],
)  # fmt: skip
def test_limits_the_export_cannot_evaluate_are_reported_with_the_reason(
    budget: str, rows: str, expected: list[tuple[str, str | None, str]]
) -> None:
    cfg = config(f"budgets: [{budget}]")
    frame = {
        "no tokens": spend({"a": 5.0, "b": 6.0}),
        "team": usage([*TEAM, GAMMA]),
        "empty": usage([]),
    }[rows]
    resolved = budgets.rules(cfg, MID_NOVEMBER)
    frames = dict.fromkeys(budgets.export_ranges(resolved), frame)
    evaluation = budgets.evaluate(resolved, frames, MID_NOVEMBER)
    missing = budgets.unevaluated(resolved, frames, evaluation)
    assert [(u.metric, u.model, u.reason) for u in missing] == expected
    assert all(u.budget == "b" and "'b'" in u.describe() for u in missing)
    if expected:  # never read as "within budget": no finding stands in for the limit
        assert evaluation.findings.filter(pl.col("metric") == "tokens").is_empty()


def test_a_shared_pool_with_no_usage_is_a_finding_at_zero() -> None:
    cfg = config('budgets: [{name: pool, scope: shared, keys: "*", limits: {cost_usd: 10}}]')
    finding = one(evaluate(cfg, usage([])), "pool")
    assert (finding.used, finding.level, finding.forecast_due) == (0.0, None, False)


# --- levels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "costs", "thresholds", "level"),
    [
        (100, [80.0], "[50, 80, 100]", 80),
        (100, [79.99], "[50, 80, 100]", 50),  # a cent below
        (100, [79.9999999], "[50, 80, 100]", 50),  # a hair below
        (100, [49.99], "[50, 80, 100]", None),
        (100, [0.0], "[50, 80, 100]", None),
        (100, [100.0], "[50, 80, 100]", 100),
        (100, [99.99], "[50, 80, 100]", 80),
        (100, [250.0], "[50, 80, 100]", 100),  # above the top threshold: the top one
        (100, [200.0], "[25, 150]", 150),
        (100, [149.0], "[25, 150]", 25),
        # $1.16 of $1.45 is exactly 80 %; in floats 1.16 * 100 < 80 * 1.45.
        (1.45, [1.16], "[50, 80, 100]", 80),
        (10.05, [8.04], "[50, 80, 100]", 80),
        # Eight rows of $0.10 sum to 0.7999999999999999 in floats, and are 80 % of $1.
        (1, [0.1] * 8, "[50, 80, 100]", 80),
        (1, [0.1] * 10, "[50, 80, 100]", 100),  # 0.9999999999999999
        (1_000_000_000, [799_999_999.99], "[80]", None),  # a cent below, on a billion
    ],
)
def test_a_level_is_reached_at_exactly_its_threshold_and_not_a_hair_below(
    limit: float, costs: list[float], thresholds: str, level: float | None
) -> None:
    cfg = config(
        f"""
        budgets:
          - {{name: b, keys: "*", limits: {{cost_usd: {limit}}}, thresholds: {thresholds}}}
        """
    )
    rows = [("k", "k", f"m{i}", 1, cost, None, None) for i, cost in enumerate(costs)]
    assert one(evaluate(cfg, usage(rows)), "b", subject="k").level == level


def test_a_threshold_jump_from_zero_reports_only_the_highest_level() -> None:
    cfg = config('budgets: [{name: b, keys: "*", limits: {requests: 10}}]')
    rows: list[Row] = [("k", "k", "m", 10, 0.0, None, None)]
    assert one(evaluate(cfg, usage(rows)), "b", subject="k", metric="requests").level == 100


def test_reaches_is_the_rule_evaluate_applies() -> None:
    assert budgets.reaches(1.16, 1.45, 80)
    assert budgets.reaches(80, 100, 80)
    assert not budgets.reaches(79.99, 100, 80)
    assert not budgets.reaches(0, 100, 1)


# --- forecast --------------------------------------------------------------------------------


def forecast_config(limits: str = "{cost_usd: 100}", forecast: str = "{}") -> Config:
    return config(
        f"""
        schedule: {{timezone: UTC}}
        budgets:
          - {{name: b, keys: "*", limits: {limits}, forecast: {forecast}}}
        """
    )


def forecast_of(cfg: Config, cost: float, now: datetime, requests: int = 1) -> Finding:
    rows: list[Row] = [("k", "k", "m", requests, cost, None, None)]
    (finding,) = evaluate(cfg, usage(rows), now)
    return finding


def test_forecast_projects_linearly_and_says_when_the_limit_is_reached() -> None:
    # 6 of 30 days gone (20 %), $30 spent: on course for $150; $100 is reached when
    # 6 days * 100 / 30 = 20 days have passed, on Nov 21 00:00.
    finding = forecast_of(forecast_config(), 30.0, datetime(2026, 11, 7, tzinfo=UTC))
    assert finding.projected == pytest.approx(150.0)
    assert finding.forecast_ratio == pytest.approx(1.5)
    assert finding.forecast_due
    assert finding.overrun_at == datetime(2026, 11, 21, tzinfo=UTC)


def test_forecast_waits_for_min_elapsed_of_the_period() -> None:
    cfg = forecast_config()  # min_elapsed 20 % = 6 days of November
    assert forecast_of(cfg, 30.0, datetime(2026, 11, 7, tzinfo=UTC)).forecast_due
    early = forecast_of(cfg, 30.0, datetime(2026, 11, 6, 23, 59, tzinfo=UTC))
    assert not early.forecast_due
    assert early.overrun_at is None
    assert early.projected is not None  # the projection is still reported


def test_forecast_in_the_first_hour_is_gated_unless_min_elapsed_is_zero() -> None:
    # 30 minutes of 720 hours, $5 spent: on course for 5 * 1440 = $7,200.
    now = NOV_START + timedelta(minutes=30)
    gated = forecast_of(forecast_config(), 5.0, now)
    assert gated.projected == pytest.approx(7200.0)
    assert not gated.forecast_due
    eager = forecast_of(forecast_config(forecast="{min_elapsed: 0}"), 5.0, now)
    assert eager.forecast_due
    assert eager.overrun_at == NOV_START + timedelta(hours=10)  # 30 min * 100 / 5


def test_forecast_at_the_first_instant_of_a_period_has_no_projection() -> None:
    finding = forecast_of(forecast_config(forecast="{min_elapsed: 0}"), 0.0, NOV_START)
    assert (finding.projected, finding.forecast_ratio, finding.forecast_due) == (None, None, False)


def test_forecast_of_zero_spend_is_zero_and_never_due() -> None:
    cfg = forecast_config(forecast="{min_elapsed: 0, min_spend_usd: 0}")
    finding = forecast_of(cfg, 0.0, MID_NOVEMBER)
    assert (finding.projected, finding.forecast_due, finding.overrun_at) == (0.0, False, None)


def test_forecast_needs_min_spend_usd_on_spend_but_not_on_requests() -> None:
    # 12 of 30 days (40 %), $0.90 of $2: on course for $2.25, but less than $1 was spent.
    now = datetime(2026, 11, 13, tzinfo=UTC)
    assert not forecast_of(forecast_config("{cost_usd: 2}"), 0.9, now).forecast_due
    cheap = forecast_config("{cost_usd: 2}", "{min_spend_usd: 0.5}")
    assert forecast_of(cheap, 0.9, now).forecast_due
    # 400 of 1,000 requests at 40 %: on course for exactly 1,000; no spend gate on requests.
    strict = forecast_config("{requests: 1000}", "{min_spend_usd: 500}")
    requests = forecast_of(strict, 0.0, now, requests=400)
    assert requests.metric == "requests"
    assert requests.forecast_due


def test_forecast_on_the_last_day_projects_from_almost_the_whole_period() -> None:
    now = datetime(2026, 11, 30, 23, tzinfo=UTC)  # 719 of 720 hours
    # $99.90 -> 99.9 * 720 / 719 = $100.039: due; at that rate $100 is reached after
    # 719 h * 100 / 99.9 = 719.7197 h, i.e. 43 min 11 s into the last hour.
    due = forecast_of(forecast_config(), 99.9, now)
    assert due.projected == pytest.approx(100.0389, abs=1e-4)
    assert due.forecast_due
    assert due.overrun_at is not None
    expected = datetime(2026, 11, 30, 23, 43, 11, tzinfo=UTC)
    assert abs(due.overrun_at - expected) < timedelta(seconds=1)
    # $99.80 -> $99.939: not due.
    assert not forecast_of(forecast_config(), 99.8, now).forecast_due


def test_forecast_is_not_due_once_the_limit_is_reached() -> None:
    finding = forecast_of(forecast_config(), 100.0, datetime(2026, 11, 7, tzinfo=UTC))
    assert (finding.level, finding.forecast_due, finding.overrun_at) == (100, False, None)
    assert finding.forecast_ratio == pytest.approx(5.0)


def test_forecast_can_be_switched_off() -> None:
    finding = forecast_of(forecast_config(forecast="false"), 60.0, MID_NOVEMBER)
    assert not finding.forecast_due


def test_forecast_due_exactly_when_the_projection_equals_the_limit() -> None:
    assert forecast_of(forecast_config(), 50.0, MID_NOVEMBER).forecast_due  # 50 / 0.5 = 100
    assert not forecast_of(forecast_config(), 49.99, MID_NOVEMBER).forecast_due


def test_forecast_counts_real_hours_across_a_dst_change() -> None:
    # October 2026 in Berlin: Sep 30 22:00 UTC to Oct 31 23:00 UTC, 745 real hours (the clocks
    # go back on Oct 25). 149 h in (exactly 20 %), $40 of $100: on course for $200, and $100 is
    # reached 149 * 100 / 40 = 372.5 h after the start: Oct 16 10:30 UTC.
    cfg = config(
        """
        schedule: {timezone: Europe/Berlin}
        budgets: [{name: b, keys: "*", limits: {cost_usd: 100}}]
        """
    )
    start = datetime(2026, 9, 30, 22, tzinfo=UTC)
    finding = one(
        evaluate(cfg, spend({"k": 40.0}), start + timedelta(hours=149)), "b", subject="id-k"
    )
    assert finding.period == "month:2026-10-01@Europe/Berlin"
    assert finding.projected == pytest.approx(200.0)
    assert finding.forecast_due
    assert finding.overrun_at == datetime(2026, 10, 16, 10, 30, tzinfo=UTC)


def test_forecast_per_model_projects_the_model_spend() -> None:
    cfg = config(
        """
        budgets:
          - {name: b, keys: "*", limits: {cost_usd: 1000}, models: {gpt-4o: {cost_usd: 50}}}
        """
    )
    found = evaluate(cfg, usage(TEAM), MID_NOVEMBER)
    alpha = one(found, "b", subject="k1", model="gpt-4o")  # $30 at 50 %: $60 of $50
    assert (alpha.projected, alpha.forecast_due) == (60.0, True)
    assert not one(found, "b", subject="k1").forecast_due  # $110 of $1,000


# --- plumbing: export ranges, periods, noteworthy --------------------------------------------


def test_export_ranges_share_one_export_only_between_periods_that_start_together() -> None:
    cfg = config(
        """
        schedule: {timezone: UTC}
        budgets:
          - {name: monthly, keys: "*", limits: {cost_usd: 1}}
          - {name: quarterly, keys: "*", limits: {cost_usd: 1}, period: quarter}
          - {name: daily, keys: "*", limits: {cost_usd: 1}, period: day}
          - {name: weekly, keys: "*", limits: {cost_usd: 1}, period: week}
          - {name: berlin, keys: "*", limits: {cost_usd: 1}, timezone: Europe/Berlin}
        """
    )
    # Oct 1 2026 is a Thursday: the day, month and quarter all begin at midnight UTC.
    resolved = budgets.rules(cfg, datetime(2026, 10, 1, 12, tzinfo=UTC))
    ranges = budgets.export_ranges(resolved)
    assert sorted(period.name for period in ranges.values()) == ["month", "quarter", "week"]
    assert {p.zone.key for p in ranges.values()} == {"UTC", "Europe/Berlin"}


def test_each_budget_is_evaluated_on_the_export_of_its_own_period() -> None:
    cfg = config(
        """
        schedule: {timezone: UTC}
        budgets:
          - {name: monthly, keys: "*", limits: {cost_usd: 100}}
          - {name: daily, keys: "*", limits: {cost_usd: 10}, period: day}
        """
    )
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    resolved = budgets.rules(cfg, now)
    month = budgets.export_key(resolved[0].period)
    day = budgets.export_key(resolved[1].period)
    frames = {month: spend({"k": 90.0}), day: spend({"k": 9.0})}
    found = budgets.as_findings(budgets.evaluate(resolved, frames, now).findings)
    assert one(found, "monthly", subject="id-k").used == 90.0
    daily = one(found, "daily", subject="id-k")
    assert (daily.used, daily.period) == (9.0, "day:2026-11-20@UTC")


def test_findings_come_worst_first() -> None:
    cfg = config('budgets: [{name: b, keys: "*", limits: {cost_usd: 100}}]')
    found = evaluate(cfg, spend({"a": 10.0, "b": 90.0, "c": 50.0}))
    assert [f.api_key_name for f in found] == ["b", "c", "a"]


def test_noteworthy_keeps_levels_forecasts_and_findings_the_ledger_knows() -> None:
    cfg = config('budgets: [{name: b, keys: "*", limits: {cost_usd: 100}}]')
    # Half of November gone: a at 60 % (level 50), b at 30 % and c at 45 % (on course for 60 %
    # and 90 %: nothing to say).
    frame = spend({"a": 60.0, "b": 30.0, "c": 45.0})
    resolved = budgets.rules(cfg, MID_NOVEMBER)
    frames = dict.fromkeys(budgets.export_ranges(resolved), frame)
    findings = budgets.evaluate(resolved, frames, MID_NOVEMBER).findings
    assert [f.subject for f in budgets.noteworthy(findings)] == ["id-a"]
    period = "month:2026-11-01@UTC"
    ledger = {
        ("b", "id-b", "", "cost_usd", "actual", period): None,
        ("b", "id-c", "", "requests", "actual", period): None,  # another metric
        ("b", "id-c", "", "cost_usd", "forecast", "month:2026-10-01@UTC"): None,  # old period
    }
    kept = budgets.noteworthy(findings, alerts.known_findings(ledger))
    assert [f.subject for f in kept] == ["id-a", "id-b"]
    assert kept[1] == one(budgets.as_findings(findings), "b", subject="id-b")


# --- properties ------------------------------------------------------------------------------

CENTS = st.integers(min_value=0, max_value=5_000_000)  # up to $50,000 per row


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["k1", "k2", "k3"]), st.sampled_from(["m1", "m2"]), CENTS),
        max_size=12,
    ),
    limit_cents=st.integers(min_value=1, max_value=100_000_000),  # up to $1,000,000
    thresholds=st.sets(st.integers(min_value=1, max_value=300), min_size=1, max_size=5),
    scope=st.sampled_from(["key", "shared"]),
)
def test_evaluate_reports_exactly_the_highest_threshold_the_true_ratio_reaches(
    rows: list[tuple[str, str, int]],
    limit_cents: int,
    thresholds: set[int],
    scope: str,
) -> None:
    limit = Fraction(limit_cents, 100)
    cfg = config(
        f"""
        budgets:
          - name: b
            keys: "*"
            scope: {scope}
            limits: {{cost_usd: {limit_cents / 100!r}}}
            thresholds: {sorted(thresholds)}
        """
    )
    frame = usage((key, key, model, 1, cents / 100, None, None) for key, model, cents in rows)
    found = [f for f in evaluate(cfg, frame) if f.metric == "cost_usd"]
    cents_by_subject: dict[str, int] = {}
    for key, _model, cents in rows:
        subject = key if scope == "key" else "*"
        cents_by_subject[subject] = cents_by_subject.get(subject, 0) + cents
    if scope == "shared":
        cents_by_subject.setdefault("*", 0)
    assert {f.subject for f in found} == set(cents_by_subject)
    for finding in found:
        true_ratio = Fraction(cents_by_subject[finding.subject], 100) / limit
        reached = [at for at in thresholds if true_ratio * 100 >= at]
        assert finding.level == (max(reached) if reached else None)


KEY_NAMES = ["alpha", "alpha-2", "beta", "gamma*", "[x]"]
MODELS = ["gpt-4o", "gpt-4.1", "claude", "gpt-4o-mini"]
DYADIC = st.integers(min_value=0, max_value=10_000_000).map(lambda n: n / 64)  # exact in floats
TOKENS = st.none() | st.integers(min_value=0, max_value=10**9)


@settings(max_examples=120, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(KEY_NAMES), st.sampled_from(MODELS), st.integers(0, 10**6)),
        max_size=15,
    ).flatmap(
        lambda base: st.tuples(
            st.just(base),
            st.lists(st.tuples(DYADIC, TOKENS, TOKENS), min_size=len(base), max_size=len(base)),
        )
    ),
    keys=st.sampled_from(['"*"', '"alpha*"', "[beta, id-alpha]", '["gamma[*]", "[[]x]"]']),
    exclude=st.sampled_from(["[]", "[alpha-2]", '["*a"]']),
    scope=st.sampled_from(["key", "shared"]),
    model_glob=st.sampled_from(["gpt-4*", "claude", "gpt-4o", "*-mini"]),
)
def test_a_findings_used_equals_an_independent_sum_over_the_same_rows(
    rows: tuple[list[tuple[str, str, int]], list[tuple[float, int | None, int | None]]],
    keys: str,
    exclude: str,
    scope: str,
    model_glob: str,
) -> None:
    cfg = config(
        f"""
        budgets:
          - name: b
            keys: {keys}
            exclude: {exclude}
            scope: {scope}
            limits: {{cost_usd: 100, requests: 100, tokens: 100}}
            models: {{"{model_glob}": {{cost_usd: 10, requests: 10, tokens: 10}}}}
        """
    )
    budget = cfg.budgets[0]
    data = [
        (f"id-{name}", name, model, requests, cost, prompt, completion)
        for (name, model, requests), (cost, prompt, completion) in zip(*rows, strict=True)
    ]

    def chosen(patterns: Sequence[str], key_id: str, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) or p == key_id for p in patterns)

    expected: dict[tuple[str, str | None, str], float] = {}
    for key_id, name, model, requests, cost, prompt, completion in data:
        if not chosen(budget.keys, key_id, name) or chosen(budget.exclude, key_id, name):
            continue
        subject = key_id if scope == "key" else "*"
        tokens = None if prompt is None or completion is None else prompt + completion
        for model_key in (None, model_glob) if fnmatch.fnmatchcase(model, model_glob) else (None,):
            for metric, value in (("cost_usd", cost), ("requests", requests), ("tokens", tokens)):
                if value is not None or metric != "tokens":
                    key = (subject, model_key, metric)
                    expected[key] = expected.get(key, 0.0) + (value or 0)
    if scope == "shared":  # a pool is reported even when nothing in it was used
        for model_key in (None, model_glob):
            for metric in ("cost_usd", "requests"):
                expected.setdefault(("*", model_key, metric), 0.0)
    found = {(f.subject, f.model, f.metric): f.used for f in evaluate(cfg, usage(data))}
    assert found == expected


@settings(max_examples=200, deadline=None)
@given(
    at=st.integers(min_value=1, max_value=200),
    multiple=st.integers(min_value=1, max_value=2_000_000),
    parts=st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=8),
    below=st.booleans(),
)
def test_a_spend_split_over_rows_reaches_a_threshold_exactly_at_it_and_not_a_cent_below(
    at: int, multiple: int, parts: list[int], below: bool
) -> None:
    limit_cents = multiple * 100 // math.gcd(at, 100)  # so that at % of it is whole cents
    used_cents = at * limit_cents // 100 - below
    # Split the spend over rows in proportion to `parts`, in whole cents.
    shares = [used_cents * part // sum(parts) for part in parts]
    shares[0] += used_cents - sum(shares)
    cfg = config(
        f"""
        budgets:
          - {{name: b, keys: "*", limits: {{cost_usd: {limit_cents / 100!r}}}, thresholds: [{at}]}}
        """
    )
    rows = [("k", "k", f"m{i}", 1, cents / 100, None, None) for i, cents in enumerate(shares)]
    assert one(evaluate(cfg, usage(rows)), "b", subject="k").level == (None if below else at)
