"""The detectors in the cycle, end to end: the simulator's Langdock over real sockets, a real
SQLite history the test builds (the workspace's own days, at a tenth of their spend), the
incremental cycle that exports today, and the real slack_sdk delivering to the Slack stand-in.
A day ten times the stored normal is an anomaly alert in its owner's channel, once a day."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from slackstub import TOKEN, SlackStub

from costwatch import cycle, detecting, fetch, periods
from costwatch.config import Config, parse_config
from costwatch.detect import Anomaly
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.metrics import Metrics
from costwatch.simulator import Simulator, Workspace
from costwatch.slack import deliver, sender_from_config
from costwatch.state import NoticeKey, SqliteState

KEY = "ld-DETECT-k3y"
BERLIN = ZoneInfo("Europe/Berlin")
WORKSPACE = Workspace(keys=3, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=6.0)
NOW = datetime(2026, 11, 30, 21, tzinfo=UTC)  # Monday 30 November, 22:00 in Berlin
TODAY = date(2026, 11, 30)


@dataclass
class World:
    sim: Simulator
    client: LangdockClient
    clock: list[datetime]
    state: SqliteState
    slack: SlackStub

    def config(self) -> Config:
        first = WORKSPACE.key_ids()[0][1]
        return parse_config(
            f"""
langdock: {{api_key: {KEY}, base_url: https://api.langdock.example}}
schedule: {{timezone: Europe/Berlin}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: "{self.slack.api_url}"}}
budgets:
  - {{name: every-key, keys: "*", limits: {{cost_usd: 100000}}}}
anomalies: {{metrics: cost_usd}}
unit_cost: {{enabled: false}}
unowned: {{enabled: false, new_keys: false, dormant: false}}
owners:
  - {{keys: ["{first}"], mention: "<!subteam^SOWNER>", channel: "#owners"}}
""",
            env={},
        )

    def store_quiet_history(self, days: int) -> None:
        """The workspace's own closed days before today, at a tenth of their spend."""
        for back in range(days, 0, -1):
            day = TODAY - timedelta(days=back)
            self.clock[0] = NOW
            frame = fetch.fetch_day(self.client, BERLIN, day).usage.frame
            quiet = frame.with_columns(pl.col("total_cost_usd") / 10)
            self.state.put_day("Europe/Berlin", day, quiet, exported_at=NOW, settled=True)

    def cycle(self, now: datetime) -> cycle.Outcome:
        self.clock[0] = now
        deps = cycle.Deps(self.config(), client=self.client, state=self.state)
        return cycle.run_once(deps, now)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = [NOW]
    with (
        Simulator(WORKSPACE, api_key=KEY, clock=lambda: clock[0]) as sim,
        httpx.Client(timeout=10) as http,
        SqliteState.open(tmp_path / "state.db") as state,
        SlackStub() as slack,
    ):
        for channel in ("#ai-spend", "#owners"):
            slack.add_channel(channel)
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        yield World(sim, client, clock, state, slack)


def test_a_day_ten_times_the_stored_normal_is_an_anomaly_in_its_owners_channel_once(
    world: World,
) -> None:
    world.store_quiet_history(35)
    outcome = world.cycle(NOW)
    assert outcome.ok, outcome.error
    found = [f for f in outcome.detected if isinstance(f, Anomaly) and f.model is None]
    assert found, outcome.detected
    names = {name for _, name in WORKSPACE.key_ids()}
    assert {f.api_key_name for f in found} <= names
    for finding in found:
        assert finding.ratio is not None
        assert 5 < finding.ratio < 15  # today so far (22 of 24 hours) against a tenth
        assert finding.basis == "same weekday"
        assert finding.since == TODAY

    config = world.config()
    assert config.slack is not None
    sender = sender_from_config(config.slack, timeout=5.0, retry_interval=0.01)
    report = deliver(world.state, sender, config.slack, now=NOW)
    assert report.sent == len(outcome.outbox_ids)
    owner = WORKSPACE.key_ids()[0][1]
    owned = [f for f in outcome.detected if f.api_key_name == owner]  # type: ignore[union-attr]
    posts = {channel: world.slack.posts(channel) for channel in ("#ai-spend", "#owners")}
    assert len(posts["#owners"]) == len(owned)
    assert all("<!subteam^SOWNER>" in p.text for p in posts["#owners"])
    assert any("x its normal spend today" in p.text for p in posts["#ai-spend"] + posts["#owners"])

    # the next cycle of the same day finds the same and sends nothing again
    again = world.cycle(NOW + timedelta(minutes=15))
    assert again.ok
    assert again.detected == ()
    assert again.outbox_ids == ()
    # each finding is a notice in the ledger (kind, key, metric, day), not a mark
    sent = world.state.notices_sent(detecting.notice(f) for f in outcome.detected)
    assert sent == {
        NoticeKey(f.kind, f.api_key_id, "2026-11-30", model=f.model or "", metric=f.metric)
        for f in found + [f for f in outcome.detected if isinstance(f, Anomaly) and f.model]
    }


def test_a_restarted_process_sends_none_of_todays_findings_again(
    world: World, tmp_path: Path
) -> None:
    world.store_quiet_history(35)
    first = world.cycle(NOW)
    assert first.ok, first.error
    assert first.detected
    with SqliteState.open(tmp_path / "state.db") as restarted:  # nothing of the first in memory
        world.state = restarted
        later = world.cycle(NOW + timedelta(hours=1))
    assert later.ok, later.error
    assert later.detected == ()
    assert later.outbox_ids == ()


def test_without_a_stored_history_nothing_is_judged(world: World) -> None:
    outcome = world.cycle(NOW)
    assert outcome.ok, outcome.error
    assert outcome.detected == ()


# -- spend rate now: the hourly snapshots ------------------------------------------------------

MORNING = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)  # Monday, 10:15 in Berlin
RUNAWAY = WORKSPACE.key_ids()[0][0]  # the owned key (#owners)


def quiet_runaway(frame: pl.DataFrame) -> pl.DataFrame:
    """The runaway key at a tenth of its real spend: its normal before today."""
    cost = pl.col("total_cost_usd")
    return frame.with_columns(
        pl.when(pl.col("api_key_id") == RUNAWAY)
        .then(cost / 10)
        .otherwise(cost)
        .alias(cost.meta.output_name())
    )


def store_rate_history(world: World, days: int) -> None:
    """Closed days and each day's snapshot of 10:00 (its use from midnight to 11:00), as the
    cycles of those days would have left them: every key as the workspace spends, but the
    runaway key at a tenth."""
    world.clock[0] = MORNING
    for back in range(days, 0, -1):
        day = TODAY - timedelta(days=back)
        frame = quiet_runaway(fetch.fetch_day(world.client, BERLIN, day).usage.frame)
        world.state.put_day("Europe/Berlin", day, frame, exported_at=MORNING, settled=True)
        midnight = periods.local_midnight(day, BERLIN)
        by_eleven = fetch.fetch_range(world.client, midnight, midnight + timedelta(hours=11))
        per_key = (
            quiet_runaway(by_eleven.usage.frame)
            .group_by("api_key_id")
            .agg(pl.col("api_key_name").last(), pl.col("requests", "total_cost_usd").sum())
        )
        with world.state.transaction() as transaction:
            transaction.put_snapshot(
                "Europe/Berlin", day, 10, per_key, taken_at=MORNING, keep_from=TODAY - timedelta(28)
            )


def test_a_runaway_key_at_ten_is_a_spend_rate_alert_before_midnight_once_a_day(
    world: World,
) -> None:
    store_rate_history(world, 35)
    outcome = world.cycle(MORNING)
    assert outcome.ok, outcome.error
    (rate,) = outcome.detected  # the runaway key only; its day so far is no anomaly yet
    assert isinstance(rate, Anomaly)
    assert (rate.kind, rate.api_key_id, rate.metric, rate.hour) == (
        "spend_rate",
        RUNAWAY,
        "cost_usd",
        10,
    )
    assert rate.ratio is not None
    assert 5 < rate.ratio < 12  # 10x its normal rate, by 10:15 against normal days by 11:00
    assert rate.basis == "same weekday"

    # today's snapshot of 10:00 is kept: the key's use so far, as the cycle exported it
    with world.state.transaction() as transaction:
        taken = transaction.snapshots("Europe/Berlin", TODAY, TODAY)
    assert taken.taken == {(TODAY, 10)}
    (value,) = taken.frame.filter(pl.col("api_key_id") == RUNAWAY)["total_cost_usd"]
    assert value == pytest.approx(rate.value)

    config = world.config()
    assert config.slack is not None
    sender = sender_from_config(config.slack, timeout=5.0, retry_interval=0.01)
    assert deliver(world.state, sender, config.slack, now=MORNING).sent == 2
    for channel in ("#owners", "#ai-spend"):  # its owner's channel and the default, as alerts
        (post,) = world.slack.posts(channel)
        assert "<!subteam^SOWNER>" in post.text
        assert "its normal spend by 10:00" in post.text
    metrics = Metrics()
    metrics.findings_queued(f.kind for f in outcome.detected)
    assert b'costwatch_findings_total{kind="spend_rate"} 1.0' in metrics.exposition()

    # later in the hour: the snapshot replaced (more spent), the alert not sent again
    later = world.cycle(MORNING + timedelta(minutes=30))
    assert later.ok, later.error
    assert (later.detected, later.outbox_ids) == ((), ())
    with world.state.transaction() as transaction:
        again = transaction.snapshots("Europe/Berlin", TODAY, TODAY)
    assert again.taken == {(TODAY, 10)}
    (more,) = again.frame.filter(pl.col("api_key_id") == RUNAWAY)["total_cost_usd"]
    assert more > value

    # by the evening the day itself is an anomaly, the same news: one alert per key and day
    evening = world.cycle(NOW)
    assert evening.ok, evening.error
    assert [f for f in evening.detected if getattr(f, "api_key_id", None) == RUNAWAY] == []


def test_without_snapshots_of_that_hour_the_spend_rate_says_nothing(world: World) -> None:
    world.store_quiet_history(35)  # closed days, but no cycle ever ran at ten
    outcome = world.cycle(MORNING)
    assert outcome.ok, outcome.error
    assert [f for f in outcome.detected if f.kind == "spend_rate"] == []
    with world.state.transaction() as transaction:  # its own snapshot taken, for the days to come
        assert transaction.snapshots("Europe/Berlin", TODAY, TODAY).taken == {(TODAY, 10)}
