"""How long to wait between attempts: exponential backoff, full jitter, Retry-After, a budget.

`RetryPolicy` says how hard to try; a `RetryBudget` counts the attempts and the time spent on
one operation under that policy and answers "how long until the next attempt, if any"; a
`Retrier` runs an operation under a fresh budget. An operation asks for another attempt by
raising `Retryable`; when the budget is spent the `Retrier` raises `RetriesExhausted`. The clock,
the sleep and the jitter source belong to the caller, so tests run without waiting.

The budget bounds the attempts too, not only the waits between them: each attempt is handed
the budget, whose `ends_at()` is the deadline for everything the attempt does, so one
operation never takes longer than `max_elapsed_seconds`. A retry is only worth starting with
time left, so a wait that would use up the rest of the budget is not made. Anything else an
attempt or a sleep raises (`Stopping` on shutdown) goes straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from costwatch.errors import Retryable

__all__ = ["Retrier", "RetriesExhausted", "RetryBudget", "RetryPolicy"]

T = TypeVar("T")

_MAX_EXPONENT = 62  # 2**62 seconds is past any cap; keeps the float conversion finite


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one export range before giving up."""

    max_attempts: int = 6
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_elapsed_seconds: float = 300.0  # bounded total time for one range's retries

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("initial_backoff_seconds", "max_backoff_seconds", "max_elapsed_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def backoff_ceiling(self, failures: int) -> float:
        """The longest wait after the `failures`-th failure: initial * 2^(n-1), capped."""
        exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
        return float(min(self.max_backoff_seconds, self.initial_backoff_seconds * 2**exponent))


class RetryBudget:
    """Attempts and elapsed time of one operation; decides whether and how long to wait."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        monotonic: Callable[[], float],
        jitter: Callable[[], float],
    ) -> None:
        self._policy = policy
        self._monotonic = monotonic
        self._jitter = jitter
        self._started = monotonic()
        self.attempts = 0

    def begin_attempt(self) -> None:
        self.attempts += 1

    def elapsed(self) -> float:
        return max(self._monotonic() - self._started, 0.0)

    def ends_at(self) -> float:
        """When the budget runs out, on the caller's monotonic clock: no attempt runs past it."""
        return self._started + self._policy.max_elapsed_seconds

    def remaining(self) -> float:
        return max(self.ends_at() - self._monotonic(), 0.0)

    def next_wait(self, retry_after: float | None = None) -> float | None:
        """Seconds to sleep before the next attempt, or None when the budget is spent.

        The wait is full jitter over the backoff ceiling; a server's Retry-After raises it (never
        retry sooner than asked). The next attempt needs time of its own: a wait that would
        reach the end of the budget (a server asking for that long, or a backoff that long) is
        not worth making, and the answer is None.
        """
        if self.attempts >= self._policy.max_attempts:
            return None
        remaining = self.remaining()
        share = min(max(self._jitter(), 0.0), 1.0)
        wait = share * self._policy.backoff_ceiling(self.attempts)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait if wait < remaining else None


class RetriesExhausted(Exception):
    """The budget is spent; `last` is the final failure."""

    def __init__(self, last: Retryable, attempts: int, elapsed: float) -> None:
        super().__init__(f"{last.description} (after {attempts} attempt(s) over {elapsed:.1f}s)")
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed


class Retrier:
    """Runs operations under a RetryPolicy with the caller's clock, sleep and jitter."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float],
        jitter: Callable[[], float],
    ) -> None:
        self.policy = policy
        self._sleep = sleep
        self._monotonic = monotonic
        self._jitter = jitter

    def run(self, operation: Callable[[RetryBudget], T], *, what: str, log: logging.Logger) -> T:
        """`operation(budget)`, again after each `Retryable` until it succeeds or the budget is
        spent; the operation keeps within `budget.ends_at()`.

        Each retry is logged at WARNING on `log` with `what`, the failure and the wait.
        """
        budget = RetryBudget(self.policy, monotonic=self._monotonic, jitter=self._jitter)
        while True:
            budget.begin_attempt()
            try:
                return operation(budget)
            except Retryable as failure:
                wait = budget.next_wait(failure.retry_after)
                if wait is None:
                    raise RetriesExhausted(failure, budget.attempts, budget.elapsed()) from failure
                log.warning(
                    "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                    what,
                    budget.attempts,
                    self.policy.max_attempts,
                    failure.description,
                    wait,
                )
                self._sleep(wait)
