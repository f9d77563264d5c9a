"""history.py, the pure part of the incremental cycle: which closed days a cycle's ranges need
per zone, which are missing, when it exports periods whole, when a day is settled, and how
frames add up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from costwatch import history, periods, usage

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 12, 15, tzinfo=UTC)  # Thursday 12 November


def ranges() -> dict[str, periods.Period]:
    return {
        "month-berlin": periods.current("month", BERLIN, NOW),
        "week-berlin": periods.current("week", BERLIN, NOW),
        "week-ny": periods.current("week", NEW_YORK, NOW),
        "day-utc": periods.current("day", ZoneInfo("UTC"), NOW),
    }


def test_each_zone_needs_the_closed_days_of_its_longest_range() -> None:
    assert history.needed(ranges(), NOW) == {
        "Europe/Berlin": (date(2026, 11, 1), date(2026, 11, 11)),
        "America/New_York": (date(2026, 11, 9), date(2026, 11, 11)),
        "UTC": (date(2026, 11, 12), date(2026, 11, 11)),  # began today: none
    }


def test_a_zone_with_its_days_stored_is_read_from_the_store() -> None:
    stored = {"Europe/Berlin": history.closed_days(date(2026, 11, 1), date(2026, 11, 12))}
    plans = {p.zone.key: p for p in history.plan(ranges(), NOW, stored, 2)}
    berlin = plans["Europe/Berlin"]
    assert (berlin.missing, berlin.whole, berlin.stored) == ((), False, 11)
    assert berlin.ranges == ("month-berlin", "week-berlin")
    assert berlin.since == datetime(2026, 11, 12, tzinfo=BERLIN)
    assert plans["America/New_York"].missing == (
        date(2026, 11, 9),
        date(2026, 11, 10),
        date(2026, 11, 11),
    )
    assert plans["America/New_York"].whole  # 3 missing > 2
    assert not plans["UTC"].whole
    assert plans["UTC"].missing == ()


@pytest.mark.parametrize(("max_days", "whole"), [(0, True), (1, True), (2, False), (5, False)])
def test_up_to_max_days_per_cycle_missing_days_the_cycle_fills_itself(
    max_days: int, whole: bool
) -> None:
    have = [
        d for d in history.closed_days(date(2026, 11, 1), date(2026, 11, 12)) if d.day not in (3, 7)
    ]
    (berlin, *_) = history.plan(ranges(), NOW, {"Europe/Berlin": have}, max_days)
    assert berlin.missing == (date(2026, 11, 3), date(2026, 11, 7))
    assert berlin.whole is whole


def test_a_day_is_settled_when_exported_settle_after_past_its_end() -> None:
    day, six = date(2026, 10, 25), timedelta(hours=6)  # 25 hours long in Berlin
    end = datetime(2026, 10, 25, 23, tzinfo=UTC)  # midnight after it, in Berlin (CET)
    assert not history.is_settled(day, BERLIN, end + six - timedelta(seconds=1), six)
    assert history.is_settled(day, BERLIN, end + six, six)


def frame(rows: list[tuple[str, str | None, str, int, float, int | None]]) -> pl.DataFrame:
    data = [
        {
            "api_key_id": k,
            "api_key_name": n,
            "model": m,
            "requests": r,
            "total_cost_usd": c,
            "sum_prompt_tokens": t,
        }
        for k, n, m, r, c, t in rows
    ]
    full = [{column: row.get(column) for column in usage.SCHEMA} for row in data]
    return pl.DataFrame(full, schema=usage.SCHEMA, orient="row")


def test_frames_add_up_per_key_and_model_with_the_last_name_and_null_tokens_kept() -> None:
    stored = frame([("k1", "old", "a", 10, 1.0, None), ("k2", "two", "a", 1, 0.5, 5)])
    today = frame([("k1", "new", "a", 2, 0.25, None), ("k1", None, "b", 1, 0.1, 3)])
    summed = history.combine([stored, pl.DataFrame(schema=usage.SCHEMA), today])
    rows = {(r["api_key_id"], r["model"]): r for r in summed.to_dicts()}
    assert summed.schema == usage.SCHEMA
    assert rows["k1", "a"]["requests"] == 12
    assert rows["k1", "a"]["total_cost_usd"] == pytest.approx(1.25)
    assert rows["k1", "a"]["sum_prompt_tokens"] is None  # no frame reported it
    assert rows["k1", "b"]["sum_prompt_tokens"] == 3
    assert {r["api_key_name"] for r in summed.to_dicts() if r["api_key_id"] == "k1"} == {"new"}
    assert rows["k2", "a"]["api_key_name"] == "two"
    assert history.combine([]).schema == usage.SCHEMA
    assert history.combine([today]).equals(today)
