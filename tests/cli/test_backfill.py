"""`costwatch backfill` as a process, against the simulator over loopback and a real state
file: progress per day, a second run that skips what is stored, `--days` over the API's 12
months refused, the writer lock, SIGTERM mid-export, and SIGKILL at random moments."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

BERLIN = ZoneInfo("Europe/Berlin")
KEY = "sim-backfill-key"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=4), api_key=KEY) as server:
        yield server


def write_config(tmp_path: Path, sim: Simulator) -> Path:
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
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
  pace: 1s
budgets:
  - name: all
    keys: "*"
    limits: {{cost_usd: 1000000}}
""",
        encoding="utf-8",
    )
    return path


def backfill(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "costwatch", "backfill", "--config", str(config), *extra]


def run(config: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        backfill(config, *extra), capture_output=True, text=True, check=False, timeout=timeout
    )


def last_days(count: int) -> list[date]:
    """The `count` closed Berlin days before today, oldest first."""
    today = datetime.now(BERLIN).date()
    return [today - timedelta(days=n) for n in range(count, 0, -1)]


def truth(sim: Simulator, day: date) -> dict[tuple[str, str], tuple[int, int]]:
    start, end = local_midnight(day, BERLIN), local_midnight(day + timedelta(days=1), BERLIN)
    return {
        (row.api_key_id, row.model): (row.requests, round(row.total_cost_usd * 1e6))
        for row in sim.workspace.usage(start, end)
    }


def stored(state_path: Path, day: date) -> dict[tuple[str, str], tuple[int, int]]:
    with SqliteState.open(state_path, write=False) as state:
        frame = state.usage_between("Europe/Berlin", day, day)
    return {
        (row["api_key_id"], row["model"]): (row["requests"], round(row["total_cost_usd"] * 1e6))
        for row in frame.iter_rows(named=True)
    }


def stored_days(state_path: Path) -> list[date]:
    with SqliteState.open(state_path, write=False) as state:
        return sorted(state.stored_days("Europe/Berlin", date(2000, 1, 1), date(2100, 1, 1)))


def midnight_is_near() -> bool:
    """Within two minutes of a Berlin midnight the window moves under the test."""
    now = datetime.now(BERLIN)
    return (now.hour == 23 and now.minute >= 58) or (now.hour == 0 and now.minute < 2)


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    while midnight_is_near():
        time.sleep(5)


def test_backfill_exports_each_missing_day_with_progress_and_a_second_run_skips_them(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim)
    first = run(config, "--days", "3", "--pace", "1s")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("backfill: 3 closed day(s) of the last 3 to export (Europe/Berlin)")
    progress = [line for line in lines if line.startswith("[")]
    wanted = last_days(3)
    assert [line.split()[1] for line in progress] == [d.isoformat() for d in reversed(wanted)]
    assert progress[0].startswith("[1/3] ")
    assert "2 remaining" in progress[0]
    assert "0 remaining" in progress[-1]
    assert lines[-1].startswith("backfill: done: 3 day(s) exported in ")
    assert stored_days(tmp_path / "state.db") == wanted
    for day in wanted:
        assert stored(tmp_path / "state.db", day) == truth(sim, day) != {}
    assert sim.exports_made() == 3

    again = run(config, "--days", "5")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("backfill: 2 closed day(s) of the last 5 to export")
    assert sim.exports_made() == 5  # only the two days not stored yet
    assert stored_days(tmp_path / "state.db") == last_days(5)
    assert KEY not in first.stdout + first.stderr + again.stdout + again.stderr


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ("366", "366: at most 365 days: the export API keeps 12 months of usage"),
        ("0", "0: at least 1 day"),
        ("a week", "not a whole number of days: 'a week'"),
    ],
)
def test_days_outside_1_to_365_are_refused_with_a_clear_message(
    tmp_path: Path, sim: Simulator, days: str, message: str
) -> None:
    done = run(write_config(tmp_path, sim), "--days", days)
    assert done.returncode == 2
    assert message in done.stderr
    assert sim.exports_made() == 0
    assert not (tmp_path / "state.db").exists()


def test_a_pace_of_0s_means_no_pause_as_in_backtest(tmp_path: Path, sim: Simulator) -> None:
    """`--pace 0s` is a pace (none), not "unset": the file's history.pace is not used."""
    config = write_config(tmp_path, sim)
    config.write_text(config.read_text().replace("pace: 1s", "pace: 1h"))
    done = run(config, "--days", "3", "--pace", "0s")
    assert done.returncode == 0, done.stderr
    assert sim.exports_made() == 3  # with the file's 1 h pace, run() would time out


def test_backfill_refuses_a_state_file_another_process_writes(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim)
    with SqliteState.open(tmp_path / "state.db", command="costwatch run"):
        done = run(config, "--days", "2")
    assert done.returncode == 2
    assert "is in use by costwatch run" in done.stderr
    assert sim.exports_made() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_aborts_the_export_in_flight_exits_2_and_keeps_what_was_stored(
    tmp_path: Path, sim: Simulator, signum: signal.Signals
) -> None:
    config = write_config(tmp_path, sim)
    assert run(config, "--days", "1").returncode == 0
    sim.faults.delay_export(30.0)
    process = subprocess.Popen(
        backfill(config, "--days", "4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    while sim.exports_made() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=10)
    assert time.monotonic() - started < 3
    assert process.returncode == 2, err
    assert "backfill: interrupted; 0 day(s) exported and stored are kept" in err
    assert "Traceback" not in err
    assert stored_days(tmp_path / "state.db") == last_days(1)


def test_sigkill_at_random_moments_of_a_backfill_loses_and_duplicates_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim)
    rng = random.Random(20261201)
    env = {**os.environ}
    for _ in range(8):
        process = subprocess.Popen(
            backfill(config, "--days", "6", "--pace", "1s"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 2.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = run(config, "--days", "6", "--pace", "1s", timeout=120)
    assert done.returncode == 0, done.stderr
    wanted = last_days(6)
    assert stored_days(tmp_path / "state.db") == wanted
    for day in wanted:
        assert stored(tmp_path / "state.db", day) == truth(sim, day)
    # a day is exported again only when a kill cut its first export (or its commit) short
    assert sim.exports_made() <= len(wanted) + 8


def test_backfill_needs_the_history_enabled(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim)
    config.write_text(
        config.read_text(encoding="utf-8").replace("  pace: 1s", "  enabled: false"),
        encoding="utf-8",
    )
    done = run(config)
    assert done.returncode == 2
    assert "history.enabled is false" in done.stderr
