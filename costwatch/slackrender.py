"""Slack messages for people: Block Kit blocks plus a plain-text fallback. Pure.

(First cut: a header and one section per message. The full rendering replaces it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from costwatch.state import OutboxItem


@dataclass(frozen=True)
class Rendered:
    """One Slack message: `blocks` for chat.postMessage / webhooks, `text` for notifications."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def escape(text: str) -> str:
    """Slack's three control characters, escaped as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(item: OutboxItem, *, now: datetime) -> Rendered:
    """The message for one outbox row (an alert or an operational notice)."""
    del now
    text = escape(f"costwatch {item.kind}: {item.payload.get('budget', '')}")
    return Rendered(text=text, blocks=[_section(text)])


def render_digest(items: Sequence[OutboxItem], *, now: datetime) -> Rendered:
    """One message standing for several alerts to the same channel."""
    del now
    text = f"costwatch: {len(items)} budget alerts"
    return Rendered(text=text, blocks=[_section(text)])


def render_test(channel: str, *, now: datetime) -> Rendered:
    """What `costwatch test-slack` sends."""
    text = f"costwatch test message for {escape(channel)} at {now:%Y-%m-%d %H:%M %Z}"
    return Rendered(text=text, blocks=[_section(text)])


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
