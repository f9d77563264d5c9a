"""suggest: limits from a history whose answer is known, worked out by hand in the comments;
the snippet is YAML the configuration reads back, with the budget otherwise as written."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import yaml
from histories import Row, frame
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch.config import Config, parse_config
from costwatch.suggest import Options, Suggestion, render, suggest, window

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)  # Dec 2, Berlin: Jun 1 to Dec 1 is 6 months
ZONE = "Europe/Berlin"
DEFAULTS = Options()
MONTHS = [date(2026, month, 15) for month in range(6, 12)]  # a day in each of Jun to Nov


def config(budgets: str, *, top: str = "") -> Config:
    text = "langdock: {api_key: x}\nschedule: {timezone: Europe/Berlin}\n" + top
    return parse_config(text + "budgets:\n" + textwrap.indent(textwrap.dedent(budgets), "  "))


def all_days(first: date, last: date) -> frozenset[date]:
    return frozenset(first + timedelta(days=n) for n in range((last - first).days + 1))


def run(
    cfg: Config,
    rows: Iterable[Row],
    *,
    covered: frozenset[date] | None = None,
    options: Options = DEFAULTS,
) -> list[Suggestion]:
    first, last = date(2026, 6, 1), date(2026, 12, 1)
    days = all_days(first, last) if covered is None else covered
    return suggest(cfg, {ZONE: frame(rows)}, {ZONE: days}, NOW, options)


def limits(item: Suggestion) -> dict[str, float | None]:
    return {limit.metric: limit.value for limit in item.limits}


POOL = """\
- name: pool
  keys: [a, b]
  scope: shared
  limits: {cost_usd: 1000, requests: 5000}
"""


def test_window_is_the_calendar_months_before_this_one_to_yesterday() -> None:
    assert window(6, ZoneInfo(ZONE), NOW) == (date(2026, 6, 1), date(2026, 12, 1))
    assert window(12, ZoneInfo(ZONE), NOW) == (date(2025, 12, 1), date(2026, 12, 1))
    assert window(1, ZoneInfo(ZONE), datetime(2026, 1, 10, tzinfo=UTC)) == (
        date(2025, 12, 1),
        date(2026, 1, 9),
    )


def test_a_pool_is_the_p90_of_its_keys_summed_per_month_plus_headroom() -> None:
    # a: 10, 20, ... 60; b: 90, 180, ... 540; the pool: 100, 200, ... 600 a month.
    # p90 of six: rank 0.9 * 5 = 4.5, between 500 and 600: 550; + 20% = 660.
    rows = [(day, "a", "gpt-4o", 10.0 * (i + 1), i + 1) for i, day in enumerate(MONTHS)]
    rows += [(day, "b", "gpt-4o", 90.0 * (i + 1), 9 * (i + 1)) for i, day in enumerate(MONTHS)]
    rows += [(MONTHS[0], "c", "gpt-4o", 5000.0, 1)]  # not selected
    [item] = run(config(POOL), rows)
    # requests: 10, 20, ... 60: p90 55, + 20% = 66
    assert limits(item) == {"cost_usd": 660.0, "requests": 66.0}
    assert item.periods == 6
    basis = item.limits[0].basis
    assert basis == ("p90 of 6 full months $550.00 + 20% headroom; highest month Nov 2026 $600.00")


def test_a_per_key_budget_takes_its_highest_key_each_from_its_first_month() -> None:
    # a: 100 .. 600 -> 660; b spends only from Sep: 400, 400, 400 -> p90 400 -> 480,
    # counted over its own three months (from Jun it would be 0, 0, 0, 400, 400, 400).
    rows = [(day, "a", "gpt-4o", 100.0 * (i + 1), 1) for i, day in enumerate(MONTHS)]
    rows += [(day, "b", "gpt-4o", 400.0, 1) for day in MONTHS[3:]]
    one = """\
    - name: each
      keys: [a, b]
      limits: {cost_usd: 50}
    """
    [item] = run(config(one), rows)
    assert limits(item) == {"cost_usd": 660.0}
    assert "of key 'a', the highest of 2 key(s)" in item.limits[0].basis
    [only_b] = run(config(one.replace("[a, b]", "[b]")), rows)
    assert limits(only_b) == {"cost_usd": 480.0}
    assert only_b.limits[0].basis.startswith("p90 of 3 full months $400.00")


def test_a_weekly_budget_is_judged_by_its_own_weeks_not_a_month_scaled_down() -> None:
    # Every day $10 except one Sunday $200: 25 full weeks of $70, one of $260.
    # p90 of 26 weeks: rank 22.5 of the sorted, all $70 there: 70 + 20% = 84.
    days = sorted(all_days(date(2026, 6, 1), date(2026, 11, 29)))
    rows = [(day, "a", "m", 200.0 if day == date(2026, 9, 6) else 10.0, 1) for day in days]
    weekly = """\
    - name: weekly
      keys: a
      scope: shared
      period: week
      limits: {cost_usd: 1}
    """
    [item] = run(config(weekly), rows)
    assert item.periods == 26  # Jun 1 (a Monday) to Nov 29
    assert limits(item) == {"cost_usd": 84.0}
    assert item.limits[0].basis.endswith("highest week of 2026-08-31 $260.00")


def test_short_history_takes_the_highest_period_and_says_so() -> None:
    rows = [(MONTHS[4], "a", "m", 300.0, 3), (MONTHS[5], "a", "m", 200.0, 2)]
    covered = all_days(date(2026, 10, 1), date(2026, 12, 1))  # Oct and Nov only
    [item] = run(config(POOL), rows, covered=covered)
    assert item.too_short
    assert item.periods == 2
    assert limits(item) == {"cost_usd": 360.0, "requests": 4.0}  # ceil(3 * 1.2)
    assert item.limits[0].basis.startswith(
        "the highest of only 2 full months $300.00 (too short for a p90)"
    )
    text = render([item], Options(), NOW)
    assert "#   history short: 2 full month(s) in the window (a longer --months" in text


def test_no_full_period_or_no_spend_keeps_the_limit_as_written() -> None:
    covered = all_days(date(2026, 11, 20), date(2026, 12, 1))
    [item] = run(config(POOL), [(date(2026, 11, 21), "a", "m", 5.0, 1)], covered=covered)
    assert limits(item) == {"cost_usd": None, "requests": None}
    assert (
        item.limits[0].basis
        == "history too short: no full month (the limit as written, 1000, is kept)"
    )
    [quiet] = run(config(POOL), [(MONTHS[0], "c", "m", 5.0, 1)])
    assert (
        quiet.limits[0].basis == "no spend in 6 full months (the limit as written, 1000, is kept)"
    )
    snippet = yaml.safe_load(render([quiet], Options(), NOW))
    assert snippet["budgets"][0]["limits"] == {"cost_usd": 1000, "requests": 5000}


def test_tokens_are_suggested_only_where_reported() -> None:
    tokens = """\
    - name: tok
      keys: a
      scope: shared
      limits: {tokens: 100}
    """
    rows = [(day, "a", "m", 1.0, 1) for day in MONTHS]
    [none] = run(config(tokens), rows)
    assert limits(none) == {"tokens": None}
    assert none.limits[0].basis.startswith("no tokens reported in 6 full months")
    reported = suggest(
        config(tokens),
        {ZONE: frame(rows, tokens={i: 1000 * (i + 1) for i in range(6)})},
        {ZONE: all_days(date(2026, 6, 1), date(2026, 12, 1))},
        NOW,
        Options(percentile=50, headroom=0),
    )
    assert limits(reported[0]) == {"tokens": 3500.0}  # the median of 1000 .. 6000


def test_percentile_and_headroom_are_options() -> None:
    rows = [(day, "a", "m", 100.0 * (i + 1), 1) for i, day in enumerate(MONTHS)]
    [item] = run(config(POOL), rows, options=Options(percentile=100, headroom=0.5))
    assert limits(item)["cost_usd"] == 900.0  # 600 + 50%
    [three] = run(config(POOL), rows, options=Options(months=3))
    assert three.periods == 3  # Sep, Oct, Nov
    assert limits(three)["cost_usd"] == pytest.approx(696.0)  # p90 of 400, 500, 600 = 580


def test_the_snippet_reads_back_as_the_same_budgets_with_the_new_limits() -> None:
    written = """\
    - name: "odd\\nname: with # and 'quotes'"
      keys: ["team-*", "id-x"]
      exclude: team-old
      limits: {cost_usd: 10, requests: 20}
      models: {"gpt-4*": {cost_usd: 5}}
      thresholds: [50, {at: 90, severity: critical, mention: ["<!subteam^S123>"]}]
      forecast: {enabled: true, min_elapsed: 30%, window: 21}
      channel: "#ai-spend"
      mention: ["<@U123>"]
      repeat: 1h30m
      period: month
      timezone: Europe/Berlin
    - name: rest
      keys: "*"
      fallback: true
      limits: {cost_usd: 3}
    """
    top = "slack: {token: xoxb-1, channel: '#general'}\n"
    cfg = config(written, top=top)
    rows = [(day, "team-a", "gpt-4o", 100.0 * (i + 1), 10) for i, day in enumerate(MONTHS)]
    rows += [(day, "other", "gpt-4o", 1.0, 1) for day in MONTHS]
    suggestions = run(cfg, rows)
    text = render(suggestions, Options(), NOW)
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert "  # 'odd\\nname: with # and \\'quotes\\'' (monthly, Europe/Berlin):" in comments
    body = text.split("budgets:\n", 1)[1]
    again = config(body, top=top)
    assert again.budgets[0] == cfg.budgets[0].model_copy(update={"limits": again.budgets[0].limits})
    assert again.budgets[0].limits.cost_usd == 660.0
    assert again.budgets[0].limits.requests == 12  # 10 a month + 20%
    assert again.budgets[1].limits.cost_usd == 1.2  # "other": $1 a month, kept by the fallback
    assert again.budgets[1].fallback


def test_a_file_without_budgets_says_so_in_valid_yaml() -> None:
    text = render([], Options(), NOW)
    assert yaml.safe_load(text) == {"budgets": []}


def test_an_empty_history_suggests_nothing_and_does_not_crash() -> None:
    empty = frame([]).clear()
    [item] = suggest(config(POOL), {ZONE: empty}, {ZONE: frozenset()}, NOW, Options())
    assert limits(item) == {"cost_usd": None, "requests": None}
    [item] = suggest(config(POOL), {}, {}, NOW, Options())
    assert item.periods == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e12)), min_size=6, max_size=6
    ),
    st.floats(min_value=50, max_value=100),
    st.floats(min_value=0, max_value=2),
)
def test_any_monthly_series_gives_a_limit_at_or_above_its_percentile_or_keeps_the_written_one(
    costs: list[float], percentile: float, headroom: float
) -> None:
    rows = [(day, "a", "m", cost, 1) for day, cost in zip(MONTHS, costs, strict=True)]
    options = Options(percentile=percentile, headroom=headroom)
    [item] = run(config(POOL), rows, options=options)
    value = limits(item)["cost_usd"]
    if max(costs) == 0:
        assert value is None  # nothing spent: nothing to suggest on
        return
    assert value is not None
    assert value > 0
    p = float(pl.Series(costs).quantile(percentile / 100, interpolation="linear") or 0.0)
    assert value >= p * (1 + headroom) - 1e-6 * max(costs)
    assert yaml.safe_load(render([item], options, NOW))["budgets"][0]["limits"]["cost_usd"] > 0
