"""Deadlines and the stop signal: every wait in costwatch ends at one or the other.

- `StopSignal` is set once, when the daemon begins to shut down. Setting it wakes every wait
  on it and runs the abort hooks registered with `on_stop` (an HTTP exchange shuts its socket
  down), so a request blocked on a silent peer ends at once rather than at its timeout.
- `Deadline` is how long one piece of work may still take: a moment on the monotonic clock (or
  none) and the stop signal it answers to. `wait(seconds)` sleeps, but raises `Stopping` as
  soon as the signal is set, and at once when the wait could not end before the deadline (there
  is no point starting it); `check()` raises when either has come; `remaining()` caps timeouts.
- `Stopping` is not an error: the work was cut short by a shutdown (or by the time a shutdown
  leaves), nothing of it was recorded, and whoever catches it says so at INFO.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from costwatch.errors import Stopping

__all__ = ["MIN_TIMEOUT", "UNBOUNDED", "Deadline", "StopSignal", "Stopping", "free_within"]

MIN_TIMEOUT = 0.01  # seconds: the shortest timeout handed to a socket


class StopSignal:
    """Set once; wakes every wait on it and runs the abort hooks registered with `on_stop`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.RLock()  # a signal handler may set it while the thread holds it
        self._hooks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def set(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            hooks = list(self._hooks.values())
        for hook in hooks:
            hook()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float | None) -> bool:
        """Sleep up to `seconds` (None: until set); True when the signal was set."""
        return self._event.wait(seconds)

    @contextmanager
    def on_stop(self, hook: Callable[[], None]) -> Iterator[None]:
        """Run `hook` when the signal is set while inside the block (at once if it already is).

        Hooks run in the thread that sets the signal: they must be quick and must not raise.
        """
        with self._lock:
            key = next(self._ids)
            self._hooks[key] = hook
            already = self._event.is_set()
        try:
            if already:
                hook()
            yield
        finally:
            with self._lock:
                self._hooks.pop(key, None)


@dataclass(frozen=True)
class Deadline:
    """How long some work may still take: until `at` (time.monotonic(); None: no limit) and
    not past the moment `stop` is set."""

    at: float | None = None
    stop: StopSignal = field(default_factory=StopSignal)

    @classmethod
    def after(cls, seconds: float, stop: StopSignal | None = None) -> Deadline:
        return cls(time.monotonic() + max(seconds, 0.0), stop or StopSignal())

    def within(self, seconds: float) -> Deadline:
        """This deadline, or `seconds` from now if that comes first."""
        at = time.monotonic() + max(seconds, 0.0)
        return Deadline(at if self.at is None else min(self.at, at), self.stop)

    def remaining(self) -> float:
        """Seconds left (math.inf without a limit); 0 once stopped or past."""
        if self.stop.is_set():
            return 0.0
        if self.at is None:
            return math.inf
        return max(self.at - time.monotonic(), 0.0)

    def cap(self, seconds: float) -> float:
        """A timeout of `seconds`, or less if the deadline comes first; never 0 (a socket
        would take that for non-blocking). The stop does not shorten it: the stop ends waits,
        and no request starts after it (`check()`)."""
        if self.at is not None:
            seconds = min(seconds, self.at - time.monotonic())
        return max(seconds, MIN_TIMEOUT)

    def check(self) -> None:
        """Raise `Stopping` when the signal is set or the time is up."""
        if self.stop.is_set():
            raise Stopping("the daemon is shutting down")
        if self.at is not None and time.monotonic() >= self.at:
            raise Stopping("the time left for shutting down is up")

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`; raise `Stopping` when the signal is set meanwhile, and at once when
        the wait would end after the deadline."""
        self.check()
        if seconds > self.remaining():
            raise Stopping(f"no time left for a wait of {seconds:.1f}s")
        if self.stop.wait(max(seconds, 0.0)):
            raise Stopping("the daemon is shutting down")


UNBOUNDED = Deadline()  # no limit, and a stop signal nobody sets: a plain sleep


def free_within(lock: threading.Lock, deadline: Deadline) -> bool:
    """Whether `lock` is free (nobody runs what it guards) before `deadline`."""
    if not lock.acquire(timeout=deadline.remaining()):
        return False
    lock.release()
    return True
