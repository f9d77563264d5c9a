"""What a backtest's replay found (`backtest.replay`), as records: each outbox row a replayed
cycle queued (`Fired`) and the whole replay (`Replay`). Pure: the command's output
(`cli/backtest_output.py`) reads these without the replay's IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from costwatch import notices
from costwatch.alerts import Alert
from costwatch.notices import Notice

__all__ = ["Fired", "Replay"]


@dataclass(frozen=True)
class Fired:
    """One outbox row a replayed cycle queued: when, to which channel (None: the webhook's or
    no slack section), and the notice (a budget's `Alert` or a detector's finding)."""

    at: datetime
    channel: str | None
    notice: Notice

    @property
    def kind(self) -> str:
        return notices.kind(self.notice)


@dataclass(frozen=True)
class Replay:
    """What the replay of `points` would have sent."""

    points: tuple[datetime, ...]
    fired: tuple[Fired, ...]
    silenced: tuple[tuple[datetime, Alert], ...] = ()  # due, but an active silence held them
    unevaluated: tuple[str, ...] = ()  # limits the history cannot evaluate, described once
    evaluated: int = 0  # points at which some limit was evaluated (had a finding)

    @property
    def alerts(self) -> tuple[Fired, ...]:
        """The budgets' alerts (not the detectors' findings, nor operational notices)."""
        return tuple(f for f in self.fired if isinstance(f.notice, Alert))

    @property
    def findings(self) -> tuple[Fired, ...]:
        """The detectors' findings."""
        return tuple(f for f in self.fired if not isinstance(f.notice, Alert))
