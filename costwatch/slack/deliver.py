"""Delivering the outbox: rounds over the rows due now, until Slack accepted each.

- **Deadlines**: every wait of a round (pacing, and inside each post) goes through the round's
  `Deadline` and ends when the daemon stops; no post starts after that, and the round ends with
  `interrupted` set and the rows it did not reach still due. The daemon's last round on
  shutdown gets what is left of the grace.
- **Pacing**: at most one post per `min_interval_seconds` per channel (Slack's one message a
  second a channel); channels are served in turn, so one busy channel does not hold up the rest.
- **Digests**: more than `digest_after` alert rows for one channel in one round become one
  message; every row of it is marked sent when Slack accepts it.
- **Never dropped**: a row is marked sent right after Slack accepts its message, and otherwise
  marked failed with the error and `retry_at = now + retry_every`, so it is tried again in a
  later round, across restarts. At least once: a duplicate only if Slack posted but its answer
  was lost (a timeout), or the process died before `mark_sent`.
- **Errors retrying cannot fix** (a wrong token, an unknown or archived channel, the app not in
  the channel, a dead webhook) are logged once per error and channel by whoever owns the
  `reported` set (the daemon: for the life of the process), with the remedy in plain words, and
  counted in the report. With a token, a channel error re-routes the message to the default
  channel with a line saying where it should have gone. What an error rules out is its
  `scope` (`answers.py`).
- **Rows that cannot be rendered** are refused one by one before the round is planned, so one
  of them never holds up a digest; rows damaged in storage never get here (`Store.pending`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from costwatch import notices
from costwatch.config import SlackConfig
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.errors import DeliveryError, Stopping
from costwatch.notices import Notice
from costwatch.slack import blocks as slackblocks
from costwatch.slack.render import Rendered, render, render_digest
from costwatch.slack.senders import Sender
from costwatch.state import OutboxItem, Store

__all__ = ["DeliveryReport", "deliver"]

log = logging.getLogger("costwatch.slack")


@dataclass
class DeliveryReport:
    sent: int = 0  # outbox rows Slack accepted (re-routed ones included)
    messages: int = 0  # messages Slack accepted (a digest is one)
    failed: int = 0  # rows left in the outbox for a later round
    rerouted: int = 0  # rows delivered to the default channel instead of their own
    digests: int = 0
    permanent_errors: dict[str, int] = field(default_factory=dict)  # code -> posts refused
    transient_errors: dict[str, int] = field(default_factory=dict)  # code -> posts failed
    pending: int = 0  # unsent rows in the outbox after this round
    interrupted: bool = False  # the deadline ended the round; the rows not reached stay due


@dataclass(frozen=True)
class _Send:
    channel: str | None  # where the rows belong (None: the webhook's own channel)
    items: tuple[OutboxItem, ...]
    digest: bool


def deliver(
    state: Store,
    sender: Sender,
    config: SlackConfig,
    now: datetime,
    *,
    deadline: Deadline = UNBOUNDED,
    sleep: Callable[[float], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    reported: set[tuple[str, str]] | None = None,
) -> DeliveryReport:
    """Send the outbox rows due at `now` within `deadline`; see the module docstring. `sleep`
    paces posts (default: `deadline.wait`). `reported` remembers which (error, channel) were
    already logged: the caller keeps it across rounds (by default, this round's own)."""
    once = set() if reported is None else reported
    round_ = _Round(state, sender, config, now, sleep or deadline.wait, monotonic, once, deadline)
    renderable = [item for item in state.pending(now) if round_.renders(item)]
    for send in _plan(renderable, config):
        try:
            round_.send(send)
        except Stopping:  # the rows of this send and the rest were not tried: still due
            round_.report.interrupted = True
            break
    round_.report.pending = state.pending_count()
    return round_.report


def _plan(items: Sequence[OutboxItem], config: SlackConfig) -> list[_Send]:
    """Per channel: a digest for many alerts, else one message a row; channels take turns."""
    groups: dict[str | None, list[OutboxItem]] = {}
    for item in items:
        groups.setdefault(_channel(item, config), []).append(item)
    queues = []
    for channel, rows in groups.items():
        alerts = [row for row in rows if row.kind == "alert"]
        digest = len(alerts) > config.digest_after
        sends = [_Send(channel, tuple(alerts), True)] if digest else []
        sends += [
            _Send(channel, (row,), False) for row in rows if not digest or row.kind != "alert"
        ]
        queues.append(sorted(sends, key=lambda send: send.items[0].id))
    turns = itertools.zip_longest(*queues)
    return [send for turn in turns for send in turn if send is not None]


def _channel(item: OutboxItem, config: SlackConfig) -> str | None:
    """Where a row belongs (None: the webhook's own channel)."""
    return (item.channel or config.channel) if config.mode == "token" else None


@dataclass
class _Round:
    """One pass over the due rows: pacing, re-routing and what each failure rules out."""

    state: Store
    sender: Sender
    config: SlackConfig
    now: datetime
    sleep: Callable[[float], None]
    monotonic: Callable[[], float]
    reported: set[tuple[str, str]]
    deadline: Deadline = UNBOUNDED
    report: DeliveryReport = field(default_factory=DeliveryReport)
    last_post: dict[str | None, float] = field(default_factory=dict)
    rerouted: dict[str | None, DeliveryError] = field(default_factory=dict)  # why, by channel
    blocked: dict[str | None, DeliveryError] = field(default_factory=dict)  # not this round
    stopped: DeliveryError | None = None  # nothing more this round
    notices: dict[int, Notice] = field(default_factory=dict)  # what each due row holds, by id

    def renders(self, item: OutboxItem) -> bool:
        """Whether the row holds a notice that renders on its own; if not, it is refused now,
        alone, so that it holds up no digest and no other row."""
        try:
            notice = notices.read(item.kind, item.payload, written_at=item.created_at)
            render(notice, now=self.now)
        except Exception:
            self._unrenderable(_Send(_channel(item, self.config), (item,), False))
            return False
        self.notices[item.id] = notice
        return True

    def send(self, send: _Send) -> None:
        target = self.config.channel if send.channel in self.rerouted else send.channel
        skip = self.stopped or self.blocked.get(target)
        if skip is not None:
            self._fail(send, skip)
            return
        try:
            message = self._render(send)
        except Exception:
            self._unrenderable(send)
            return
        if target != send.channel:
            message = _with_note(message, send.channel, self.rerouted[send.channel])
        try:
            self._post(target, message)
        except DeliveryError as error:
            self._failed(send, target, error)
            return
        self.state.mark_sent([item.id for item in send.items], self.now)
        self.report.messages += 1
        self.report.sent += len(send.items)
        self.report.digests += int(send.digest)
        self.report.rerouted += len(send.items) if target != send.channel else 0

    def _render(self, send: _Send) -> Rendered:
        read = [self.notices[item.id] for item in send.items]
        return render_digest(read, now=self.now) if send.digest else render(read[0], now=self.now)

    def _unrenderable(self, send: _Send) -> None:
        log.exception("cannot render outbox row %s; it stays in the outbox", send.items[0].id)
        self._refused(_render_failed(send.channel), send)

    def _post(self, channel: str | None, message: Rendered) -> None:
        last = self.last_post.get(channel)
        if last is not None:
            wait = last + self.config.min_interval_seconds - self.monotonic()
            if wait > 0:
                self.sleep(wait)
        self.deadline.check()  # no post starts once the daemon stops
        try:
            self.sender.post(channel, message, self.deadline)
        finally:
            self.last_post[channel] = self.monotonic()

    def _failed(self, send: _Send, target: str | None, error: DeliveryError) -> None:
        default = self.config.channel
        if error.scope == "channel" and self.config.mode == "token" and target != default:
            self._count(error, f"re-routing its alerts to {default}")
            self.rerouted[send.channel] = error
            self.send(send)
        elif error.scope == "workspace":
            self.stopped = error
            self._refused(error, send)
        elif error.scope == "message":
            self._refused(error, send)
        else:
            self.blocked[target] = error
            self._refused(error, send)

    def _refused(self, error: DeliveryError, send: _Send) -> None:
        if error.permanent:
            self._count(error, "its alerts stay in the outbox")
        else:
            errors = self.report.transient_errors
            errors[error.code] = errors.get(error.code, 0) + 1
            log.warning("Slack delivery to %s failed: %s", _where(error.channel), error)
        self._fail(send, error)

    def _count(self, error: DeliveryError, outcome: str) -> None:
        errors = self.report.permanent_errors
        errors[error.code] = errors.get(error.code, 0) + 1
        key = (error.code, error.channel or "")
        if key not in self.reported:
            self.reported.add(key)
            log.error("Slack refused a post to %s: %s; %s", _where(error.channel), error, outcome)

    def _fail(self, send: _Send, error: DeliveryError) -> None:
        retry_at = self.now + self.config.retry_every
        for item in send.items:
            self.state.mark_failed(item.id, str(error), self.now, retry_at)
        self.report.failed += len(send.items)


def _render_failed(channel: str | None) -> DeliveryError:
    remedy = "costwatch cannot render this outbox row: a bug, please report it"
    return DeliveryError("render_failed", remedy, scope="message", channel=channel)


def _with_note(message: Rendered, channel: str | None, error: DeliveryError) -> Rendered:
    """The message with a first line saying where it belongs and why it is here instead."""
    note = f"Meant for {channel}, posted here: {error}"
    context = slackblocks.context([slackblocks.plain_text(slackblocks.plain(note))])
    blocks = [context, *message.blocks][: slackblocks.MAX_BLOCKS] if message.blocks else []
    return Rendered(text=f"{slackblocks.mrkdwn(note)}\n{message.text}", blocks=blocks)


def _where(channel: str | None) -> str:
    return channel or "the webhook's channel"
