"""The history's keeper (`costwatch.keeper`) over real sockets and real SQLite files: the real
export client against the simulator (whose late usage keeps arriving after midnight), a real
state file, the planner's work done step by step on a clock the test moves."""

from __future__ import annotations

import logging
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from loopback import Background
from prometheus_client import CollectorRegistry

from costwatch import cycle, langdock
from costwatch.config import Config, parse_config
from costwatch.deadline import StopSignal
from costwatch.errors import ExportError, Stopping
from costwatch.keeper import Keeper
from costwatch.metrics.history import HistoryMetrics
from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

BERLIN = ZoneInfo("Europe/Berlin")
KEY = "sim-keeper-key"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def berlin(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def config_for(sim: Simulator, tmp_path: Path) -> Config:
    return parse_config(config_text(sim, tmp_path))


def config_text(sim: Simulator, tmp_path: Path) -> str:
    return f"""\
langdock:
  base_url: {sim.base_url}
  api_key: {KEY}
  allow_insecure_download: true
  timeout_seconds: 5
  max_attempts: 2
  retry_max_elapsed_seconds: 1
schedule:
  timezone: Europe/Berlin
state:
  path: {tmp_path / "state.db"}
history:
  settle_after: 6h
  backfill_days: 8
  pace: 1s
defaults:
  period: month
budgets:
  - name: all
    keys: "*"
    limits: {{cost_usd: 1000000}}
"""


class Rig:
    """A keeper over a simulator and a state file, on one clock the test moves."""

    def __init__(self, workspace: Workspace, tmp_path: Path, now: datetime) -> None:
        self.clock = Clock(now)
        self.sim = Simulator(workspace, api_key=KEY, clock=self.clock).start()
        self.config = config_for(self.sim, tmp_path)
        self.state = SqliteState.open(tmp_path / "state.db")
        self.registry = CollectorRegistry()
        self.stop = StopSignal()
        self.keeper = Keeper(
            state=self.state,
            connect=lambda deadline: langdock.connect(
                self.config.sole_langdock(), deadline=deadline
            ),
            stop=self.stop,
            clock=self.clock,
            metrics=HistoryMetrics(self.registry),
        )

    def close(self) -> None:
        self.state.close()
        self.sim.stop()

    def run(self, limit: int = 100) -> list[str]:
        """Steps until there is nothing to do; what each did."""
        done: list[str] = []
        for _ in range(limit):
            step = self.keeper.step(self.config)
            if step is None:
                return done
            done.append(step.work.describe())
        raise AssertionError(f"still working after {limit} steps: {done[-5:]}")

    def stored(self, day: date) -> dict[tuple[str, str], tuple[int, int]]:
        frame = self.state.usage_between("Europe/Berlin", day, day)
        return {
            (row["api_key_id"], row["model"]): (row["requests"], round(row["total_cost_usd"] * 1e6))
            for row in frame.iter_rows(named=True)
        }

    def truth(self, day: date) -> dict[tuple[str, str], tuple[int, int]]:
        """What happened on `day` (Berlin), late usage included."""
        start, end = local_midnight(day, BERLIN), local_midnight(day + timedelta(days=1), BERLIN)
        return {
            (row.api_key_id, row.model): (row.requests, round(row.total_cost_usd * 1e6))
            for row in self.sim.workspace.usage(start, end)
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    workspace, now = request.param
    made = Rig(workspace, tmp_path, now)
    try:
        yield made
    finally:
        made.close()


def day(text: str) -> date:
    return date.fromisoformat(text)


def days(first: str, last: str) -> list[date]:
    start, end = day(first), day(last)
    return [start + timedelta(n) for n in range((end - start).days + 1)]


STEADY = Workspace(keys=6)
LATE = Workspace(keys=6, late_share=0.3, late_by=timedelta(hours=3))
LATER = Workspace(keys=6, late_share=0.3, late_by=timedelta(hours=8))


@pytest.mark.parametrize("rig", [(STEADY, berlin("2026-11-05T10:00"))], indirect=True)
def test_the_keeper_fills_the_month_then_backfills_newest_first_then_reconciles(
    rig: Rig,
) -> None:
    done = rig.run()
    assert done == [
        *(
            f"current {d.isoformat()} (Europe/Berlin)"
            for d in reversed(days("2026-11-01", "2026-11-04"))
        ),
        "reconcile 2026-11-01..2026-11-04 (Europe/Berlin)",
        *(
            f"backfill {d.isoformat()} (Europe/Berlin)"
            for d in reversed(days("2026-10-28", "2026-10-31"))
        ),
    ]
    stored = rig.state.stored_days("Europe/Berlin", day("2026-10-01"), day("2026-11-30"))
    assert sorted(stored) == days("2026-10-28", "2026-11-04")
    assert all(known.settled for known in stored.values())
    for each in stored:
        assert rig.stored(each) == rig.truth(each) != {}
    assert (
        rig.metric("costwatch_history_days_stored", workspace="default", zone="Europe/Berlin") == 8
    )
    assert (
        rig.metric(
            "costwatch_history_backfill_remaining_days", workspace="default", zone="Europe/Berlin"
        )
        == 0
    )
    assert rig.metric("costwatch_history_exports_total", kind="current") == 4
    assert rig.metric("costwatch_history_exports_total", kind="backfill") == 4
    assert rig.metric("costwatch_history_exports_total", kind="reconcile") == 1
    assert (
        rig.metric(
            "costwatch_history_reconcile_difference_usd", workspace="default", zone="Europe/Berlin"
        )
        == 0
    )
    # a second keeper on the same file has nothing to do: the store says what is done
    assert rig.run() == []
    assert rig.sim.exports_made() == 9


@pytest.mark.parametrize("rig", [(LATE, berlin("2026-11-05T00:10"))], indirect=True)
def test_a_day_exported_right_after_midnight_is_settled_later_and_then_is_what_happened(
    rig: Rig,
) -> None:
    rig.run()
    yesterday = day("2026-11-04")
    early = rig.state.stored_days("Europe/Berlin", yesterday, yesterday)[yesterday]
    assert not early.settled
    short = rig.stored(yesterday)
    truth = rig.truth(yesterday)
    assert sum(cost for _, cost in short.values()) < sum(cost for _, cost in truth.values())
    assert rig.run() == []  # nothing to do before the settle time (06:00)

    rig.clock.now = berlin("2026-11-05T06:30")
    assert rig.run() == [
        "settle 2026-11-04 (Europe/Berlin)",
        "reconcile 2026-11-01..2026-11-04 (Europe/Berlin)",
    ]
    assert rig.stored(yesterday) == truth
    settled = rig.state.stored_days("Europe/Berlin", yesterday, yesterday)[yesterday]
    assert settled.settled
    assert settled.exported_at == rig.clock.now
    assert (
        rig.metric(
            "costwatch_history_reconcile_differences_total",
            workspace="default",
            zone="Europe/Berlin",
        )
        == 0
    )


@pytest.mark.parametrize("rig", [(LATER, berlin("2026-11-05T06:30"))], indirect=True)
def test_usage_later_than_the_settle_time_is_found_by_the_next_reconcile_and_repaired(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.run()  # the 4th is settled at 06:30, but the last 1.5 hours of its late usage are missing
    early = rig.stored(day("2026-11-04"))
    truth = rig.truth(day("2026-11-04"))
    assert early != truth
    short = sum(abs(truth[pair][1] - early.get(pair, (0, 0))[1]) for pair in truth) / 1e6
    assert (
        rig.metric(
            "costwatch_history_reconcile_difference_usd", workspace="default", zone="Europe/Berlin"
        )
        == 0
    )

    rig.clock.now = berlin("2026-11-06T09:00")  # all of the 4th has arrived, and of the 5th
    with caplog.at_level(logging.INFO, logger="costwatch.keeper"):
        done = rig.run()
    assert done == [
        "current 2026-11-05 (Europe/Berlin)",
        "reconcile 2026-11-01..2026-11-05 (Europe/Berlin)",
        *(f"repair {d.isoformat()} (Europe/Berlin)" for d in days("2026-11-01", "2026-11-05")),
    ]
    for each in days("2026-10-28", "2026-11-05"):
        assert rig.stored(each) == rig.truth(each)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "2026-11-01..2026-11-05 (Europe/Berlin) differ from one export of them" in (
        warning.getMessage()
    )
    assert "the 5 day(s) are exported again one by one" in warning.getMessage()
    assert (
        rig.metric(
            "costwatch_history_reconcile_differences_total",
            workspace="default",
            zone="Europe/Berlin",
        )
        == 1
    )
    size = rig.metric(
        "costwatch_history_reconcile_difference_usd", workspace="default", zone="Europe/Berlin"
    )
    assert size == pytest.approx(short)
    # the next day's reconcile agrees
    rig.clock.now = berlin("2026-11-07T09:00")
    assert rig.run()[-1] == "reconcile 2026-11-01..2026-11-06 (Europe/Berlin)"
    assert (
        rig.metric(
            "costwatch_history_reconcile_difference_usd", workspace="default", zone="Europe/Berlin"
        )
        == 0
    )


@pytest.mark.parametrize("rig", [(STEADY, berlin("2026-11-20T10:00"))], indirect=True)
def test_once_the_keeper_has_stored_the_months_days_a_cycle_evaluates_from_the_store(
    rig: Rig,
) -> None:
    def totals(outcome: cycle.Outcome) -> dict[tuple[str, str], tuple[int, int]]:
        assert outcome.usage is not None
        return {
            (row["api_key_id"], row["model"]): (row["requests"], round(row["total_cost_usd"] * 1e6))
            for row in outcome.usage.frame.iter_rows(named=True)
        }

    with langdock.connect(rig.config.sole_langdock()) as client:
        deps = cycle.Deps(config=rig.config, client=client, state=rig.state)
        before = cycle.run_once(deps, rig.clock.now)
        assert before.source.startswith("period export (history incomplete: 0 of 19"), before.source
        rig.run()
        exports = rig.sim.exports_made()
        after = cycle.run_once(deps, rig.clock.now)
    assert after.source.startswith("today's export ("), after.source
    assert after.source.endswith("+ 19 stored days")
    assert rig.sim.exports_made() == exports + 1  # the open day only
    assert totals(after) == totals(before) != {}


@pytest.mark.parametrize(
    "rig",
    [(Workspace(keys=3, created=datetime(2026, 11, 3, tzinfo=UTC)), berlin("2026-11-05T10:00"))],
    indirect=True,
)
def test_days_without_usage_are_stored_as_such_and_not_asked_for_again(rig: Rig) -> None:
    rig.run()
    stored = rig.state.stored_days("Europe/Berlin", day("2026-10-28"), day("2026-11-04"))
    assert sorted(stored) == days("2026-10-28", "2026-11-04")
    assert [each for each, known in stored.items() if known.rows == 0] == days(
        "2026-10-28", "2026-11-02"
    )
    assert rig.run() == []


@pytest.mark.parametrize("rig", [(STEADY, berlin("2026-11-05T10:00"))], indirect=True)
def test_a_failed_export_stores_nothing_is_counted_and_the_day_is_done_next_time(
    rig: Rig,
) -> None:
    rig.sim.faults.fail_export(500, times=2)  # both attempts of the first export
    with pytest.raises(ExportError):
        rig.keeper.step(rig.config)
    assert rig.state.stored_days("Europe/Berlin", day("2026-10-01"), day("2026-11-30")) == {}
    assert rig.metric("costwatch_history_export_failures_total", kind="current") == 1
    step = rig.keeper.step(rig.config)
    assert step is not None
    assert step.work.describe() == "current 2026-11-04 (Europe/Berlin)"


@pytest.mark.parametrize("rig", [(STEADY, berlin("2026-11-05T10:00"))], indirect=True)
def test_the_stop_signal_aborts_the_export_in_flight_and_nothing_is_stored(rig: Rig) -> None:
    rig.sim.faults.delay_export(30.0)
    running = Background(lambda: rig.keeper.step(rig.config))
    time.sleep(0.5)
    started = time.monotonic()
    rig.stop.set()
    with pytest.raises(Stopping):
        running.result(5, "the keeper's step")
    assert time.monotonic() - started < 2
    assert rig.state.stored_days("Europe/Berlin", day("2026-10-01"), day("2026-11-30")) == {}


@pytest.mark.parametrize("rig", [(STEADY, berlin("2026-11-05T10:00"))], indirect=True)
def test_the_keeper_waits_for_a_cycles_export_and_stops_waiting_at_the_stop_signal(
    rig: Rig,
) -> None:
    with rig.keeper.exclusive():  # a cycle exporting
        waiting = Background(lambda: rig.keeper.step(rig.config))
        time.sleep(1.0)
        assert rig.sim.exports_made() == 0
    assert waiting.result(10, "the keeper's step") is not None
    assert rig.sim.exports_made() == 1

    held = threading.Event()
    release = threading.Event()

    def cycle() -> None:
        with rig.keeper.exclusive():
            held.set()
            release.wait(10)

    other = threading.Thread(target=cycle, daemon=True)
    other.start()
    held.wait(5)
    blocked = Background(lambda: rig.keeper.step(rig.config))
    rig.stop.set()
    with pytest.raises(Stopping):
        blocked.result(3, "a keeper waiting for a cycle")
    release.set()
    other.join(5)


# --- SIGKILL during a reconcile and its repair ------------------------------------------------

PROCESS = Path(__file__).resolve().parent / "keeper_process.py"


def keeper_process(config: Path, now: datetime, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(PROCESS), str(config), now.isoformat()], stderr=sink
        )


@pytest.mark.slow
def test_sigkill_during_a_reconcile_and_its_repair_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    clock = Clock(berlin("2026-11-10T12:00"))
    with Simulator(Workspace(keys=4), api_key=KEY, clock=clock) as sim:
        path = tmp_path / "costwatch.yaml"
        path.write_text(config_text(sim, tmp_path), encoding="utf-8")
        log = tmp_path / "keeper.log"
        first = keeper_process(path, clock.now, log)
        assert first.wait(60) == 0
        # a stored day gone wrong (a disk fault, a bug): the 5th at twice its cost
        with sqlite3.connect(tmp_path / "state.db") as db:
            fifth = (day("2026-11-05") - date(1970, 1, 1)).days  # the store's day number
            changed = db.execute("UPDATE usage_daily SET cost = cost * 2 WHERE day = ?", (fifth,))
            assert changed.rowcount > 0
        db.close()
        clock.now = berlin("2026-11-11T12:00")  # the next day's reconcile finds it
        sim.faults.delay_export(0.4, times=1000)  # so that kills land inside exports too
        rng = random.Random(20261111)
        for _ in range(6):
            process = keeper_process(path, clock.now, log)
            time.sleep(rng.uniform(1.5, 6.0))  # start-up takes ~1.5 s of it
            process.send_signal(signal.SIGKILL)
            process.wait()
        last = keeper_process(path, clock.now, log)
        assert last.wait(90) == 0, log.read_text()
        with SqliteState.open(tmp_path / "state.db", write=False) as state:
            stored = state.stored_days("Europe/Berlin", day("2026-10-01"), day("2026-11-30"))
            assert sorted(stored) == days("2026-11-01", "2026-11-10")
            for each in days("2026-11-01", "2026-11-10"):
                frame = state.usage_between("Europe/Berlin", each, each)
                got = {
                    (r["api_key_id"], r["model"]): (r["requests"], round(r["total_cost_usd"] * 1e6))
                    for r in frame.iter_rows(named=True)
                }
                start = local_midnight(each, BERLIN)
                end = local_midnight(each + timedelta(days=1), BERLIN)
                assert got == {
                    (r.api_key_id, r.model): (r.requests, round(r.total_cost_usd * 1e6))
                    for r in sim.workspace.usage(start, end)
                }, each
            assert state.mark("repair-next:Europe/Berlin") == state.mark(
                "repair-until:Europe/Berlin"
            )
            assert state.mark("reconciled:Europe/Berlin") is not None
    said = log.read_text()
    assert "2026-11-01..2026-11-10 (Europe/Berlin) differ from one export of them" in said
    repaired = re.findall(r"history: stored (\S+) \(Europe/Berlin\).*\(repair\)", said)
    assert set(repaired) == {each.isoformat() for each in days("2026-11-01", "2026-11-10")}
