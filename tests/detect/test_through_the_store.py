"""The detectors on a real history: days written to a real SQLite state with `put_day`, read
back with `usage_by_day` and `stored_days` as a cycle would, found by `detect`, rendered and
posted through the real slack_sdk to the Slack stand-in, each to its owner's channel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl
import pytest
from slackstub import TOKEN, SlackStub

from costwatch.config import Config, parse_config
from costwatch.detect import Anomaly, KeyEvent, detect
from costwatch.slack import sender_from_config
from costwatch.slack.findings import render_finding
from costwatch.state import SqliteState
from costwatch.usage import SCHEMA

ZONE = "Europe/Berlin"
TODAY = date(2026, 11, 30)  # a Monday
FIRST = TODAY - timedelta(days=35)  # more than unowned.dormant_days: a new key can be told


def config(stub: SlackStub) -> Config:
    return parse_config(
        f"""
langdock: {{api_key: x}}
schedule: {{timezone: {ZONE}}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: "{stub.api_url}"}}
budgets:
  - {{name: support, keys: "support-*", limits: {{cost_usd: 1000}}}}
owners:
  - {{keys: "support-*", mention: "<!subteam^SSUP>", channel: "#support-eng"}}
unowned: {{enabled: true}}
""",
        env={},
    )


def rows(*items: tuple[str, str, int, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [(f"id-{k}", k, m, r, c, None, None, None, None, None) for k, m, r, c in items],
        schema=SCHEMA,
        orient="row",
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    with SqliteState.open(tmp_path / "state.db") as opened:
        day = FIRST
        while day < TODAY:
            steady = rows(("support-bot", "gpt-4o", 100, 6.0), ("support-bot", "mini", 100, 4.0))
            empty = day == TODAY - timedelta(days=3)  # stored, with no use at all
            opened.put_day(
                ZONE, day, steady.head(0) if empty else steady, exported_at=_at(day), settled=True
            )
            day += timedelta(days=1)
        today = rows(
            ("support-bot", "gpt-4o", 1200, 76.0),
            ("support-bot", "mini", 100, 4.0),
            ("stray", "gpt-4o", 30, 3.0),
        )
        opened.put_day(ZONE, TODAY, today, exported_at=_at(TODAY), settled=False)
        yield opened


def _at(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(6), tzinfo=UTC)


def test_a_stored_history_gives_the_findings_and_slack_takes_each_in_its_channel(
    state: SqliteState,
) -> None:
    with SlackStub() as stub:
        stub.add_channel("#ai-spend")
        stub.add_channel("#support-eng")
        cfg = config(stub)
        stored = state.stored_days(ZONE, FIRST, TODAY - timedelta(days=1))
        usage = state.usage_by_day(ZONE, FIRST, TODAY)
        found = detect(cfg, usage, TODAY, stored)
        kinds = [(type(f).__name__, f.kind) for f in found]
        assert kinds == [
            ("Anomaly", "anomaly"),  # support-bot's spend
            ("Anomaly", "anomaly"),  # and its requests
            ("KeyEvent", "unowned"),
            ("KeyEvent", "new_key"),
        ]
        spend = found[0]
        assert isinstance(spend, Anomaly)
        assert (spend.value, spend.normal, spend.ratio) == (80.0, 10.0, 8.0)
        assert (spend.driver_model, spend.since, spend.basis) == ("gpt-4o", TODAY, "same weekday")
        assert spend.channel == "#support-eng"
        stray = found[2]
        assert isinstance(stray, KeyEvent)
        assert stray.channel is None

        assert cfg.slack is not None
        sender = sender_from_config(cfg.slack, timeout=5.0, retry_interval=0.01)
        for finding in found:
            channel = getattr(finding, "channel", None) or cfg.slack.channel
            sender.post(channel, render_finding(finding))
        support = stub.posts("#support-eng")
        assert [p.accepted for p in support] == [True, True]
        assert "support-bot at 8.0x its normal spend today" in support[0].text
        assert "Driven by gpt-4o" in support[0].text
        assert "<!subteam^SSUP>" in support[0].text
        general = stub.posts("#ai-spend")
        assert "stray spent $3 today and no budget names it" in general[0].text
        assert "New key stray spent $3 today" in general[1].text


def test_a_day_missing_from_the_store_is_not_read_as_no_use(state: SqliteState) -> None:
    with SlackStub() as stub:
        cfg = config(stub)
        stored = state.stored_days(ZONE, FIRST, TODAY - timedelta(days=1))
        # only the last three days are held: too few for a baseline, too few for a "new" key
        recent = [day for day in stored if day >= TODAY - timedelta(days=3)]
        usage = state.usage_by_day(ZONE, FIRST, TODAY)
        found = detect(cfg, usage, TODAY, recent)
        assert [f.kind for f in found] == ["unowned"]
