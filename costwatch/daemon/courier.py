"""The daemon's Slack delivery: a round after each cycle and every `slack.retry_every`, in a
thread of its own, and one last round on the way out with what the grace leaves.

A round that waits (pacing, Slack's Retry-After) never holds a cycle up, and every wait ends
when the stop signal is set. One round at a time (`lock`): the final flush waits for the round
in flight, and the delivery thread starts none once stopped. Errors Slack gave that retrying
cannot fix are logged once per error and channel for the life of the process (`_reported`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from costwatch import slack
from costwatch.config import SlackConfig
from costwatch.deadline import Deadline, StopSignal
from costwatch.metrics import Metrics
from costwatch.state import Store

__all__ = ["Courier"]

log = logging.getLogger("costwatch.daemon")

FLUSH_SLACK_SECONDS = 0.25  # past the flush's deadline, for a post that ends right at it


class Courier:
    """Delivers the outbox for the daemon; `slack` and `sender` follow a reload."""

    def __init__(
        self,
        *,
        state: Store,
        metrics: Metrics,
        stop: StopSignal,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
        slack: SlackConfig | None,
        sender: slack.Sender | None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._monotonic = monotonic
        self.slack = slack
        self.sender = sender
        self._leading = leading  # only the leader delivers (a standby's rounds do nothing)
        self.lock = threading.Lock()  # one round at a time
        self._now = threading.Event()  # a cycle asks the delivery thread for a round
        self._reported: set[tuple[str, str]] = set()  # Slack errors logged, for the process life

    def ask(self) -> None:
        """A round soon (after a cycle), not only every `retry_every`."""
        self._now.set()

    def loop(self) -> None:
        """After each cycle and every `slack.retry_every`, a delivery round, until stopped."""
        with self._stop.on_stop(self._now.set):
            while not self._stop.is_set():
                every = self.slack.retry_every.total_seconds() if self.slack else 60.0
                self._now.wait(max(1.0, every))
                self._now.clear()
                self.run_round()

    def run_round(self) -> None:
        """One round of delivering due outbox rows; never raises."""
        if self.sender is None or self._stop.is_set() or not self._leading():
            return
        with self.lock:
            if self._stop.is_set():  # stopped meanwhile: the final flush has the outbox
                return
            try:
                self._deliver(self._clock(), Deadline(stop=self._stop))
            except Exception:
                log.exception("delivery failed")

    def flush(self, deadline: Deadline) -> bool:
        """Deliver what is pending once more on the way out, within `deadline`. In a daemon
        thread, so a post that outlasts its timeout is left behind; False if it was."""

        def flush() -> None:
            try:
                with self.lock:
                    self._deliver(self._clock(), deadline)
            except Exception:
                log.exception("final delivery failed; the rows stay in the outbox")

        thread = threading.Thread(target=flush, name="costwatch-flush", daemon=True)
        thread.start()
        thread.join(deadline.remaining() + FLUSH_SLACK_SECONDS)
        return not thread.is_alive()

    def _deliver(self, now: datetime, deadline: Deadline) -> None:
        config, sender = self.slack, self.sender
        if config is None or sender is None or not self._leading():
            return
        if not self._state.pending(now, limit=1):
            return
        report = slack.deliver(
            self._state,
            sender,
            config,
            now,
            deadline=deadline,
            sleep=deadline.wait,
            monotonic=self._monotonic,
            reported=self._reported,
        )
        self._metrics.delivered(report)
        if report.sent or report.failed or report.interrupted:  # failures were logged already
            log.debug(
                "delivered %d alert(s) in %d message(s); %d failed, %d pending%s",
                report.sent,
                report.messages,
                report.failed,
                report.pending,
                "; the rest waits (interrupted by shutdown)" if report.interrupted else "",
            )
