"""`costwatch run` end to end: a real process against the simulator and a Slack stand-in."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from loopback import free_port, returns_within, wait_for, write_daemon_config
from slackstub import TOKEN, SlackStub

from costwatch.config import load_config, parse_config
from costwatch.daemon import Daemon
from costwatch.daemon.schedule import interval, trigger
from costwatch.metrics import Metrics, MetricsServer
from costwatch.simulator import Simulator, Workspace
from costwatch.state import Message, SqliteState

SECRET = "sk-lang-DAEMON-SECRET-0042"


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2.0)
    except httpx.TransportError:
        return None


def status(url: str) -> int:
    response = get(url)
    return response.status_code if response is not None else 0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=6), api_key=SECRET) as server:
        yield server


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as server:
        server.add_channel("#ai-spend")
        server.add_channel("#team")
        yield server


def write_config(
    path: Path, sim: Simulator, stub: SlackStub, port: int, *, budgets: str, every: str = "2s"
) -> Path:
    return write_daemon_config(path, sim, stub, port, budgets, every=every)


EVERY_KEY = """\
  - name: every-key
    keys: "*"
    limits: {cost_usd: 0.5}
"""
TEAM = """\
  - name: team-tight
    keys: "*"
    limits: {requests: 1}
    channel: "#team"
"""


def test_run_serves_metrics_alerts_reloads_on_sighup_and_stops_cleanly_on_sigterm(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    port = free_port()
    config = write_config(tmp_path / "costwatch.yaml", sim, stub, port, budgets=EVERY_KEY)
    env = {**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN}
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "costwatch", "--log-format", "json", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: status(f"{base}/healthz") == 200, 30, "/healthz")
        wait_for(lambda: status(f"{base}/readyz") == 200, 30, "/readyz after the first export")
        scrape = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'costwatch_key_spend_usd{api_key_id="' in scrape
        assert "costwatch_export_last_success_timestamp_seconds" in scrape
        assert "costwatch_build_info{" in scrape

        wait_for(lambda: len(stub.posts("#ai-spend")) >= 1, 30, "alerts in #ai-spend")
        assert not stub.posts("#team")

        # A changed budget, applied on SIGHUP: the new budget's alerts go to #team.
        write_config(config, sim, stub, port, budgets=EVERY_KEY + TEAM)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(stub.posts("#team")) >= 1, 30, "the reloaded budget's alerts")

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert time.monotonic() - started < 10 + 5  # within the grace period, with slack
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    with sqlite3.connect(tmp_path / "state.db") as db:
        pending = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        sent = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0]
    db.close()
    assert pending == 0  # nothing pending lost
    assert sent >= 2
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    messages = [entry["message"] for entry in lines]
    assert any(m.startswith("cycle ok in") for m in messages)
    assert any("reloaded" in m for m in messages)
    assert "costwatch stopped" in messages
    assert SECRET not in err + out
    assert TOKEN not in err + out


@dataclass
class Monotonic:
    """The daemon's monotonic clock, moved by the test."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_readyz_turns_503_once_exports_failed_for_3_intervals_and_200_after_a_success(
    tmp_path: Path, sim: Simulator, stub: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driven, not polled: the daemon's cycles are run one by one on its own monotonic clock,
    and `/readyz` is asked over HTTP after each step."""
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    port = free_port()
    config = load_config(
        write_config(tmp_path / "c.yaml", sim, stub, port, budgets=EVERY_KEY, every="60s")
    )
    monotonic = Monotonic()
    metrics = Metrics(max_series=config.metrics.max_series)
    server = MetricsServer(metrics.exposition_parts, host="127.0.0.1", port=port)
    daemon = Daemon(
        config,
        state=SqliteState.open(config.state.path),
        metrics=metrics,
        server=server,
        sender=None,
        monotonic=monotonic,
    )
    readyz = f"http://127.0.0.1:{port}/readyz"

    def ready() -> tuple[int, str]:
        response = httpx.get(readyz, timeout=5)
        return response.status_code, response.text

    server.start()
    try:
        assert ready() == (503, "no successful export yet\n")
        daemon.run_cycle()
        assert ready() == (200, "last successful export 0s ago\n")

        sim.faults.fail_export(401, times=10_000)  # not retried: each cycle fails at once
        monotonic.now += 2 * 60
        daemon.run_cycle()
        assert ready() == (200, "last successful export 2m ago\n")  # within 3 intervals
        monotonic.now += 61
        daemon.run_cycle()
        code, text = ready()
        assert code == 503
        assert text.startswith("last successful export 3m ago (over 3 intervals); last failure:")
        assert "unauthorized" in text
        assert status(f"http://127.0.0.1:{port}/healthz") == 503  # nothing scheduled: not alive

        sim.faults.clear()
        monotonic.now += 3_600
        daemon.run_cycle()
        assert ready() == (200, "last successful export 0s ago\n")
    finally:
        daemon.shutdown()


def test_an_invalid_reload_keeps_the_old_configuration(
    tmp_path: Path,
    sim: Simulator,
    stub: SlackStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    config = write_config(tmp_path / "c.yaml", sim, stub, free_port(), budgets=EVERY_KEY)
    daemon = Daemon.from_path(config)
    try:
        config.write_text(config.read_text().replace("cost_usd: 0.5", "cost_usd: -1"))
        daemon.reload()
        assert "configuration not reloaded" in caplog.text
        assert "budgets[0].limits.cost_usd" in caplog.text
        assert daemon.readyz()[0] is False  # nothing ran yet; the daemon is still usable
    finally:
        daemon.shutdown()


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("every: 15m", timedelta(minutes=15)),
        ('cron: "*/10 * * * *"', timedelta(minutes=10)),
        ('cron: "0 9 * * 1-5"', timedelta(days=1)),
    ],
)
def test_the_interval_behind_readiness_follows_every_or_cron(
    schedule: str, expected: timedelta
) -> None:
    config = parse_config(f"langdock: {{api_key: x}}\nschedule:\n  {schedule}\n")
    assert interval(config.schedule) == expected
    assert trigger(config.schedule) is not None


def test_saving_the_config_file_reloads_it_without_a_signal(
    tmp_path: Path,
    sim: Simulator,
    stub: SlackStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="costwatch")
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    port = free_port()
    config = write_config(tmp_path / "c.yaml", sim, stub, port, budgets=EVERY_KEY, every="1s")
    daemon = Daemon.from_path(config)
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        wait_for(lambda: len(stub.posts("#ai-spend")) >= 1, 30, "the first alerts")
        time.sleep(1.1)  # a new mtime even on coarse file systems
        write_config(config, sim, stub, port, budgets=EVERY_KEY + TEAM, every="1s")
        wait_for(lambda: len(stub.posts("#team")) >= 1, 30, "alerts of the budget added")
    finally:
        daemon.stop()
        runner.join(timeout=30)
    assert "configuration reloaded: 2 budget(s)" in caplog.text


def test_the_final_flush_gets_only_what_is_left_of_the_grace_and_keeps_the_rows(
    tmp_path: Path, sim: Simulator, stub: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    config = write_daemon_config(
        tmp_path / "c.yaml", sim, stub, free_port(), EVERY_KEY, shutdown_grace="3s"
    )
    with SqliteState.open(tmp_path / "state.db") as state:  # a notice for each of two channels
        notices = [
            Message(kind="exports_recovered", channel=channel, payload={"failures": 3})
            for channel in ("#ai-spend", "#team")
        ]
        state.commit(now=datetime.now(UTC), messages=notices)
    daemon = Daemon.from_path(config)  # not started: the final flush is the first delivery
    stub.delay_next(60, times=100)  # Slack takes each post and answers none in time

    started = time.monotonic()
    returns_within(3 + 1, "the shutdown", daemon.shutdown)
    seconds = time.monotonic() - started

    assert seconds < 3 + 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT attempts, last_error, sent_at FROM outbox ORDER BY id").fetchall()
    db.close()
    assert [sent_at for _, _, sent_at in rows] == [None, None]  # nothing marked sent or lost
    (first_attempts, first_error, _), (second_attempts, _, _) = rows
    assert first_attempts == 1  # posted, and given up at the grace, not at its 10 s timeout
    assert str(first_error).startswith("timeout")
    assert second_attempts == 0  # no time left to start the other channel's post


@pytest.mark.parametrize(
    "case", [("1m", 0.0, logging.INFO), ("2s", 3.0, logging.WARNING)], ids=["fresh", "overdue"]
)
def test_a_cycle_skipped_beside_a_running_one_warns_only_once_that_one_is_overdue(
    tmp_path: Path,
    sim: Simulator,
    stub: SlackStub,
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, float, int],
) -> None:
    """A cycle asked for while another runs (a promotion's or a reload's beside the schedule's:
    routine) is skipped at INFO; one running for longer than an interval is a WARNING."""
    every, running_for, level = case
    config = write_daemon_config(
        tmp_path / "c.yaml",
        sim,
        stub,
        free_port(),
        EVERY_KEY,
        every=every,
        timeout=30,
        retry_max_elapsed=30,
    )
    sim.faults.delay_export(running_for + 3.0)
    daemon = Daemon.from_path(config, env={"LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN})
    first = threading.Thread(target=daemon.run_cycle)
    try:
        first.start()
        wait_for(lambda: len(sim.requests) >= 1, 30, "the first cycle's export")
        time.sleep(running_for)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="costwatch"):
            daemon.run_cycle()
        skipped = [r for r in caplog.records if r.getMessage().startswith("a cycle is still")]
        assert [r.levelno for r in skipped] == [level], caplog.text
    finally:
        first.join(60)
        daemon.shutdown()
    assert not first.is_alive()
