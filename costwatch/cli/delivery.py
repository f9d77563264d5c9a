"""Slack delivery at the end of `costwatch check`, so that a cron job can replace the daemon.

`check` delivers what its cycle planned and every row that was already waiting, in one round of
`slack.deliver` with the configured sender, exactly as a daemon's round does (pacing, digests,
re-routing, never marking a row sent before Slack accepted it). What does not go out stays in
the outbox with its attempts and error, and the next `check` (or daemon) sends it.

The whole delivery has a deadline (`--delivery-timeout`), because a cron job must never hang:

- no post starts after the deadline, and a pacing or Retry-After wait that would end after it
  ends the round (`costwatch.deadline`: the round's `Deadline`);
- each post's HTTP timeout is at most the time the delivery has;
- a post still in flight at the deadline (slack_sdk waiting out a `Retry-After`, say) is
  abandoned: delivery runs in a worker thread and `check` stops waiting for it. If Slack
  accepted that post, the row is sent again next time: the at-least-once window of
  docs/reliability.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from costwatch import slack
from costwatch.cli.output import DeliverySummary
from costwatch.config import SlackConfig
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.slack.render import Rendered
from costwatch.state import Store

__all__ = ["POST_TIMEOUT", "deliver"]

log = logging.getLogger(__name__)

POST_TIMEOUT = 10.0  # seconds per HTTP request to Slack, as the daemon's sender
_ABANDON_AFTER = 1.0  # seconds past the deadline before an in-flight post is left behind

SenderFactory = Callable[[SlackConfig, float], slack.Sender]


def _sender(config: SlackConfig, timeout: float) -> slack.Sender:
    return slack.sender_from_config(config, timeout=timeout)


@dataclass
class _Counting:
    """A sender that counts the posts Slack accepted (for a round abandoned in flight)."""

    sender: slack.Sender
    accepted: int = 0

    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        self.sender.post(channel, message, deadline)
        self.accepted += 1


@dataclass
class _Outcome:
    report: slack.DeliveryReport | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def deliver(
    state: Store,
    config: SlackConfig,
    now: datetime,
    *,
    timeout: timedelta,
    sender_factory: SenderFactory = _sender,
) -> DeliverySummary:
    """One delivery round of the outbox rows due at `now` (all new ones, and failed ones whose
    `slack.retry_every` has passed), finished or abandoned within `timeout`."""
    seconds = timeout.total_seconds()
    deadline = Deadline.after(seconds)
    before = state.pending_count()
    sender = _Counting(sender_factory(config, POST_TIMEOUT))
    outcome = _Outcome()

    def round_() -> None:
        try:
            outcome.report = slack.deliver(state, sender, config, now, deadline=deadline)
        except BaseException as error:  # handed to the caller's thread
            outcome.error = error
        finally:
            outcome.done.set()

    worker = threading.Thread(target=round_, name="costwatch-check-delivery", daemon=True)
    worker.start()
    finished = outcome.done.wait(deadline.remaining() + _ABANDON_AFTER)
    if outcome.error is not None:
        raise outcome.error
    report = outcome.report
    note = f"stopped by the delivery timeout ({seconds:g}s)"
    if finished and report is not None:
        return DeliverySummary(
            attempted=True,
            sent=report.sent,
            messages=report.messages,
            failed=report.failed,
            pending=report.pending,
            errors={**report.permanent_errors, **report.transient_errors},
            timed_out=report.interrupted,
            note=note if report.interrupted else None,
        )
    # Abandoned while a post was in flight.
    pending = state.pending_count()
    return DeliverySummary(
        attempted=True,
        sent=max(0, before - pending),
        messages=sender.accepted,
        pending=pending,
        timed_out=True,
        note=note,
    )
