"""Slack delivery rounds as the tests run them: outbox rows made the real way
(`SqliteState.commit` with `Alert` payloads), the real slack_sdk sender against the local
stand-in (`slackstub.py`), and one delivery round on a fake clock. Shared by the delivery,
answers, faults and damaged-rows tests."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakes import FakeClock
from slackstub import TOKEN, SlackStub

from costwatch import slack
from costwatch.alerts import Alert
from costwatch.config import SlackConfig
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.slack import DeliveryReport, Sender, sender_from_config
from costwatch.slack.render import Rendered
from costwatch.state import Message, SqliteState

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=15)
DEFAULT = "#ai-spend"
MENTIONS = ("<!subteam^S0123ABCD>", "<@U0123ABCD>")


class Recorder:
    """A Sender that notes (fake time, channel) of each post, then posts for real."""

    def __init__(self, sender: Sender, clock: FakeClock) -> None:
        self.sender = sender
        self.clock = clock
        self.posts: list[tuple[float, str | None]] = []

    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        self.posts.append((self.clock.now, channel))
        self.sender.post(channel, message, deadline)


def token_config(stub: SlackStub, **options: Any) -> SlackConfig:
    values = {"token": TOKEN, "channel": DEFAULT, "api_url": stub.api_url, **options}
    return SlackConfig.model_validate(values)


def webhook_config(stub: SlackStub, url: str | None = None, **options: Any) -> SlackConfig:
    return SlackConfig.model_validate({"webhook_url": url or stub.webhook_url, **options})


def sender(config: SlackConfig, timeout: float = 5.0) -> Sender:
    return sender_from_config(config, timeout=timeout, retry_interval=0.01)


def make_alert(budget: str, channel: str | None = None, **changes: Any) -> Alert:
    alert = Alert(
        budget=budget,
        scope="key",
        api_key_id=f"key-{budget}",
        api_key_name=f"{budget}-prod",
        model=None,
        metric="cost_usd",
        threshold=80.0,
        kind="actual",
        severity="warning",
        used=820.0,
        limit=1000.0,
        ratio=0.82,
        projected=None,
        forecast_ratio=None,
        overrun_at=None,
        period="month:2026-11-01@Europe/Berlin",
        channel=channel,
        mention=(),
    )
    return dataclasses.replace(alert, **changes)


def enqueue(state: SqliteState, *alerts: Alert, channel: str | None = DEFAULT) -> list[int]:
    """Outbox rows as the cycle writes them: the budget's channel, else `channel`."""
    messages = [
        Message(
            kind="alert",
            channel=alert.channel or channel,
            payload=json.loads(json.dumps(dataclasses.asdict(alert), default=str)),
        )
        for alert in alerts
    ]
    return state.commit(now=NOW, messages=messages)


def run(
    state: SqliteState,
    config: SlackConfig,
    clock: FakeClock,
    *,
    via: Sender | None = None,
    now: datetime = NOW,
    reported: set[tuple[str, str]] | None = None,
) -> DeliveryReport:
    return slack.deliver(
        state,
        via or sender(config),
        config,
        now,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        reported=set() if reported is None else reported,
    )


def texts_posted(stub: SlackStub, channel: str | None = None) -> list[str]:
    """What a person reads in each accepted post (text and blocks)."""
    return [r.text for r in stub.posts(channel)]


def chat_posts(stub: SlackStub) -> list[int]:
    """The status of every chat.postMessage request the stand-in saw, in order."""
    return [r.status for r in stub.requests if r.path == "/api/chat.postMessage"]


def slack_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "costwatch.slack"]
