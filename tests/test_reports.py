"""The spend report's pure core: which days a period choice names, when a scheduled report is
due (across DST), and that a period is reported whole or not at all."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from histories import frame, steady

from costwatch import reports
from costwatch.reports import Span

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 2, 10, tzinfo=BERLIN)  # a Wednesday


@pytest.mark.parametrize(
    ("choice", "first", "last", "whole"),
    [
        ("yesterday", date(2026, 12, 1), date(2026, 12, 1), True),
        ("last-week", date(2026, 11, 23), date(2026, 11, 29), True),
        ("last-month", date(2026, 11, 1), date(2026, 11, 30), True),
        ("last-quarter", date(2026, 7, 1), date(2026, 9, 30), True),
        ("this-week", date(2026, 11, 30), date(2026, 12, 1), False),
        ("this-month", date(2026, 12, 1), date(2026, 12, 1), False),
        ("this-quarter", date(2026, 10, 1), date(2026, 12, 1), False),
    ],
)
def test_each_period_choice_names_closed_days_only(
    choice: str, first: date, last: date, whole: bool
) -> None:
    span = reports.span(choice, BERLIN, NOW)
    assert (span.first, span.last, span.whole) == (first, last, whole)


def test_the_period_before_a_part_of_one_is_as_many_of_its_first_days() -> None:
    this_week = reports.span("this-week", BERLIN, NOW)
    assert this_week.previous() == Span(
        "week", "Europe/Berlin", date(2026, 11, 23), date(2026, 11, 24), whole=False
    )
    march = Span("month", "Europe/Berlin", date(2027, 3, 1), date(2027, 3, 30), whole=False)
    assert march.previous().last == date(2027, 2, 28)  # at most the whole of February
    assert reports.span("last-month", BERLIN, NOW).previous().first == date(2026, 10, 1)
    assert this_week.key == "week:2026-11-30@Europe/Berlin..2026-12-01"


def test_a_running_period_without_a_closed_day_and_an_unknown_choice_are_refused() -> None:
    with pytest.raises(ValueError, match="no day of this month has closed yet"):
        reports.span("this-month", BERLIN, datetime(2026, 12, 1, 10, tzinfo=BERLIN))
    with pytest.raises(ValueError, match="unknown period 'fortnight'"):
        reports.span("fortnight", BERLIN, NOW)


def test_a_report_is_due_at_the_first_matching_local_time_after_its_period() -> None:
    week = reports.last_whole("week", BERLIN, NOW)
    assert reports.due_at(week, 0, 9, 0) == datetime(2026, 11, 30, 9, tzinfo=BERLIN)
    assert reports.due_at(week, None, 0, 0) == datetime(2026, 11, 30, 0, tzinfo=BERLIN)
    assert reports.due_at(week, 2, 9, 30) == datetime(2026, 12, 2, 9, 30, tzinfo=BERLIN)
    month = reports.last_whole("month", BERLIN, NOW)  # November; December 1 is a Tuesday
    assert reports.due_at(month, 0, 9, 0) == datetime(2026, 12, 7, 9, tzinfo=BERLIN)


def test_a_due_time_that_a_dst_change_skips_is_the_instant_after_the_gap() -> None:
    # Europe/Berlin skips 02:00-03:00 on Sunday 29 March 2026, the day after this one
    week = Span("day", "Europe/Berlin", date(2026, 3, 28), date(2026, 3, 28))
    due = reports.due_at(week, None, 2, 30)
    assert due.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST


def test_a_period_with_a_day_not_covered_is_not_reported_and_the_comparison_needs_all() -> None:
    week = reports.last_whole("week", BERLIN, NOW)
    days = [*week.previous().days, *week.days]
    usage = frame(steady("alpha", "m1", 10.0, 100, days))
    with pytest.raises(ValueError, match=r"1 day\(s\) of week:2026-11-23@Europe/Berlin"):
        reports.build(week, usage, set(days) - {date(2026, 11, 25)}, at=NOW)
    partial_before = set(week.days) | {date(2026, 11, 16)}
    report = reports.build(week, usage, partial_before, at=NOW)
    assert report.cost_usd == pytest.approx(70.0)
    assert report.previous_cost_usd is None
    assert report.change_ratio is None
    assert report.top_keys[0].previous_cost_usd is None
    whole = reports.build(week, usage, set(days), at=NOW)
    assert whole.previous_cost_usd == pytest.approx(70.0)
    assert whole.change_ratio == 0


def test_a_period_without_use_has_spent_nothing_and_lists_nobody() -> None:
    week = reports.last_whole("week", BERLIN, NOW)
    empty = frame([])
    report = reports.build(week, empty, set(week.days) | set(week.previous().days), at=NOW)
    assert not report.spent
    assert (report.top_keys, report.top_models, report.keys) == ((), (), 0)
    assert report.change_ratio is None  # nothing before either
