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

from costwatch import cycle, detecting, fetch
from costwatch.config import Config, parse_config
from costwatch.detect import Anomaly
from costwatch.langdock import LangdockClient, RetryPolicy
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
