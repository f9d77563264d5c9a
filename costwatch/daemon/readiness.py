"""What `/readyz` answers: ready while the last export succeeded within 3 intervals (real time,
on the caller's monotonic clock), and otherwise why not, naming the last failure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Readiness"]


@dataclass
class Readiness:
    """The last export's outcome, as the daemon's cycles report it."""

    monotonic: Callable[[], float]
    last_success: float | None = None  # `monotonic()` of the last successful export
    last_failure: str | None = None

    def succeeded(self) -> None:
        self.last_success = self.monotonic()
        self.last_failure = None

    def failed(self, description: str) -> None:
        self.last_failure = description

    def answer(self, interval: timedelta) -> tuple[bool, str]:
        """Ready while the last export succeeded within 3 intervals."""
        limit = 3 * interval.total_seconds()
        last = self.last_success
        failure = f"; last failure: {self.last_failure}" if self.last_failure else ""
        if last is None:
            return False, f"no successful export yet{failure}"
        age = self.monotonic() - last
        if age > limit:
            return False, f"last successful export {_ago(age)} ago (over 3 intervals){failure}"
        return True, f"last successful export {_ago(age)} ago"


def _ago(age: float) -> str:
    seconds = int(age)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
