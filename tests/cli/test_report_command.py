"""`costwatch report` end to end: a real SQLite history the test builds (tests/histories.py),
the simulator's Langdock over loopback for the budgets' dry-run cycle and for the days the
store lacks, the command as a process and in-process, and the real slack_sdk posting to the
Slack stand-in with `--send`. The numbers are known: the history says them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from histories import frame, steady
from slackstub import TOKEN, SlackStub

from costwatch.cli.report import run_report
from costwatch.config import Config, load_config
from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

KEY = "ld-REPORT-k3y"
BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "Europe/Berlin"
NOW = datetime(2026, 12, 2, 10, tzinfo=BERLIN)  # Wednesday
LAST_WEEK = [date(2026, 11, 23) + timedelta(days=n) for n in range(7)]  # Mon 23 to Sun 29
WEEK_BEFORE = [day - timedelta(days=7) for day in LAST_WEEK]
HISTORY = [date(2026, 10, 19) + timedelta(days=n) for n in range(42)]  # Oct 19 to Nov 29
SPIKE = date(2026, 11, 26)  # a Thursday: alpha spends 20x its normal
WORKSPACE = Workspace(keys=2, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=1.0)


def history_rows() -> list[tuple[date, str, str, float, int]]:
    """alpha $10 a day on m1 ($200 on the spike), beta $5 on m2, gamma $2 on m1 in the week
    before last only."""
    rows = [r for r in steady("alpha", "m1", 10.0, 100, HISTORY) if r[0] != SPIKE]
    rows += [(SPIKE, "alpha", "m1", 200.0, 2000)]
    rows += steady("beta", "m2", 5.0, 50, HISTORY)
    rows += steady("gamma", "m1", 2.0, 20, WEEK_BEFORE)
    return rows


@dataclass
class World:
    sim: Simulator
    path: Path
    slack: SlackStub

    def config(self) -> Config:
        return load_config(self.path, env={})

    def store(self, days: list[date]) -> None:
        rows = history_rows()
        with SqliteState.open(self.path.parent / "state.db") as state:
            for day in days:
                own = frame(r for r in rows if r[0] == day)
                state.put_day(ZONE, day, own.drop("day"), exported_at=NOW, settled=True)

    def stored(self) -> set[date]:
        with SqliteState.open(self.path.parent / "state.db", write=False) as state:
            return set(state.stored_days(ZONE, date(2026, 1, 1), date(2026, 12, 31)))

    def report(self, *args: str) -> tuple[int, str, str]:
        """The command as a process."""
        done = subprocess.run(
            [sys.executable, "-m", "costwatch", "report", "--config", str(self.path), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    def json_report(self, *args: str) -> dict[str, Any]:
        code, out, err = self.report("--now", NOW.isoformat(), "--format", "json", *args)
        assert code == 0, err
        body: dict[str, Any] = json.loads(out)
        return body


def write_config(tmp_path: Path, sim: Simulator, slack: SlackStub) -> Path:
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
langdock:
  base_url: {sim.base_url}
  api_key: {KEY}
  allow_insecure_download: true
  timeout_seconds: 5
  max_attempts: 1
schedule: {{timezone: {ZONE}}}
state: {{path: {tmp_path / "state.db"}}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: "{slack.api_url}"}}
budgets:
  - {{name: everything, keys: "*", scope: shared, limits: {{cost_usd: 1}}}}
  - {{name: roomy, keys: "*", limits: {{cost_usd: 1000000}}}}
anomalies: {{metrics: cost_usd}}
unit_cost: {{enabled: false}}
unowned: {{enabled: false, new_keys: false, dormant: false}}
reports:
  - {{name: weekly, every: week, channel: "#reports", top: 1, at: "Mon 09:00"}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with (
        Simulator(WORKSPACE, api_key=KEY, clock=lambda: NOW) as sim,
        SlackStub() as slack,
    ):
        for channel in ("#ai-spend", "#reports"):
            slack.add_channel(channel)
        yield World(sim, write_config(tmp_path, sim, slack), slack)


def test_last_week_from_the_stored_history_has_its_known_totals_change_and_top_lists(
    world: World,
) -> None:
    world.store(HISTORY)
    body = world.json_report("--period", "last-week")
    assert body["period"]["key"] == "week:2026-11-23@Europe/Berlin"
    assert (body["period"]["first_day"], body["period"]["last_day"]) == ("2026-11-23", "2026-11-29")
    assert body["cost_usd"] == pytest.approx(6 * 10 + 200 + 7 * 5)  # 295
    assert body["requests"] == 6 * 100 + 2000 + 7 * 50
    assert body["previous"]["cost_usd"] == pytest.approx(7 * 10 + 7 * 5 + 7 * 2)  # 119
    assert body["change_usd"] == pytest.approx(295 - 119)
    assert body["change_ratio"] == pytest.approx((295 - 119) / 119)
    assert [
        (k["api_key_name"], k["cost_usd"], k["previous_cost_usd"]) for k in body["top_keys"]
    ] == [
        ("alpha", pytest.approx(260.0), pytest.approx(70.0)),
        ("beta", pytest.approx(35.0), pytest.approx(35.0)),
    ]
    assert [(m["model"], m["cost_usd"]) for m in body["top_models"]] == [
        ("m1", pytest.approx(260.0)),
        ("m2", pytest.approx(35.0)),
    ]
    assert (body["keys"], body["models"]) == (2, 2)  # gamma spent only the week before

    # the shared pool of $1 is over in December so far (the simulator's spend); roomy is not
    assert [(r["budget"], r["api_key_id"]) for r in body["at_risk"]] == [("everything", None)]
    assert body["at_risk"][0]["period"] == "month:2026-12-01@Europe/Berlin"
    assert body["at_risk"][0]["ratio"] > 1

    anomalies = [f for f in body["findings"] if f["kind"] == "anomaly"]
    assert [(f["api_key_name"], f["day"], f["model"]) for f in anomalies] == [
        ("alpha", "2026-11-26", None)
    ]
    assert anomalies[0]["ratio"] == pytest.approx(20.0)
    assert body["findings_count"] == 1


def test_days_the_store_lacks_are_exported_for_the_report_and_not_stored(world: World) -> None:
    lacking = {date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 17)}
    world.store([day for day in HISTORY if day not in lacking])
    before = world.stored()
    code, out, err = world.report("--now", NOW.isoformat(), "--format", "json")
    assert code == 0, err
    body = json.loads(out)
    truth = {day: simulated(world.sim, day) for day in lacking}
    expected = 295 - 2 * 10 - 2 * 5 + truth[date(2026, 11, 24)] + truth[date(2026, 11, 25)]
    assert body["cost_usd"] == pytest.approx(expected)
    assert body["previous"]["cost_usd"] == pytest.approx(119 - 17 + truth[date(2026, 11, 17)])
    for day in lacking:
        assert f"{day.isoformat()} is not stored: exporting it" in err
    assert "3 day(s) exported (not stored)" in err
    assert world.stored() == before  # the command writes no state


def test_the_table_and_markdown_say_the_same_and_keep_names_inert(world: World) -> None:
    world.store(HISTORY)
    config = world.config()
    table, markdown = StringIO(), StringIO()
    assert run_report(config, period="last-week", now=NOW, out=table) == 0
    assert (
        run_report(config, period="last-week", now=NOW, output_format="markdown", out=markdown) == 0
    )
    text = table.getvalue()
    assert "Spend report: week of Nov 23 to Nov 29, 2026 (Europe/Berlin)" in text
    assert "$295.00 (+$176.00, +148% on the week before: $119.00)" in text
    assert "alpha at 20.0x its normal spend on Nov 26" in text
    assert "shared pool (budget everything, monthly)" in text
    md = markdown.getvalue()
    assert md.startswith("## Spend report: week of Nov 23 to Nov 29, 2026 (Europe/Berlin)\n")
    assert "| alpha | $260.00 | 88% | 2,600 | $70.00 | +271% |" in md


def test_a_running_period_is_its_closed_days_so_far_against_as_many_days_before(
    world: World,
) -> None:
    world.store([*HISTORY, date(2026, 11, 30), date(2026, 12, 1)])
    body = world.json_report("--period", "this-month")
    assert (body["period"]["first_day"], body["period"]["last_day"]) == ("2026-12-01", "2026-12-01")
    assert body["period"]["whole"] is False
    assert (body["previous"]["first_day"], body["previous"]["last_day"]) == (
        "2026-11-01",
        "2026-11-01",
    )
    assert body["cost_usd"] == 0  # nothing built for Dec 1 was stored: a day without use
    assert body["previous"]["cost_usd"] == pytest.approx(15.0)


def test_send_posts_the_report_once_to_its_channel_and_records_nothing(world: World) -> None:
    world.store(HISTORY)
    code, _, err = world.report("--now", NOW.isoformat(), "--report", "weekly", "--send")
    assert code == 0, err
    posts = world.slack.posts("#reports")
    assert len(posts) == 1
    assert "Weekly spend: $295, +148% on the week before" in posts[0].text
    with SqliteState.open(world.path.parent / "state.db", write=False) as state:
        assert state.pending_count() == 0


def test_a_period_without_use_sends_nothing(world: World) -> None:
    quiet = [date(2026, 10, 8), date(2026, 10, 9)]
    world.store(quiet)  # stored without rows: days without use
    later = datetime(2026, 10, 10, 10, tzinfo=BERLIN).isoformat()
    code, _, err = world.report("--now", later, "--send", "--period", "yesterday")
    assert code == 0, err
    assert "no use in the period: no report sent" in err
    assert world.slack.posts() == []


def test_an_unknown_report_name_and_a_period_not_begun_are_refused(world: World) -> None:
    code, _, err = world.report("--report", "fortnightly")
    assert code == 2
    assert "no report named 'fortnightly' (weekly)" in err
    monday = datetime(2026, 11, 30, 10, tzinfo=BERLIN).isoformat()
    code, _, err = world.report("--now", monday, "--period", "this-week")
    assert code == 2
    assert "no day of this week has closed yet" in err


def simulated(sim: Simulator, day: date) -> float:
    start, end = local_midnight(day, BERLIN), local_midnight(day + timedelta(days=1), BERLIN)
    return sum(row.total_cost_usd for row in sim.workspace.usage(start, end))
