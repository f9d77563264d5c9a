"""A scheduled report through `costwatch run` itself: a real process against the simulator and
the Slack stand-in, the keeper storing yesterday, the cycle queueing the daily report, the
courier posting it; and after a restart, not again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from loopback import free_port, wait_for, write_daemon_config
from prometheus_client.parser import text_string_to_metric_families
from slackstub import TOKEN, SlackStub

from costwatch import fmt
from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import NoticeKey, SqliteState

SECRET = "sk-lang-REPORT-DAEMON-0042"
BERLIN = ZoneInfo("Europe/Berlin")
EXTRA = """\
history:
  backfill_days: 2
  pace: 1s
reports:
  - {name: daily, every: day, at: "00:00", channel: "#reports"}
"""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=3), api_key=SECRET) as server:
        yield server


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as server:
        server.add_channel("#ai-spend")
        server.add_channel("#reports")
        yield server


def run(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN}
    return subprocess.Popen(
        [sys.executable, "-m", "costwatch", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return err


def test_the_daemon_posts_yesterdays_report_once_across_a_restart(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    path = tmp_path / "costwatch.yaml"
    budgets = '  - {name: roomy, keys: "*", limits: {cost_usd: 1000000}}\n'
    port = free_port()
    write_daemon_config(path, sim, stub, port, budgets, every="1s")
    path.write_text(path.read_text() + EXTRA)
    yesterday = datetime.now(BERLIN).date() - timedelta(days=1)
    start, end = local_midnight(yesterday, BERLIN), local_midnight(yesterday, BERLIN)
    end += timedelta(days=1)
    spent = sum(row.total_cost_usd for row in sim.workspace.usage(start, end))

    process = run(path)
    try:
        wait_for(lambda: len(stub.posts("#reports")) >= 1, 60, "the daily report in #reports")
        wait_for(lambda: reports_counted(port) == 1.0, 10, "costwatch_reports_total{report=daily}")
    finally:
        err = stop(process)
    (post,) = stub.posts("#reports")
    assert f"costwatch: daily spend: {fmt.money_brief(spent)}" in post.text
    key = NoticeKey("report", "daily", f"day:{yesterday.isoformat()}@Europe/Berlin")
    with SqliteState.open(tmp_path / "state.db", write=False) as state:
        assert state.notices_sent([key]) == {key}

    again = run(path)
    try:
        # several cycles of the restarted daemon, each of which would queue a due report
        with SqliteState.open(tmp_path / "state.db", write=False) as state:
            first = state.export_health().last_success
        wait_for(lambda: _exported_since(tmp_path, first, 3), 60, "three cycles after restart")
        assert reports_counted(port) is None  # nothing queued by this process
    finally:
        err = stop(again)
    assert len(stub.posts("#reports")) == 1, err


def reports_counted(port: int) -> float | None:
    """costwatch_reports_total{report="daily"} in a real scrape (None: no such series)."""
    try:
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return None
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == "costwatch_reports_total" and sample.labels == {"report": "daily"}:
                return sample.value
    return None


def _exported_since(tmp_path: Path, first: datetime | None, seconds: int) -> bool:
    with SqliteState.open(tmp_path / "state.db", write=False) as state:
        last = state.export_health().last_success
    return last is not None and (first is None or last >= first + timedelta(seconds=seconds))
