"""Small test doubles for the clock: time is an argument (STYLE.md 1), so tests hand in these."""

from __future__ import annotations


class FakeClock:
    """`monotonic` and `sleep` for code that waits: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
