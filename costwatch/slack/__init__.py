"""Slack: alerts and notices rendered for people, and the outbox delivered until Slack took it.

render.py    Block Kit messages and their plain-text fallback (pure)
blocks.py    blocks that keep names inert and messages inside Slack's limits (pure)
findings.py  the detectors' findings as messages: `render_finding` (pure)
answers.py   what Slack's answers mean: `DeliveryError`, its scope and remedy
http.py      the HTTP under slack_sdk: no redirect followed, no answer crashes a round
senders.py   `Sender`: the Web API (bot token) or an incoming webhook; `test_channels`
terminal.py  the demo's sender: messages printed as text
deliver.py   rounds over the outbox: pacing, digests, re-routing, never marked sent early
"""

from costwatch.errors import DeliveryError
from costwatch.slack.deliver import DeliveryReport, deliver
from costwatch.slack.render import Rendered, as_terminal_text, render, render_digest, render_test
from costwatch.slack.senders import (
    RETRY_AFTER_CAP,
    ChannelCheck,
    Sender,
    retry_after_wait,
    sender_from_config,
    test_channels,
)
from costwatch.slack.terminal import TerminalSender

__all__ = [
    "RETRY_AFTER_CAP",
    "ChannelCheck",
    "DeliveryError",
    "DeliveryReport",
    "Rendered",
    "Sender",
    "TerminalSender",
    "as_terminal_text",
    "deliver",
    "render",
    "render_digest",
    "render_test",
    "retry_after_wait",
    "sender_from_config",
    "test_channels",
]
