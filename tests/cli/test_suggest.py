"""`costwatch suggest` as a process, against the simulator over loopback and a real state file
holding a history the test writes: stored days are read, the missing ones exported (one export
each) and never stored, the figures are those of the series, the snippet pasted as the budgets
section passes `costwatch validate`, and neither the state nor the file is changed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pgserver
import polars as pl
import psycopg
import pytest
import yaml

from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState
from costwatch.usage import SCHEMA

BERLIN = ZoneInfo("Europe/Berlin")
KEY = "sim-suggest-key"
MISSING = 3  # days of the window the state lacks, exported by suggest


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=3), api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _not_at_midnight() -> None:
    """Within two minutes of a Berlin midnight the window moves under the test."""
    while ((now := datetime.now(BERLIN)).hour == 23 and now.minute >= 58) or (
        now.hour == 0 and now.minute < 2
    ):
        time.sleep(5)


BUDGETS = """\
budgets:
  - name: pool
    keys: "*"
    scope: shared
    limits: {cost_usd: 1000000, requests: 100000000}
    thresholds: [80, {at: 100, severity: critical}]
    repeat: 12h
  - name: weekly per key
    keys: "*"
    period: week
    limits: {cost_usd: 1000000}
"""


def write_config(tmp_path: Path, sim: Simulator, budgets: str = BUDGETS) -> Path:
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
{budgets}""",
        encoding="utf-8",
    )
    return path


def costwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwatch", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def window(months: int) -> list[date]:
    today = datetime.now(BERLIN).date()
    index = today.year * 12 + today.month - 1 - months
    first = date(index // 12, index % 12 + 1, 1)
    return [first + timedelta(days=n) for n in range((today - first).days)]


def stored_cost(day: date) -> float:
    """What the test stores for a day: one key, a cost that depends on the day."""
    return 10.0 + day.day + 3.0 * day.month


def day_frame(day: date) -> pl.DataFrame:
    row = ("id-stored", "stored", "gpt-4o", 7, stored_cost(day), None, None, None, None, None)
    return pl.DataFrame([row], schema=SCHEMA, orient="row")


def sim_cost(sim: Simulator, day: date) -> float:
    start, end = local_midnight(day, BERLIN), local_midnight(day + timedelta(days=1), BERLIN)
    return sum(row.total_cost_usd for row in sim.workspace.usage(start, end))


def p90(values: list[float]) -> float:
    return float(pl.Series(values).quantile(0.9, interpolation="linear") or 0.0)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_suggest_reads_stored_days_exports_the_missing_ones_and_prints_valid_budgets(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim)
    days = window(3)
    missing = set(days[-10 : -10 + MISSING])  # three days in the last full month
    with SqliteState.open(tmp_path / "state.db") as state:
        for day in days:
            if day not in missing:
                state.put_day("Europe/Berlin", day, day_frame(day), exported_at=NOW(), settled=True)
    before = {config: digest(config), tmp_path / "state.db": digest(tmp_path / "state.db")}

    done = costwatch("suggest", "--config", str(config), "--months", "3")
    assert done.returncode == 0, done.stderr
    assert f"suggest: {MISSING} closed day(s) of Europe/Berlin are not stored" in done.stderr
    exports = [r for r in sim.requests if r.path == "/export/api-keys"]
    assert len(exports) == MISSING  # one day export each, nothing else asked
    assert {path: digest(path) for path in before} == before  # nothing written, nothing edited

    # The known answer: per full month (the three before this one), stored days' cost plus
    # the simulator's for the days exported; p90 + 20%, rounded up to the cent.
    months: dict[tuple[int, int], float] = {}
    for day in days:
        cost = sim_cost(sim, day) if day in missing else stored_cost(day)
        months[(day.year, day.month)] = months.get((day.year, day.month), 0.0) + cost
    full = [months[m] for m in sorted(months)][:3]
    snippet = yaml.safe_load(done.stdout)
    pool, weekly = snippet["budgets"]
    assert pool["name"] == "pool"
    assert pool["limits"]["cost_usd"] == pytest.approx(p90(full) * 1.2, abs=0.011)
    assert pool["repeat"] == "12h"
    assert "# 'pool' (monthly, Europe/Berlin):" in done.stdout
    assert f"#   cost_usd: p90 of 3 full months ${p90(full):,.2f} + 20% headroom" in done.stdout
    assert weekly["period"] == "week"
    assert "#   cost_usd: p90 of " in done.stdout.split("'weekly per key'")[1]
    assert " full weeks " in done.stdout.split("'weekly per key'")[1]

    pasted = tmp_path / "pasted.yaml"
    head = config.read_text(encoding="utf-8").split("budgets:\n")[0]
    pasted.write_text(head + done.stdout, encoding="utf-8")
    checked = costwatch("validate", "--config", str(pasted))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    again = costwatch("suggest", "--config", str(config), "--months", "3")
    assert (
        again.stdout.split("\n", 1)[1] == done.stdout.split("\n", 1)[1]
    )  # the exported days were not stored: exported again
    assert len([r for r in sim.requests if r.path == "/export/api-keys"]) == 2 * MISSING


def test_without_a_state_file_every_day_is_exported_and_none_is_created(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path, sim)
    done = costwatch("suggest", "--config", str(config), "--months", "1")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "state.db").exists()
    exports = [r for r in sim.requests if r.path == "/export/api-keys"]
    assert len(exports) == len(window(1))
    assert "history too short" in done.stderr  # one full month: the highest, and it says so
    assert "the highest of only 1 full month" in done.stdout


def test_an_empty_postgresql_database_is_read_as_no_history_and_left_empty(
    tmp_path: Path, sim: Simulator
) -> None:
    """As a missing SQLite file: every day exported, nothing created (it was an unexpected
    StateMissing, exit 2 "a bug", when suggest opened the state its own way)."""
    with pgserver.database() as url:
        config = write_config(tmp_path, sim)
        config.write_text(
            config.read_text().replace(f"path: {tmp_path / 'state.db'}", f"url: {url}")
        )
        done = costwatch("suggest", "--config", str(config), "--months", "1")
        assert done.returncode == 0, done.stderr
        assert "the highest of only 1 full month" in done.stdout
        with psycopg.connect(url, autocommit=True) as db:
            found = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'costwatch'")
            assert found.fetchone() == (0,)


def test_a_failing_export_is_exit_2_and_prints_no_snippet(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim)
    sim.faults.fail_export(500, 100)
    done = costwatch("suggest", "--config", str(config), "--months", "1")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "the Langdock export failed" in done.stderr


def test_bad_options_are_refused_naming_them(tmp_path: Path, sim: Simulator) -> None:
    config = write_config(tmp_path, sim)
    for option, value, says in (
        ("--months", "13", "13: at most 12 months: the export API keeps 12 months of usage"),
        ("--percentile", "20", "a percentile from 50 to 100"),
        ("--headroom", "lots", "not a fraction like 0.2 or 20%"),
    ):
        done = costwatch("suggest", "--config", str(config), option, value)
        assert done.returncode == 2
        assert says in done.stderr, done.stderr
    assert sim.requests == []


def NOW() -> datetime:
    return datetime.now(BERLIN)
