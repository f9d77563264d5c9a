"""The keeper's planner (`costwatch.keeping`): what to export next, in which order, and what a
reconcile found. Pure, so driven with plain values: stored days are a dict, marks a dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import keeping, periods
from costwatch.keeping import DayExport, Reconcile, Scope, Settings
from costwatch.usage import SCHEMA

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SIX_HOURS = timedelta(hours=6)


@dataclass(frozen=True)
class Day:
    settled: bool


def at(text: str, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def days(first: str, last: str, settled: bool = True) -> dict[date, Day]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return {start + timedelta(n): Day(settled) for n in range((end - start).days + 1)}


def month_scope(now: datetime, zone: ZoneInfo = BERLIN) -> Scope:
    (scope,) = keeping.scopes([periods.current("month", zone, now)])
    return scope


def plan_for(
    now: datetime,
    stored: dict[date, Day] | None = None,
    marks: Mapping[str, datetime | None] | None = None,
    backfill_days: int = 30,
    keep_from: date | None = None,
) -> keeping.Plan:
    scope = month_scope(now)
    return keeping.plan(
        [scope],
        now,
        {"Europe/Berlin": stored or {}},
        marks or {},
        Settings(settle_after=SIX_HOURS, backfill_days=backfill_days, keep_from=keep_from),
    )


def described(plan: keeping.Plan) -> list[str]:
    return [work.describe() for work in plan.work]


def exports(plan: keeping.Plan) -> list[DayExport]:
    assert all(isinstance(work, DayExport) for work in plan.work)
    return [work for work in plan.work if isinstance(work, DayExport)]


def test_an_empty_store_first_fills_the_current_month_newest_first_then_backfills() -> None:
    plan = plan_for(at("2026-11-15T10:00"))
    kinds = [work.kind for work in plan.work]
    assert kinds == ["current"] * 14 + ["backfill"] * 16
    assert [w.day for w in exports(plan)[:2]] == [date(2026, 11, 14), date(2026, 11, 13)]
    assert plan.work[13] == DayExport("current", BERLIN, date(2026, 11, 1), settled=True)
    assert [w.day for w in exports(plan)[14:]][::15] == [date(2026, 10, 31), date(2026, 10, 16)]
    assert (plan.missing_current, plan.missing_backfill, plan.remaining_days) == (14, 16, 30)
    assert not plan.current_complete


def test_a_day_exported_before_its_settle_time_is_stored_unsettled() -> None:
    before = plan_for(at("2026-11-15T05:59"))
    after = plan_for(at("2026-11-15T06:00"))
    assert before.work[0] == DayExport("current", BERLIN, date(2026, 11, 14), settled=False)
    assert after.work[0] == DayExport("current", BERLIN, date(2026, 11, 14), settled=True)
    assert all(work.settled for work in exports(before)[1:])  # older days have settled


def test_an_unsettled_day_is_exported_again_once_its_settle_time_has_passed() -> None:
    stored = days("2026-10-16", "2026-11-13") | {date(2026, 11, 14): Day(settled=False)}
    assert plan_for(at("2026-11-15T05:00"), stored).work == ()
    plan = plan_for(at("2026-11-15T06:30"), stored)
    assert plan.work == (DayExport("settle", BERLIN, date(2026, 11, 14), settled=True),)
    assert plan.current_complete
    assert plan.remaining_days == 0


def test_the_reconcile_comes_once_a_day_after_every_current_day_has_settled() -> None:
    stored = days("2026-10-16", "2026-11-14")
    now = at("2026-11-15T06:30")
    assert plan_for(now, stored).work == (Reconcile(BERLIN, date(2026, 11, 1), date(2026, 11, 14)),)
    reconciled = {"reconciled:Europe/Berlin": at("2026-11-15T06:31")}
    assert plan_for(now + timedelta(hours=12), stored, reconciled).work == ()
    yesterday = {"reconciled:Europe/Berlin": at("2026-11-14T23:59")}
    assert [w.kind for w in plan_for(now, stored, yesterday).work] == ["reconcile"]


def test_a_reconcile_waits_for_missing_and_unsettled_days_and_comes_before_backfill() -> None:
    now = at("2026-11-15T12:00")
    gap = days("2026-11-01", "2026-11-14")
    del gap[date(2026, 11, 7)]
    assert described(plan_for(now, gap, backfill_days=16))[:1] == [
        "current 2026-11-07 (Europe/Berlin)"
    ]
    assert "reconcile" not in {w.kind for w in plan_for(now, gap).work}
    whole = days("2026-11-01", "2026-11-14")
    assert [w.kind for w in plan_for(now, whole, backfill_days=16).work] == [
        "reconcile",
        "backfill",
        "backfill",
    ]


def test_there_is_no_reconcile_on_the_first_day_of_the_period() -> None:
    stored = days("2026-10-02", "2026-10-31")
    assert plan_for(at("2026-11-01T12:00"), stored).work == ()
    assert plan_for(at("2026-11-01T12:00"), {}).work[0].kind == "backfill"


def test_a_repair_in_progress_comes_day_by_day_before_reconcile_and_backfill() -> None:
    stored = days("2026-11-01", "2026-11-14")
    now = at("2026-11-15T12:00")
    marks: dict[str, datetime | None] = {
        "repair-next:Europe/Berlin": at("2026-11-03T00:00"),
        "repair-until:Europe/Berlin": at("2026-11-15T00:00"),
    }
    plan = plan_for(now, stored, marks, backfill_days=16)
    assert described(plan) == [
        "repair 2026-11-03 (Europe/Berlin)",
        "reconcile 2026-11-01..2026-11-14 (Europe/Berlin)",
        "backfill 2026-10-31 (Europe/Berlin)",
        "backfill 2026-10-30 (Europe/Berlin)",
    ]
    repair = plan.work[0]
    assert isinstance(repair, DayExport)
    assert keeping.repaired(repair) == ("repair-next:Europe/Berlin", at("2026-11-04T00:00"))
    done = marks | {"repair-next:Europe/Berlin": at("2026-11-15T00:00")}
    assert [w.kind for w in plan_for(now, stored, done, backfill_days=14).work] == ["reconcile"]


def test_a_reconcile_that_differs_sets_the_repair_before_it_says_reconciled() -> None:
    work = Reconcile(BERLIN, date(2026, 11, 1), date(2026, 11, 14))
    now = at("2026-11-15T07:00")
    assert work.marks_when_different(now) == [
        ("repair-next:Europe/Berlin", at("2026-11-01T00:00")),
        ("repair-until:Europe/Berlin", at("2026-11-15T00:00")),
        ("reconciled:Europe/Berlin", now),
    ]
    assert work.mark_when_equal(now) == ("reconciled:Europe/Berlin", now)
    assert (work.start, work.end, work.days) == (
        at("2026-11-01T00:00"),
        at("2026-11-15T00:00"),
        14,
    )


def test_backfill_never_reaches_past_the_apis_12_months_nor_what_the_store_keeps() -> None:
    now = at("2026-11-15T00:30")
    plan = plan_for(now, backfill_days=365)
    oldest = min(work.day for work in plan.work if isinstance(work, DayExport))
    assert oldest == date(2025, 11, 16)  # 2025-11-15 began 30 minutes before "a year ago"
    assert keeping.DayExport("backfill", BERLIN, oldest, True).start > now.replace(year=2025)
    kept = plan_for(now, backfill_days=365, keep_from=date(2026, 8, 1))
    assert min(w.day for w in kept.work if isinstance(w, DayExport)) == date(2026, 8, 1)
    # the current periods are filled even when backfill_days asks for fewer days
    assert plan_for(now, backfill_days=0).missing_current == 14


def test_the_api_window_on_a_leap_day_is_taken_from_the_28th() -> None:
    assert keeping.oldest_exportable(UTC_ZONE, datetime(2028, 2, 29, 12, tzinfo=UTC)) == date(
        2027, 3, 1
    )


UTC_ZONE = ZoneInfo("UTC")


def test_each_zone_is_planned_from_its_earliest_running_period_current_days_first() -> None:
    now = datetime(2026, 11, 18, 12, tzinfo=UTC)  # a Wednesday
    running = [
        periods.current("month", BERLIN, now),
        periods.current("week", BERLIN, now),
        periods.current("week", NEW_YORK, now),
        periods.current("day", NEW_YORK, now),
    ]
    new_york, berlin = keeping.scopes(running)  # by zone name
    assert (berlin.name, berlin.current_from) == ("Europe/Berlin", date(2026, 11, 1))
    assert (new_york.name, new_york.current_from) == ("America/New_York", date(2026, 11, 16))
    plan = keeping.plan(
        [berlin, new_york], now, {}, {}, Settings(settle_after=SIX_HOURS, backfill_days=3)
    )
    kinds = [(w.kind, w.zone.key) for w in plan.work]
    assert kinds[:17] == [("current", "Europe/Berlin")] * 17
    assert kinds[17:19] == [("current", "America/New_York")] * 2
    assert kinds[19:] == [("backfill", "America/New_York")]
    assert plan.missing_current == 19
    assert plan.missing_by_zone == {"Europe/Berlin": 17, "America/New_York": 3}


def test_a_week_that_began_last_month_widens_the_current_days() -> None:
    now = at("2026-12-02T12:00")  # Wednesday; the week began on Monday 30 November
    (scope,) = keeping.scopes(
        [periods.current("month", BERLIN, now), periods.current("week", BERLIN, now)]
    )
    assert scope.current_from == date(2026, 11, 30)


def test_a_day_is_exported_from_local_midnight_to_local_midnight_across_dst() -> None:
    fall_back = DayExport("current", BERLIN, date(2026, 10, 25), settled=True)
    spring = DayExport("current", BERLIN, date(2026, 3, 29), settled=True)
    assert fall_back.end.astimezone(UTC) - fall_back.start.astimezone(UTC) == timedelta(hours=25)
    assert spring.end.astimezone(UTC) - spring.start.astimezone(UTC) == timedelta(hours=23)
    assert keeping.settle_time(BERLIN, date(2026, 10, 24), SIX_HOURS) == datetime(
        2026, 10, 25, 4, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "options",
    [
        {"settle_after": SIX_HOURS, "backfill_days": 366},
        {"settle_after": SIX_HOURS, "backfill_days": -1},
        {"settle_after": -SIX_HOURS, "backfill_days": 1},
    ],
)
def test_settings_out_of_range_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"backfill_days|settle_after"):
        Settings(**options)  # type: ignore[arg-type]


# --- the plan, carried out, ends with a whole history ---------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2026, 1, 1),  # noqa: DTZ001 (hypothesis: naive bounds, UTC values)
        max_value=datetime(2027, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    period=st.sampled_from(periods.PERIOD_NAMES),
    zone=st.sampled_from([BERLIN, NEW_YORK, ZoneInfo("Pacific/Apia"), ZoneInfo("Asia/Kolkata")]),
    backfill_days=st.integers(0, 40),
    settle_hours=st.integers(0, 30),
    already=st.sets(st.integers(1, 60), max_size=20),
    unsettled=st.sets(st.integers(1, 60), max_size=5),
)
def test_doing_the_plan_one_item_at_a_time_ends_with_every_day_stored_once_and_settled(
    *,
    now: datetime,
    period: periods.PeriodName,
    zone: ZoneInfo,
    backfill_days: int,
    settle_hours: int,
    already: set[int],
    unsettled: set[int],
) -> None:
    rules = Settings(settle_after=timedelta(hours=settle_hours), backfill_days=backfill_days)
    (scope,) = keeping.scopes([periods.current(period, zone, now)])
    today = now.astimezone(zone).date()
    stored: dict[date, Day] = {today - timedelta(n): Day(n not in unsettled) for n in already}
    marks: dict[str, datetime | None] = {}
    exported: list[date] = []
    for _ in range(200):
        plan = keeping.plan([scope], now, {scope.name: stored}, marks, rules)
        work = plan.next
        if work is None:
            break
        if isinstance(work, Reconcile):
            marks[scope.marks[0]] = now
            continue
        assert work.day < today  # never the open day
        exported.append(work.day)
        stored[work.day] = Day(work.settled)
    else:
        pytest.fail("the plan never ran out")
    first, last = keeping.window(scope, now, rules)
    wanted = {first + timedelta(n) for n in range((last - first).days + 1)}
    assert wanted <= stored.keys()
    assert plan.current_complete
    assert plan.remaining_days == 0
    # at one `now`, each day is exported once: missing, or stored before it settled
    assert len(exported) == len(set(exported))
    for day in wanted:
        due = keeping.settle_time(zone, day, rules.settle_after)
        if now >= due:
            assert stored[day].settled
        elif day in exported:
            assert not stored[day].settled


# --- compare ---------------------------------------------------------------------------------


def frame(*rows: tuple[str, str | None, int, float]) -> pl.DataFrame:
    data = [
        {"api_key_id": k, "api_key_name": k, "model": m, "requests": r, "total_cost_usd": c}
        for k, m, r, c in rows
    ]
    return pl.DataFrame(data, schema=SCHEMA)


def test_compare_finds_nothing_when_the_totals_agree_up_to_rounding_per_day() -> None:
    stored = frame(("a", "gpt", 10, 1.000001), ("a", None, 3, 0.5), ("b", "gpt", 1, 0.25))
    exported = frame(("b", "gpt", 1, 0.25), ("a", None, 3, 0.5), ("a", "gpt", 10, 1.0))
    difference = keeping.compare(stored, exported, days=3)
    assert difference.none
    assert difference.stored_usd == pytest.approx(1.750001)


def test_compare_sizes_a_difference_in_dollars_requests_keys_and_rows() -> None:
    stored = frame(("a", "gpt", 10, 1.0), ("a", "claude", 5, 2.0), ("b", "gpt", 1, 0.25))
    exported = frame(
        ("a", "gpt", 12, 1.5), ("a", "claude", 5, 2.0), ("c", "gpt", 4, 0.75), ("b", "gpt", 1, 0.25)
    )
    difference = keeping.compare(stored, exported, days=14)
    assert (difference.pairs, difference.keys, difference.requests) == (2, 2, 6)
    assert difference.usd == pytest.approx(1.25)
    assert (difference.stored_usd, difference.exported_usd) == pytest.approx((3.25, 4.5))
    assert difference.describe().startswith("$1.250000 and 6 request(s) over 2 key(s)")
    # a key missing from the export counts as well as one missing from the store
    assert keeping.compare(exported, stored, days=14) == keeping.Difference(
        usd=difference.usd,
        requests=6,
        keys=2,
        pairs=2,
        stored_usd=difference.exported_usd,
        exported_usd=difference.stored_usd,
    )
    assert keeping.compare(frame(), frame(), days=1).none
