"""The incremental cycle against the simulator over real sockets and a real SQLite file: each
cycle exports only the open day, periods are stored days + today, and the result is exactly
what one export of the whole period says (the simulator's usage is additive over ranges)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwatch import budgets, cycle, fetch, gather, history, periods
from costwatch.config import Config, parse_config
from costwatch.errors import ExportUnavailableError
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

KEY = "ld-HISTORY-k3y"
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WORKSPACE = Workspace(keys=6, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=0.5)


def config_text(*, timezone: str = "Europe/Berlin", budgets: str = "", history: str = "") -> str:
    return f"""\
langdock:
  api_key: {KEY}
  base_url: https://api.langdock.example
schedule:
  timezone: {timezone}
{history}
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: 100000}}
{budgets}"""


@dataclass
class World:
    sim: Simulator
    client: LangdockClient
    clock: list[datetime]
    state: SqliteState
    path: Path

    def run(self, config: Config, now: datetime, **deps: Any) -> cycle.Outcome:
        self.clock[0] = now
        deps.setdefault("state", self.state)
        return cycle.run_once(cycle.Deps(config, client=self.client, **deps), now)

    def exports(self) -> list[dict[str, Any]]:
        """The export requests the simulator has seen, as their JSON bodies."""
        return [
            json.loads(r.body) for r in self.sim.requests if r.path.endswith("/export/api-keys")
        ]

    def store_days(self, zone: ZoneInfo, first: date, last: date, now: datetime) -> None:
        """Put the closed days [first, last] as the keeper would: one export per day."""
        self.clock[0] = now
        for day in history.closed_days(first, last + timedelta(days=1)):
            fetched = fetch.fetch_day(self.client, zone, day)
            self.state.put_day(
                zone.key,
                day,
                fetched.usage.frame,
                exported_at=now,
                settled=True,
                has_tokens=fetched.usage.has_tokens,
            )

    def period_export(self, period: periods.Period, now: datetime) -> pl.DataFrame:
        self.clock[0] = now
        return fetch.fetch_usage(self.client, period, now).usage.frame


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = [datetime(2026, 11, 1, tzinfo=UTC)]
    with (
        Simulator(WORKSPACE, api_key=KEY, clock=lambda: clock[0]) as sim,
        httpx.Client(timeout=10) as http,
        SqliteState.open(tmp_path / "state.db") as state,
    ):
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        yield World(sim, client, clock, state, tmp_path / "state.db")


def assert_same_usage(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """The same rows per key and model: counts exactly, cost to float rounding."""
    order = ["api_key_id", "model"]
    got, expected = got.sort(order), expected.sort(order)
    assert got.select(order).to_dicts() == expected.select(order).to_dicts()
    exact = ["api_key_name", "requests", *[c for c in got.columns if c.endswith("tokens")]]
    assert got.select(exact).to_dicts() == expected.select(exact).to_dicts()
    cost = (got["total_cost_usd"] - expected["total_cost_usd"]).abs().max()
    assert cost is None or float(cost) < 1e-9  # type: ignore[arg-type]


def test_a_steady_cycle_exports_only_the_open_day_and_equals_the_period_export(
    world: World,
) -> None:
    config = parse_config(config_text())
    now = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)  # 10:30 in Berlin, day 28
    world.store_days(BERLIN, date(2026, 11, 1), date(2026, 11, 27), now)
    before = len(world.exports())
    outcome = world.run(config, now)
    assert outcome.ok, outcome.error
    (body,) = world.exports()[before:]  # one export: today, from local midnight
    assert (body["from"]["date"], body["from"]["timezone"]) == (
        "2026-11-28T00:00:00.000Z",
        "Europe/Berlin",
    )
    assert outcome.source.startswith("today's export (")
    assert "+ 27 stored days" in outcome.source
    assert outcome.stored_days == 27
    assert outcome.usage is not None
    month = periods.current("month", BERLIN, now)
    assert_same_usage(outcome.usage.frame, world.period_export(month, now))
    assert (
        outcome.exported_rows
        == outcome.usage.rows_read
        < world.period_export(month, now).height * 2
    )


def test_cycles_over_several_days_store_each_closed_day_once_and_stay_exact(world: World) -> None:
    config = parse_config(config_text())
    start = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 November in Berlin
    for step in range(0, 5 * 24, 5):  # a cycle every 5 hours for five days
        now = start + timedelta(hours=step)
        before = len(world.exports())
        outcome = world.run(config, now)
        assert outcome.ok, outcome.error
        today = now.astimezone(BERLIN).date()
        stored = world.state.stored_days("Europe/Berlin", date(2026, 11, 1), today)
        assert sorted(stored) == history.closed_days(date(2026, 11, 1), today)
        new = len(world.exports()) - before
        just_closed = now - timedelta(hours=5) < periods.local_midnight(today, BERLIN)
        assert new == (2 if just_closed and today.day > 1 else 1)  # yesterday once, then today
        for day, known in stored.items():
            if day == today - timedelta(days=1) and just_closed:
                assert not known.settled  # exported within settle_after of its midnight
        assert outcome.usage is not None
        month = periods.current("month", BERLIN, now)
        assert_same_usage(outcome.usage.frame, world.period_export(month, now))


def test_a_first_start_mid_period_exports_the_period_whole_and_stores_nothing(
    world: World,
) -> None:
    config = parse_config(config_text())
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    outcome = world.run(config, now)
    assert outcome.ok, outcome.error
    assert outcome.source.startswith("period export (history incomplete: 0 of 19 closed days")
    (body,) = world.exports()
    assert body["from"]["date"] == "2026-11-01T00:00:00.000Z"
    assert world.state.stored_days("Europe/Berlin", date(2026, 11, 1), date(2026, 11, 30)) == {}
    assert outcome.stored_days == 0


def test_up_to_max_days_per_cycle_missing_days_are_exported_and_stored_by_the_cycle(
    world: World,
) -> None:
    config = parse_config(config_text(history="history:\n  max_days_per_cycle: 3"))
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    world.store_days(BERLIN, date(2026, 11, 1), date(2026, 11, 9), now)
    for gone in (date(2026, 11, 3), date(2026, 11, 5), date(2026, 11, 9)):
        with world.state.transaction() as transaction:  # a gap, as after a downtime
            transaction._usable().execute(
                "DELETE FROM usage_day WHERE day = ?", ((gone - date(1970, 1, 1)).days,)
            )
    before = len(world.exports())
    outcome = world.run(config, now)
    assert outcome.ok, outcome.error
    assert len(world.exports()) - before == 4  # the three days, then today
    assert "(3 closed days exported and stored)" in outcome.source
    stored = world.state.stored_days("Europe/Berlin", date(2026, 11, 1), date(2026, 11, 9))
    assert len(stored) == 9
    assert stored[date(2026, 11, 5)].settled  # exported days after their settle time
    assert outcome.usage is not None
    assert_same_usage(
        outcome.usage.frame, world.period_export(periods.current("month", BERLIN, now), now)
    )


def test_ranges_of_several_zones_and_lengths_each_equal_their_period_export(world: World) -> None:
    budgets = """\
  - name: weekly-ny
    keys: "*"
    period: week
    timezone: America/New_York
    limits: {cost_usd: 100000}
  - name: quarterly
    keys: "*"
    period: quarter
    limits: {cost_usd: 100000}
  - name: daily-utc
    keys: "*"
    period: day
    timezone: UTC
    limits: {cost_usd: 100000}
"""
    config = parse_config(config_text(budgets=budgets))
    now = datetime(2026, 11, 12, 15, tzinfo=UTC)
    world.store_days(BERLIN, date(2026, 10, 1), date(2026, 11, 11), now)
    world.store_days(NEW_YORK, date(2026, 11, 9), date(2026, 11, 11), now)
    before = len(world.exports())
    outcome = world.run(config, now)
    assert outcome.ok, outcome.error
    bodies = world.exports()[before:]
    assert sorted(b["from"]["timezone"] for b in bodies) == [
        "America/New_York",
        "Europe/Berlin",
        "UTC",
    ]
    assert all(b["from"]["date"].endswith("T00:00:00.000Z") for b in bodies)
    world.clock[0] = now  # the simulator reports usage up to its now, as Langdock does
    gathered = gather.from_store_or_exports(
        fetch.Exports(world.client),
        world.state,
        _ranges(config, now),
        now,
        config.history,
        default="",
        write=False,
    )
    for key, period in _ranges(config, now).items():
        assert_same_usage(gathered.usages[key].frame, world.period_export(period, now))


def _ranges(config: Config, now: datetime) -> dict[str, periods.Period]:
    return budgets.export_ranges(budgets.rules(config, now))


def test_a_dry_run_reads_the_store_and_writes_nothing(world: World) -> None:
    config = parse_config(config_text())
    now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    world.store_days(BERLIN, date(2026, 11, 1), date(2026, 11, 4), now)  # the 5th is missing
    files = [world.path, world.path.with_name("state.db-wal")]
    before = [file.read_bytes() for file in files]
    with SqliteState.open(world.path, write=False) as reader:
        outcome = world.run(config, now, state=reader, dry_run=True)
    assert outcome.ok, outcome.error
    assert "(1 closed day exported, not stored (a dry run))" in outcome.source
    assert [file.read_bytes() for file in files] == before
    assert world.state.stored_days("Europe/Berlin", date(2026, 11, 5), date(2026, 11, 5)) == {}
    assert outcome.usage is not None
    month = periods.current("month", BERLIN, now)
    assert_same_usage(outcome.usage.frame, world.period_export(month, now))


def test_a_day_without_usage_is_stored_as_zero_and_counts_as_stored(tmp_path: Path) -> None:
    clock = [datetime(2026, 11, 3, 12, tzinfo=UTC)]
    with (
        Simulator(Workspace(keys=0), api_key=KEY, clock=lambda: clock[0]) as sim,
        httpx.Client(timeout=10) as http,
        SqliteState.open(tmp_path / "state.db") as state,
    ):
        client = LangdockClient(
            http, base_url=sim.base_url, api_key=KEY, allow_insecure_download=True
        )
        outcome = cycle.run_once(
            cycle.Deps(parse_config(config_text()), client=client, state=state), clock[0]
        )
        assert outcome.ok, outcome.error
        stored = state.stored_days("Europe/Berlin", date(2026, 11, 1), date(2026, 11, 2))
        assert [s.rows for s in stored.values()] == [0, 0]  # 404 No data found: zero, stored
        assert outcome.usage is not None
        assert outcome.usage.frame.height == 0


def test_a_failed_export_fails_the_cycle_evaluates_nothing_and_the_next_one_catches_up(
    world: World,
) -> None:
    config = parse_config(config_text())
    now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    world.store_days(BERLIN, date(2026, 11, 1), date(2026, 11, 1), now)
    world.sim.faults.fail_export(503)  # the export of the 2nd, which the cycle lacks
    outcome = world.run(config, now)
    assert isinstance(outcome.error, ExportUnavailableError)
    assert outcome.findings.height == 0
    assert outcome.plan is None
    assert world.state.export_health().consecutive_failures == 1
    stored = world.state.stored_days("Europe/Berlin", date(2026, 11, 1), date(2026, 11, 2))
    assert sorted(stored) == [date(2026, 11, 1)]
    again = world.run(config, now)
    assert again.ok, again.error
    assert "+ 2 stored days (1 closed day exported and stored)" in again.source
    assert world.state.export_health().consecutive_failures == 0


def test_with_the_history_disabled_the_period_is_exported_whole(world: World) -> None:
    config = parse_config(config_text(history="history:\n  enabled: false"))
    now = datetime(2026, 11, 28, 9, tzinfo=UTC)
    world.store_days(BERLIN, date(2026, 11, 1), date(2026, 11, 27), now)
    before = len(world.exports())
    outcome = world.run(config, now)
    (body,) = world.exports()[before:]
    assert body["from"]["date"] == "2026-11-01T00:00:00.000Z"
    assert outcome.source.startswith("Langdock export (")


# Fall-back and spring-forward months: the 25- and 23-hour days are stored whole.
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]),
    moment=st.datetimes(datetime(2025, 3, 1), datetime(2025, 11, 30)),  # noqa: DTZ001 - made aware below
    period=st.sampled_from(["week", "month", "quarter"]),
)
def test_stored_days_plus_today_equal_the_period_export_in_any_zone(
    world: World, zone: str, moment: datetime, period: str
) -> None:
    now = moment.replace(tzinfo=UTC)
    tz = ZoneInfo(zone)
    budgets = f"""\
  - name: ranged
    keys: "*"
    period: {period}
    timezone: {zone}
    limits: {{cost_usd: 100000}}
"""
    config = parse_config(config_text(timezone=zone, budgets=budgets))
    ranged = periods.current(period, tz, now)  # type: ignore[arg-type]
    today = now.astimezone(tz).date()
    stored = world.state.stored_days(zone, ranged.first_day, today)
    for day in history.closed_days(ranged.first_day, today):
        if day not in stored:
            world.store_days(tz, day, day, now)
    world.clock[0] = now  # the simulator reports usage up to its now, as Langdock does
    gathered = gather.from_store_or_exports(
        fetch.Exports(world.client),
        world.state,
        _ranges(config, now),
        now,
        config.history,
        default="",
        write=False,
    )
    for key, each in _ranges(config, now).items():
        assert_same_usage(gathered.usages[key].frame, world.period_export(each, now))


@pytest.mark.parametrize(
    ("zone", "now"),
    [
        ("Europe/Berlin", datetime(2025, 10, 28, 10, tzinfo=UTC)),  # 26 Oct had 25 hours
        ("Europe/Berlin", datetime(2025, 3, 31, 10, tzinfo=UTC)),  # 30 Mar had 23 hours
        ("America/Havana", datetime(2024, 11, 5, 12, tzinfo=UTC)),  # midnight twice on 3 Nov
    ],
    ids=["berlin-fall-back", "berlin-spring-forward", "havana-midnight-twice"],
)
def test_a_month_across_a_dst_change_is_its_stored_days_plus_today(
    world: World, zone: str, now: datetime
) -> None:
    tz = ZoneInfo(zone)
    month = periods.current("month", tz, now)
    world.store_days(tz, month.first_day, now.astimezone(tz).date() - timedelta(days=1), now)
    before = len(world.exports())
    outcome = world.run(parse_config(config_text(timezone=zone)), now)
    assert outcome.ok, outcome.error
    assert len(world.exports()) - before == 1
    assert outcome.usage is not None
    assert_same_usage(outcome.usage.frame, world.period_export(month, now))
