"""Export health: consecutive failed exports, and when to say so. Pure.

After `alert_after` consecutive failed cycles one operational alert says exports are failing
(since when, and when data was last good); the first success after that says they recovered.
A failed cycle never evaluates budgets: stale data must not read as current.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

OperationalKind = Literal["exports_failing", "exports_recovered"]


@dataclass(frozen=True)
class ExportHealth:
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_success: datetime | None = None
    last_reason: str | None = None
    alerted: bool = False  # the "failing" alert went out for the current run of failures


@dataclass(frozen=True)
class Operational:
    """An operational alert about costwatch itself."""

    kind: OperationalKind
    at: datetime
    failures: int
    failing_since: datetime | None
    last_success: datetime | None
    reason: str | None


def succeeded(health: ExportHealth, now: datetime) -> tuple[ExportHealth, Operational | None]:
    recovered = None
    if health.alerted:
        recovered = Operational(
            kind="exports_recovered",
            at=now,
            failures=health.consecutive_failures,
            failing_since=health.failing_since,
            last_success=health.last_success,
            reason=health.last_reason,
        )
    return ExportHealth(last_success=now), recovered


def failed(
    health: ExportHealth, reason: str, now: datetime, alert_after: int
) -> tuple[ExportHealth, Operational | None]:
    health = replace(
        health,
        consecutive_failures=health.consecutive_failures + 1,
        failing_since=health.failing_since or now,
        last_reason=reason,
    )
    if health.alerted or health.consecutive_failures < alert_after:
        return health, None
    alert = Operational(
        kind="exports_failing",
        at=now,
        failures=health.consecutive_failures,
        failing_since=health.failing_since,
        last_success=health.last_success,
        reason=reason,
    )
    return replace(health, alerted=True), alert
