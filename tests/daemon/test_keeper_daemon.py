"""The history's keeper inside `costwatch run`: a real process against the simulator and the
Slack stand-in fills the history in its own thread while cycles go on, says so in /metrics and
the log, and stops within the grace with a keeper export in flight."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from loopback import free_port, wait_for, write_daemon_config
from prometheus_client.parser import text_string_to_metric_families
from slackstub import TOKEN, SlackStub

from costwatch.simulator import Simulator, Workspace

SECRET = "sk-lang-KEEPER-SECRET-0042"
BERLIN = ZoneInfo("Europe/Berlin")
BUDGET = """\
  - name: every-key
    keys: "*"
    limits: {cost_usd: 1000000}
"""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=4), api_key=SECRET) as server:
        yield server


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as server:
        server.add_channel("#ai-spend")
        yield server


def value(base: str, name: str, **labels: str) -> float | None:
    try:
        scrape = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.TransportError:
        return None
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def start(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN}
    return subprocess.Popen(
        [sys.executable, "-m", "costwatch", "--log-format", "json", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def config(tmp_path: Path, sim: Simulator, stub: SlackStub, port: int) -> Path:
    # settle_after 1s: yesterday is settled a second after the day turns, so the daily reconcile is
    # due whatever the hour this runs at (with the 6 h default it waits until 06:00 Berlin).
    history = "history:\n  backfill_days: 3\n  pace: 1s\n  settle_after: 1s\n"
    path = write_daemon_config(
        tmp_path / "costwatch.yaml", sim, stub, port, BUDGET, every="2s", shutdown_grace="5s"
    )
    text = path.read_text(encoding="utf-8").replace("state:\n", history + "state:\n", 1)
    path.write_text(text, encoding="utf-8")
    return path


def test_run_fills_the_history_beside_its_cycles_and_says_so(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start(config(tmp_path, sim, stub, port))
    today = datetime.now(BERLIN).date()
    month_days = today.day - 1
    try:
        wait_for(
            lambda: (
                value(
                    base,
                    "costwatch_history_backfill_remaining_days",
                    workspace="default",
                    zone="Europe/Berlin",
                )
                == 0
            ),
            90,
            "the history to be whole",
        )
        stored = value(
            base, "costwatch_history_days_stored", workspace="default", zone="Europe/Berlin"
        )
        assert stored == max(month_days, 3)
        assert (value(base, "costwatch_cycles_total", outcome="ok") or 0) >= 1
        if month_days:
            wait_for(
                lambda: value(base, "costwatch_history_exports_total", kind="reconcile") == 1,
                30,
                "the daily reconcile",
            )
            assert (
                value(
                    base,
                    "costwatch_history_reconcile_difference_usd",
                    workspace="default",
                    zone="Europe/Berlin",
                )
                == 0
            )
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line["level"] == "error"] == []
    info = [line["message"] for line in lines if line["level"] == "info"]
    said = [m for m in info if m.startswith("history: ")]
    announcing = [m for m in said if re.fullmatch(r"history: \d+ closed day\(s\) to export .*", m)]
    assert len(announcing) == 1, said
    announced = re.fullmatch(r"history: (\d+) closed day\(s\) to export .*", announcing[0])
    assert announced is not None, said
    assert 1 <= int(announced[1]) <= max(month_days, 3)
    assert "history: every closed day of the keeper's window is stored" in said
    with sqlite3.connect(tmp_path / "state.db") as db:
        days = db.execute("SELECT count(*), sum(settled) FROM usage_day").fetchone()
    db.close()
    assert days[0] >= max(month_days, 3)
    assert SECRET not in err


def test_sigterm_with_a_history_export_hanging_stops_within_the_grace(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start(config(tmp_path, sim, stub, port))
    try:
        wait_for(
            lambda: (
                (value(base, "costwatch_history_exports_total", kind="backfill") or 0)
                + (value(base, "costwatch_history_exports_total", kind="current") or 0)
                >= 1
            ),
            60,
            "a first history export",
        )
        sim.faults.delay_export(60.0, times=5)  # whoever exports next hangs
        made = sim.exports_made()
        wait_for(lambda: sim.exports_made() > made, 30, "an export that hangs")
        time.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 5 + 1
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line["level"] == "error"] == []
    assert "Traceback" not in err
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
