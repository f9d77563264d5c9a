"""forecast: projections from stored days, on series whose answer is known.

Budgets are YAML through `parse_config`, usage and stored days are frames in the export's
schema (the days with a "day" column), and everything goes through `budgets.evaluate`, as a
cycle calls it. Expected numbers are worked out by hand in the comments.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import budgets, forecast
from costwatch.budgets import Finding
from costwatch.config import Config, parse_config
from costwatch.forecast import Daily
from costwatch.usage import SCHEMA

DAY = timedelta(days=1)
DECEMBER = date(2026, 12, 1)  # a Tuesday; December 2026 has 31 days
BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")

# (api_key_id, api_key_name, model, requests, cost)
Row = tuple[str, str, str, int, float]


def config(
    budget: str = "",
    forecast_options: str = "{}",
    zone: str = "UTC",
    limits: str = "{cost_usd: 1000000}",
) -> Config:
    text = f"""
        langdock: {{api_key: x}}
        schedule: {{timezone: {zone}}}
        defaults: {{forecast: {forecast_options}}}
        budgets:
          - {{name: b, keys: "*", limits: {limits}{budget}}}
    """
    return parse_config(textwrap.dedent(text))


def frame(rows: Iterable[Row], day: date | None = None) -> pl.DataFrame:
    data = pl.DataFrame(
        [(*row, None, None, None, None, None) for row in rows], schema=SCHEMA, orient="row"
    )
    return data if day is None else data.with_columns(pl.lit(day).alias("day"))


def days(first: date, last: date) -> list[date]:
    return [first + n * DAY for n in range((last - first).days + 1)]


def stored(
    first: date, last: date, rows: Callable[[date], list[Row]], patterns: Sequence[str] = ()
) -> Daily:
    """The days first..last, complete, each with `rows(day)`, read a day at a time."""
    parts = [forecast.daily(frame(rows(day), day), [day], patterns) for day in days(first, last)]
    return forecast.combine(parts, patterns)


def as_rows(history: Daily) -> pl.DataFrame:
    """The stored days' rows again, per day and key (all models summed)."""
    return history.sums.select(
        "api_key_id", "api_key_name", pl.lit("gpt-4o").alias("model"),
        pl.col("requests").cast(pl.Int64), pl.col("cost_usd").alias("total_cost_usd"),
        *(pl.lit(None, pl.Int64()).alias(c) for c in list(SCHEMA)[5:]), "day",
    )  # fmt: skip


def key_spends(cost: Callable[[date], float], key: str = "k") -> Callable[[date], list[Row]]:
    return lambda day: [(f"id-{key}", key, "gpt-4o", 1, cost(day))]


def to_date(history: Daily, now: datetime, zone: ZoneInfo = UTC_ZONE) -> pl.DataFrame:
    """The period-to-date export at `now`: the stored days of the month before today, plus
    today's share of the day's spend so far (spend spread evenly over the day's real time)."""
    local = now.astimezone(zone)
    today, first = local.date(), local.date().replace(day=1)
    rows = as_rows(history)
    closed = rows.filter((pl.col("day") >= first) & (pl.col("day") < today))
    start = datetime(today.year, today.month, today.day, tzinfo=zone).astimezone(UTC)
    end = datetime.combine(today + DAY, datetime.min.time(), zone).astimezone(UTC)
    share = (now.astimezone(UTC) - start) / (end - start)
    todays = rows.filter(pl.col("day") == today).with_columns(pl.col("total_cost_usd") * share)
    return (
        pl.concat([closed, todays], how="vertical")
        .group_by("api_key_id", "model", maintain_order=True)
        .agg(
            pl.col("api_key_name").last(),
            *(pl.col(c).sum() for c in SCHEMA if c not in ("api_key_id", "api_key_name", "model")),
        )
        .select(list(SCHEMA))
    )


def evaluate(
    cfg: Config, usage: pl.DataFrame, now: datetime, history: Daily | None
) -> list[Finding]:
    resolved = budgets.rules(cfg, now)
    ranges = budgets.export_ranges(resolved)
    frames = dict.fromkeys(ranges, usage)
    histories = dict.fromkeys(ranges, history) if history is not None else None
    return budgets.as_findings(budgets.evaluate(resolved, frames, now, histories).findings)


def spend_finding(found: list[Finding], subject: str = "id-k", model: str | None = None) -> Finding:
    (finding,) = [
        f for f in found if (f.subject, f.model, f.metric) == (subject, model, "cost_usd")
    ]
    return finding


# --- known series ----------------------------------------------------------------------------


def test_a_constant_daily_rate_projects_exactly() -> None:
    # $10 every day since 1 November; at noon on 10 December $95 is spent (9 days and half of
    # today), and 21 days and half a day are to come: 95 + 5 + 210 = $310, 31 days of $10.
    history = stored(date(2026, 11, 1), date(2026, 12, 31), key_spends(lambda _: 10.0))
    now = datetime(2026, 12, 10, 12, tzinfo=UTC)
    finding = spend_finding(evaluate(config(), to_date(history, now), now, history))
    assert finding.used == 95.0
    assert finding.projected == 310.0
    assert finding.forecast_method == "trailing 14-day rate"


def test_weekday_and_weekend_spend_are_projected_at_their_own_rates() -> None:
    # $100 on weekdays, $10 on Saturdays and Sundays. At midnight on Thursday 10 December, 1-9
    # December cost 7 x 100 + 2 x 10 = $720; 10-31 December are 16 weekdays and 6 weekend
    # days: 720 + 1600 + 60 = $2,380.
    history = stored(date(2026, 11, 1), date(2026, 12, 9), key_spends(_weekly))
    now = datetime(2026, 12, 10, tzinfo=UTC)
    finding = spend_finding(evaluate(config(), to_date(history, now), now, history))
    assert finding.used == 720.0
    assert finding.projected == 2380.0
    assert finding.forecast_method == forecast.WEEKDAY_WEEKEND
    assert finding.projected == 720 + sum(
        _weekly(day) for day in days(now.date(), date(2026, 12, 31))
    )


def test_method_trailing_keeps_one_rate_for_every_day() -> None:
    # The same series with `method: trailing`: the 14 days 26 November - 9 December are 10
    # weekdays and 4 weekend days, $1,040, so $1,040 / 14 for each of the 22 days to come.
    history = stored(date(2026, 11, 1), date(2026, 12, 9), key_spends(_weekly))
    now = datetime(2026, 12, 10, tzinfo=UTC)
    cfg = config(forecast_options="{method: trailing}")
    finding = spend_finding(evaluate(cfg, to_date(history, now), now, history))
    assert finding.projected == pytest.approx(720 + 22 * 1040 / 14, rel=1e-12)
    assert finding.forecast_method == "trailing 14-day rate"


def test_weekdays_and_weekends_alike_keep_one_rate() -> None:
    # Weekends 1.4 times weekdays: not more than SPLIT_RATIO (1.5) apart, so one rate.
    history = stored(
        date(2026, 11, 1),
        date(2026, 12, 9),
        key_spends(lambda d: 14.0 if d.weekday() >= 5 else 10.0),
    )
    now = datetime(2026, 12, 10, tzinfo=UTC)
    finding = spend_finding(evaluate(config(), to_date(history, now), now, history))
    assert finding.forecast_method == "trailing 14-day rate"
    assert finding.projected == pytest.approx(finding.used + 22 * (10 * 10 + 4 * 14) / 14)


def test_a_spike_early_in_the_month_is_ignored_once_outside_the_window() -> None:
    # $1,000 on 1 December, $10 on every other day. On 20 December (window 6-19 December) the
    # rate is $10: $1,180 spent + 12 days x $10 = $1,300, where the linear projection from the
    # month's start says 1,180 / (19 / 31) = $1,925.26.
    history = stored(
        date(2026, 11, 1),
        date(2026, 12, 31),
        key_spends(lambda d: 1000.0 if d == DECEMBER else 10.0),
    )
    now = datetime(2026, 12, 20, tzinfo=UTC)
    usage = to_date(history, now)
    finding = spend_finding(evaluate(config(), usage, now, history))
    assert (finding.used, finding.projected) == (1180.0, 1300.0)
    linear = spend_finding(evaluate(config(), usage, now, None))
    assert linear.projected == pytest.approx(1180 / (19 / 31))
    assert linear.forecast_method == forecast.LINEAR
    # While the spike is in the window (on 10 December) it raises the rate.
    earlier = datetime(2026, 12, 10, tzinfo=UTC)
    inside = spend_finding(evaluate(config(), to_date(history, earlier), earlier, history))
    assert inside.projected is not None
    assert inside.projected > 1090 + 22 * 10


@pytest.mark.parametrize(
    ("stored_days", "method"), [(0, None), (6, None), (7, 7), (10, 10), (30, 14)]
)
def test_too_short_a_history_projects_linearly_and_says_so(
    stored_days: int, method: int | None
) -> None:
    # Fewer than MIN_DAYS (7) closed days in the window: linear since the period's start.
    now = datetime(2026, 12, 10, tzinfo=UTC)
    first = now.date() - stored_days * DAY
    history = stored(first, now.date() - DAY, key_spends(lambda _: 10.0))
    usage = frame([("id-k", "k", "gpt-4o", 1, 90.0)])
    finding = spend_finding(evaluate(config(), usage, now, history))
    if method is None:
        assert finding.forecast_method == forecast.LINEAR
        assert finding.projected == pytest.approx(90 / (9 / 31))
    else:
        assert finding.forecast_method == f"trailing {method}-day rate"
        assert finding.projected == 90 + 22 * 10


def test_days_not_stored_are_left_out_of_the_window() -> None:
    # 14 days of which 5 are missing (a gap): 9 stored days at $10, so a trailing 9-day rate.
    now = datetime(2026, 12, 10, tzinfo=UTC)
    full = stored(date(2026, 11, 26), date(2026, 12, 9), key_spends(lambda _: 10.0))
    gap = frozenset(days(date(2026, 11, 30), date(2026, 12, 4)))
    history = forecast.daily(as_rows(full), full.days - gap)
    usage = frame([("id-k", "k", "gpt-4o", 1, 90.0)])
    finding = spend_finding(evaluate(config(), usage, now, history))
    assert (finding.forecast_method, finding.projected) == ("trailing 9-day rate", 310.0)


def test_a_stored_day_without_rows_is_a_day_without_spend() -> None:
    # 14 stored days, 7 of them with no rows at all: $70 over 14 days is $5 a day.
    now = datetime(2026, 12, 10, tzinfo=UTC)
    history = stored(
        date(2026, 11, 26), date(2026, 12, 9),
        lambda d: key_spends(lambda _: 10.0)(d) if d.day % 2 else [],
    )  # fmt: skip
    usage = frame([("id-k", "k", "gpt-4o", 1, 45.0)])
    finding = spend_finding(evaluate(config(), usage, now, history))
    assert finding.projected == 45 + 22 * 5


def test_method_linear_ignores_the_history() -> None:
    history = stored(date(2026, 11, 1), date(2026, 12, 9), key_spends(lambda _: 10.0))
    now = datetime(2026, 12, 10, tzinfo=UTC)
    cfg = config(forecast_options="{method: linear}")
    finding = spend_finding(evaluate(cfg, to_date(history, now), now, history))
    assert finding.forecast_method == forecast.LINEAR


def test_a_dst_day_has_its_real_hours() -> None:
    # October 2026 in Berlin: clocks go back on Sunday 25 October, a 25-hour day. $25 a day
    # ($1 an hour that day). At local noon on the 25th, 13 hours have passed and 12 remain:
    # $600 + $13 spent, 12 x $1 + 6 days x $25 to come = $775 = 31 x $25.
    history = stored(date(2026, 9, 1), date(2026, 10, 31), key_spends(lambda _: 25.0))
    now = datetime(2026, 10, 25, 12, tzinfo=BERLIN)
    assert now.astimezone(UTC) == datetime(2026, 10, 25, 11, tzinfo=UTC)
    cfg = config(limits="{cost_usd: 700}", zone="Europe/Berlin")
    usage = to_date(history, now, BERLIN)
    finding = spend_finding(evaluate(cfg, usage, now, history))
    assert finding.used == pytest.approx(613.0, rel=1e-12)
    assert finding.projected == pytest.approx(775.0, rel=1e-12)
    assert finding.forecast_method == "trailing 14-day rate"
    # $700 is passed after 12 + 3 x 25 more: at the end of 28 October, 23:00 UTC (CET).
    assert finding.forecast_due
    assert finding.overrun_at is not None
    assert abs(finding.overrun_at - datetime(2026, 10, 28, 23, tzinfo=UTC)) < timedelta(seconds=1)


def test_the_overrun_falls_inside_the_day_the_rates_pass_the_limit() -> None:
    # $100 on weekdays, $10 on weekends, limit $1,000. At midnight on Thursday 10 December
    # $720 is spent; Thursday and Friday bring $200 ($920), Saturday $10, Sunday $10 ($940),
    # Monday 14 December passes $1,000 after $60 of its $100: at 60 % of that day, 14:24 UTC.
    history = stored(date(2026, 11, 1), date(2026, 12, 9), key_spends(_weekly))
    now = datetime(2026, 12, 10, tzinfo=UTC)
    cfg = config(limits="{cost_usd: 1000}")
    finding = spend_finding(evaluate(cfg, to_date(history, now), now, history))
    assert finding.forecast_due
    assert finding.overrun_at is not None
    assert abs(finding.overrun_at - datetime(2026, 12, 14, 14, 24, tzinfo=UTC)) < timedelta(
        seconds=1
    )


# --- subjects: pools and model globs, vectorised --------------------------------------------


def test_a_pool_rate_counts_every_selected_key_even_one_quiet_this_period() -> None:
    # Keys a ($10/day) and b ($5/day, but nothing since 1 December); c is not in the pool.
    def rows(day: date) -> list[Row]:
        out: list[Row] = [("id-a", "a", "gpt-4o", 1, 10.0), ("id-c", "c", "gpt-4o", 1, 99.0)]
        return [*out, ("id-b", "b", "gpt-4o", 1, 5.0)] if day < DECEMBER else out

    history = stored(date(2026, 11, 1), date(2026, 12, 9), rows)
    now = datetime(2026, 12, 10, tzinfo=UTC)
    cfg = parse_config(
        textwrap.dedent("""
        langdock: {api_key: x}
        budgets:
          - {name: pool, keys: [a, b], scope: shared, limits: {cost_usd: 1000}}
        """)
    )
    usage = frame([("id-a", "a", "gpt-4o", 9, 90.0), ("id-c", "c", "gpt-4o", 9, 891.0)])
    pool = spend_finding(evaluate(cfg, usage, now, history), subject="*")
    # Window 26 November - 9 December: b spent 5 of those 14 days, $25: (140 + 25) / 14 a day.
    assert pool.projected == pytest.approx(90 + 22 * 165 / 14)


def test_a_model_glob_has_its_own_rate_within_each_key() -> None:
    rows = lambda _: [("id-k", "k", "gpt-4o", 1, 10.0), ("id-k", "k", "claude", 1, 20.0)]  # noqa: E731
    history = stored(date(2026, 11, 1), date(2026, 12, 9), rows, patterns=["gpt-4*"])
    now = datetime(2026, 12, 10, tzinfo=UTC)
    cfg = config(', models: {"gpt-4*": {cost_usd: 1000}}')
    usage = frame([("id-k", "k", "gpt-4o", 9, 90.0), ("id-k", "k", "claude", 9, 180.0)])
    found = evaluate(cfg, usage, now, history)
    assert spend_finding(found).projected == 270 + 22 * 30
    assert spend_finding(found, model="gpt-4*").projected == 90 + 22 * 10


def test_a_model_glob_not_summed_apart_in_the_stored_days_projects_linearly() -> None:
    rows = lambda _: [("id-k", "k", "gpt-4o", 1, 10.0)]  # noqa: E731
    history = stored(date(2026, 11, 1), date(2026, 12, 9), rows)  # no patterns
    now = datetime(2026, 12, 10, tzinfo=UTC)
    cfg = config(', models: {"gpt-4*": {cost_usd: 1000}}')
    found = evaluate(cfg, frame([("id-k", "k", "gpt-4o", 9, 90.0)]), now, history)
    assert {f.forecast_method for f in found} == {forecast.LINEAR}


def test_days_read_one_at_a_time_sum_as_days_read_at_once() -> None:
    def rows(day: date) -> list[Row]:
        return [
            ("id-a", f"a-{day.day}", "gpt-4o", day.day, day.day * 1.5),
            ("id-a", f"a-{day.day}", "claude", 1, 0.25),
            ("id-b", "b", "gpt-4o-mini", 2, 3.0),
        ][: 1 + day.day % 3]

    covered = days(date(2026, 11, 20), date(2026, 12, 9))
    patterns = ["gpt-4o*", "claude"]
    at_once = pl.concat([frame(rows(day), day) for day in covered], how="vertical")
    whole = forecast.daily(at_once, covered, patterns)
    apart = stored(covered[0], covered[-1], rows, patterns)
    assert apart.days == whole.days == frozenset(covered)
    order = ["api_key_id", "day"]
    assert apart.sums.sort(order).equals(whole.sums.sort(order).select(apart.sums.columns))


def test_the_days_to_read_are_the_longest_window_before_today() -> None:
    cfg = config(forecast_options="{window: 21}", zone="Europe/Berlin")
    (rule,) = budgets.rules(cfg, datetime(2026, 12, 9, 23, 30, tzinfo=UTC))  # 10 Dec in Berlin
    assert forecast.wanted(rule.forecast, BERLIN, datetime(2026, 12, 9, 23, 30, tzinfo=UTC)) == (
        date(2026, 11, 19),
        date(2026, 12, 9),
    )
    linear = config(forecast_options="{method: linear}").defaults.forecast
    assert forecast.wanted(linear, BERLIN, datetime(2026, 12, 9, tzinfo=UTC)) is None


def test_every_key_gets_its_own_rate_in_one_pass() -> None:
    # 300 keys, key n spending $n a day: each projects to 31 x n.
    rows = lambda _: [(f"id-{n}", f"k{n}", "gpt-4o", 1, float(n)) for n in range(1, 301)]  # noqa: E731
    history = stored(date(2026, 11, 1), date(2026, 12, 9), rows)
    now = datetime(2026, 12, 10, tzinfo=UTC)
    found = evaluate(config(), to_date(history, now), now, history)
    projected = {f.subject: f.projected for f in found if f.metric == "cost_usd"}
    assert projected == {f"id-{n}": 31.0 * n for n in range(1, 301)}


# --- what a forecast never does --------------------------------------------------------------


def test_zero_history_and_nothing_spent_forecast_nothing() -> None:
    now = datetime(2026, 12, 10, tzinfo=UTC)
    history = forecast.daily(frame([], DECEMBER), days(date(2026, 11, 1), date(2026, 12, 9)))
    cfg = config(limits="{requests: 1}", forecast_options="{min_elapsed: 0}")
    usage = frame([("id-k", "k", "gpt-4o", 0, 0.0)])
    found = evaluate(cfg, usage, now, history)
    (requests,) = [f for f in found if f.metric == "requests"]
    assert requests.projected == 0.0
    assert not requests.forecast_due
    assert requests.overrun_at is None


def test_min_elapsed_holds_for_rates_too() -> None:
    # On 3 December 6.5 % of the month has passed, under the default 20 %: no forecast yet,
    # though $10 a day for 31 days passes $100.
    history = stored(date(2026, 11, 1), date(2026, 12, 2), key_spends(lambda _: 10.0))
    now = datetime(2026, 12, 3, tzinfo=UTC)
    cfg = config(limits="{cost_usd: 100}")
    finding = spend_finding(evaluate(cfg, to_date(history, now), now, history))
    assert finding.projected == 310.0
    assert not finding.forecast_due
    cfg = config(limits="{cost_usd: 100}", forecast_options="{min_elapsed: 0}")
    assert spend_finding(evaluate(cfg, to_date(history, now), now, history)).forecast_due


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), min_size=0, max_size=40),
    hours=st.integers(min_value=0, max_value=31 * 24 - 1),
    spent=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    limit=st.floats(min_value=0.01, max_value=1e10),
    method=st.sampled_from(["auto", "trailing", "linear"]),
)
def test_a_forecast_is_never_nan_never_below_what_is_spent(
    costs: list[float], hours: int, spent: float, limit: float, method: str
) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=hours)
    today = now.date()
    series = {today - (n + 1) * DAY: cost for n, cost in enumerate(costs)}
    parts = [frame([("id-k", "k", "gpt-4o", 1, cost)], day) for day, cost in series.items()]
    history = forecast.daily(
        pl.concat(parts, how="vertical") if parts else frame([], today), series
    )
    cfg = config(limits=f"{{cost_usd: {limit!r}}}", forecast_options=f"{{method: {method}}}")
    finding = spend_finding(evaluate(cfg, frame([("id-k", "k", "gpt-4o", 1, spent)]), now, history))
    if finding.projected is None:  # the linear method at the period's first instant
        assert hours == 0
        assert finding.forecast_method is None
        return
    assert math.isfinite(finding.projected)
    assert finding.projected >= spent
    assert finding.forecast_ratio is not None
    assert math.isfinite(finding.forecast_ratio)
    if finding.forecast_due:
        assert finding.overrun_at is not None
        assert now - timedelta(seconds=1) <= finding.overrun_at <= datetime(2027, 1, 1, tzinfo=UTC)
    if not costs and finding.forecast_method != forecast.LINEAR:
        assert finding.projected == spent


def _weekly(day: date) -> float:
    return 10.0 if day.weekday() >= 5 else 100.0
