"""health: export failures say so once after N in a row, and recovery says so once after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwatch import health
from costwatch.health import ExportHealth, Operational

T0 = datetime(2026, 11, 10, tzinfo=UTC)
EVERY = timedelta(minutes=15)


def run(outcomes: str, alert_after: int, start: ExportHealth | None = None) -> list[str]:
    """Feed "S"/"F" cycles 15 minutes apart; returns "-", "failing" or "recovered" per cycle."""
    state = start or ExportHealth()
    said = []
    for index, outcome in enumerate(outcomes):
        now = T0 + index * EVERY
        if outcome == "S":
            state, operational = health.succeeded(state, now)
        else:
            state, operational = health.failed(state, "timeout", now, alert_after)
        said.append("-" if operational is None else operational.kind.removeprefix("exports_"))
    return said


@pytest.mark.parametrize(
    ("outcomes", "alert_after", "said"),
    [
        ("SFFF", 3, "- - - failing"),
        ("SFFFFFF", 3, "- - - failing - - -"),
        ("SFFFS", 3, "- - - failing recovered"),
        ("SFFFSS", 3, "- - - failing recovered -"),
        ("SFFSFFS", 3, "- - - - - - -"),  # recovered before the third failure: nothing
        ("SFFFSFFFS", 3, "- - - failing recovered - - failing recovered"),
        ("FFF", 3, "- - failing"),  # failing from the first cycle, never a good export
        ("SFS", 1, "- failing recovered"),
        ("SFFFFS", 5, "- - - - - -"),
    ],
)
def test_failing_is_said_once_after_n_in_a_row_and_recovered_once_after(
    outcomes: str, alert_after: int, said: str
) -> None:
    assert run(outcomes, alert_after) == said.split()


def test_the_failing_alert_says_since_when_and_when_data_was_last_good() -> None:
    state, _ = health.succeeded(ExportHealth(), T0)
    state, first = health.failed(state, "timeout", T0 + EVERY, 3)
    state, second = health.failed(state, "http_503", T0 + 2 * EVERY, 3)
    assert first is None
    assert second is None
    state, failing = health.failed(state, "http_500", T0 + 3 * EVERY, 3)
    assert failing == Operational(
        kind="exports_failing",
        at=T0 + 3 * EVERY,
        failures=3,
        failing_since=T0 + EVERY,
        last_success=T0,
        reason="http_500",
    )
    state, _ = health.failed(state, "timeout", T0 + 4 * EVERY, 3)
    state, recovered = health.succeeded(state, T0 + 5 * EVERY)
    assert recovered == Operational(
        kind="exports_recovered",
        at=T0 + 5 * EVERY,
        failures=4,
        failing_since=T0 + EVERY,
        last_success=T0,
        reason="timeout",
    )
    assert state == ExportHealth(last_success=T0 + 5 * EVERY)


def test_a_failure_keeps_the_last_good_time_and_counts_on() -> None:
    state, _ = health.succeeded(ExportHealth(), T0)
    state, _ = health.failed(state, "timeout", T0 + EVERY, 3)
    state, _ = health.failed(state, "dns", T0 + 2 * EVERY, 3)
    assert state == ExportHealth(
        consecutive_failures=2,
        failing_since=T0 + EVERY,
        last_success=T0,
        last_reason="dns",
        alerted=False,
    )


@given(outcomes=st.text(alphabet="SF", max_size=40), alert_after=st.integers(1, 5))
def test_each_run_of_n_failures_says_failing_once_and_recovered_once_after_it(
    outcomes: str, alert_after: int
) -> None:
    said = run(outcomes, alert_after)
    runs = [len(run_) for run_ in outcomes.split("S")]
    long_runs = sum(1 for length in runs if length >= alert_after)
    closed = sum(1 for length in runs[:-1] if length >= alert_after)  # followed by a success
    assert said.count("failing") == long_runs
    assert said.count("recovered") == closed
    # "failing" lands on the N-th failure of its run; "recovered" on the success that ends it.
    expected = []
    streak = 0
    for outcome in outcomes:
        streak = streak + 1 if outcome == "F" else streak
        if outcome == "F":
            expected.append("failing" if streak == alert_after else "-")
        else:
            expected.append("recovered" if streak >= alert_after else "-")
            streak = 0
    assert said == expected
