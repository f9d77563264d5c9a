"""Scheduled spend reports end to end: a history the test builds (tests/histories.py) in a real
state (SQLite, and PostgreSQL), the simulator's Langdock over loopback for the cycle's own
export of today, the real cycle queueing the report with its record in one transaction, and
the real slack_sdk delivering it to the Slack stand-in. Known totals; due at its `at`; once
per period, across a restart; nothing for a period without use; a period with a day missing
waits for it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pgserver
import pytest
from histories import frame, steady
from slackstub import TOKEN, SlackStub

from costwatch import cycle
from costwatch.config import Config, parse_config
from costwatch.keeper import settings_for
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.reports import Report
from costwatch.simulator import Simulator, Workspace
from costwatch.slack import deliver, sender_from_config
from costwatch.state import NoticeKey, PostgresState, SqliteState, Store

KEY = "ld-SCHEDULE-k3y"
BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "Europe/Berlin"
MONDAY = datetime(2026, 11, 30, 9, 30, tzinfo=BERLIN)  # the report of Nov 23-29 is due at 09:00
LAST_WEEK = [date(2026, 11, 23) + timedelta(days=n) for n in range(7)]
WEEK_BEFORE = [day - timedelta(days=7) for day in LAST_WEEK]
HISTORY = [*WEEK_BEFORE, *LAST_WEEK]
WORKSPACE = Workspace(keys=2, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=1.0)
WEEKLY = NoticeKey("report", "weekly", "week:2026-11-23@Europe/Berlin")


def rows() -> list[tuple[date, str, str, float, int]]:
    """alpha $10 a day on m1, and $30 a day in the last week; beta $5 on m2 every day."""
    built = steady("alpha", "m1", 10.0, 100, WEEK_BEFORE)
    built += steady("alpha", "m1", 30.0, 300, LAST_WEEK)
    return built + steady("beta", "m2", 5.0, 50, HISTORY)


@dataclass
class World:
    sim: Simulator
    client: LangdockClient
    clock: list[datetime]
    open_store: Callable[[], AbstractContextManager[Store]]
    slack: SlackStub

    def config(self) -> Config:
        return parse_config(
            f"""
langdock: {{api_key: {KEY}, base_url: https://api.langdock.example}}
schedule: {{timezone: {ZONE}}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: "{self.slack.api_url}"}}
budgets:
  - {{name: roomy, keys: "*", limits: {{cost_usd: 1000000}}}}
anomalies: {{enabled: false}}
unit_cost: {{enabled: false}}
unowned: {{enabled: false, new_keys: false, dormant: false}}
reports:
  - {{name: weekly, every: week, at: "Mon 09:00", channel: "#reports", top: 1,
     mention: ["<!subteam^SREPORT>"]}}
""",
            env={},
        )

    def store_days(self, days: list[date], *, used: bool = True) -> None:
        built = rows() if used else []
        with self.open_store() as state:
            for day in days:
                own = frame(r for r in built if r[0] == day).drop("day")
                state.put_day(ZONE, day, own, exported_at=MONDAY, settled=True)

    def cycle(self, now: datetime) -> cycle.Outcome:
        self.clock[0] = now
        with self.open_store() as state:  # a process of its own each time: a restart
            outcome = cycle.run_once(cycle.Deps(self.config(), self.client, state=state), now)
            assert outcome.ok, outcome.error
            config = self.config()
            assert config.slack is not None
            sender = sender_from_config(config.slack, timeout=5.0, retry_interval=0.01)
            deliver(state, sender, config.slack, now=now)
            assert state.pending_count() == 0
        return outcome

    def recorded(self) -> bool:
        with self.open_store() as state:
            return WEEKLY in state.notices_sent([WEEKLY])


def sqlite_store(tmp_path: Path) -> Iterator[Callable[[], AbstractContextManager[Store]]]:
    yield lambda: SqliteState.open(tmp_path / "state.db")


def postgres_store(tmp_path: Path) -> Iterator[Callable[[], AbstractContextManager[Store]]]:
    with pgserver.database() as url:
        yield lambda: PostgresState.open(url, where="test database")


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    clock = [MONDAY]
    stores = sqlite_store if request.param == "sqlite" else postgres_store
    with (
        Simulator(WORKSPACE, api_key=KEY, clock=lambda: clock[0]) as sim,
        httpx.Client(timeout=10) as http,
        SlackStub() as slack,
    ):
        for channel in ("#ai-spend", "#reports"):
            slack.add_channel(channel)
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        for opened in stores(tmp_path):
            yield World(sim, client, clock, opened, slack)


def test_the_weekly_report_goes_out_once_when_due_with_its_known_numbers(world: World) -> None:
    world.store_days(HISTORY)
    early = world.cycle(MONDAY - timedelta(minutes=45))  # 08:45: not due yet
    assert early.reports == ()
    assert world.slack.posts("#reports") == []

    outcome = world.cycle(MONDAY)
    (report,) = outcome.reports
    assert isinstance(report, Report)
    assert report.span.key == "week:2026-11-23@Europe/Berlin"
    assert report.cost_usd == pytest.approx(7 * 30 + 7 * 5)  # 245
    assert report.requests == 7 * 300 + 7 * 50
    assert report.previous_cost_usd == pytest.approx(7 * 10 + 7 * 5)  # 105
    assert report.change_usd == pytest.approx(140.0)
    assert [(k.name, round(k.cost_usd, 6)) for k in report.top_keys] == [("alpha", 210.0)]
    assert [(m.name, round(m.cost_usd, 6)) for m in report.top_models] == [("m1", 210.0)]
    (post,) = world.slack.posts("#reports")
    assert "weekly spend: $245, +133% on the week before (Nov 23 to Nov 29)" in post.text
    assert "<!subteam^SREPORT>" in post.text
    assert world.slack.posts("#ai-spend") == []
    assert world.recorded()

    # later cycles of the week, each a fresh process on the same state: never again
    for later in (timedelta(minutes=15), timedelta(hours=5), timedelta(days=3)):
        assert world.cycle(MONDAY + later).reports == ()
    assert len(world.slack.posts("#reports")) == 1


def test_a_period_with_a_day_not_stored_waits_for_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.store_days([day for day in HISTORY if day != date(2026, 11, 27)])
    with caplog.at_level(logging.INFO, logger="costwatch.reporting"):
        assert world.cycle(MONDAY).reports == ()
    assert "report 'weekly' of week:2026-11-23@Europe/Berlin waits: 1 day(s)" in caplog.text
    assert "2026-11-27" in caplog.text
    assert not world.recorded()
    assert world.slack.posts() == []

    world.store_days([date(2026, 11, 27)])  # the keeper stored it
    (report,) = world.cycle(MONDAY + timedelta(minutes=15)).reports
    assert report.cost_usd == pytest.approx(245.0)
    assert len(world.slack.posts("#reports")) == 1


def test_a_week_without_use_sends_no_report_and_is_not_judged_again(world: World) -> None:
    world.store_days(WEEK_BEFORE)
    world.store_days(LAST_WEEK, used=False)  # stored whole, without a row
    assert world.cycle(MONDAY).reports == ()
    assert world.slack.posts() == []
    assert world.recorded()  # judged once: nothing is rebuilt every cycle
    assert world.cycle(MONDAY + timedelta(minutes=15)).reports == ()
    assert world.slack.posts() == []


def test_the_keeper_keeps_the_days_the_reports_read_stored(world: World) -> None:
    # the week before last (from Nov 16) and the detectors' 30 days before Nov 23: Oct 24
    assert (
        settings_for(world.config(), MONDAY).backfill_days
        == (date(2026, 11, 30) - date(2026, 10, 24)).days
    )
