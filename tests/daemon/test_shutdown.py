"""SIGTERM is honoured whatever hangs: `costwatch run` as a real process, SIGTERMed while an
export request, a download, a retry sleep, a Slack post or a Slack Retry-After is in flight.

Each case asserts the process behaviour: exit 0 within `shutdown_grace` plus a second, a cycle
cut short is logged at INFO as interrupted (no ERROR, no traceback), `cycles_total` never
counts it as an error, and the state file stays sound.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import Peer, free_port, wait_for, write_daemon_config
from slackstub import TOKEN, SlackStub
from stuckpeer import StuckPeer

from costwatch.simulator import Simulator, Workspace

SECRET = "sk-lang-SHUTDOWN-SECRET-0042"
GRACE = 5.0
EVERY_KEY = """\
  - name: every-key
    keys: "*"
    limits: {cost_usd: 0.5}
"""


@dataclass
class Daemon:
    """A `costwatch --log-format json run` process and where its metrics are."""

    process: subprocess.Popen[str]
    metrics: str
    state: Path

    def scrape(self) -> str | None:
        try:
            return httpx.get(f"{self.metrics}/metrics", timeout=2.0).text
        except httpx.TransportError:
            return None

    def counter(self, name: str, outcome: str) -> float | None:
        text = self.scrape()
        if text is None:
            return None
        prefix = f'{name}{{outcome="{outcome}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.removeprefix(prefix))
        return None

    def terminate(self) -> tuple[float, list[dict[str, Any]], list[str]]:
        """SIGTERM; (seconds until it exited, its log entries, /metrics scrapes meanwhile).

        The exit is the moment `wait()` returns in a thread of its own, not the end of the
        scrape that happened to be running then: on a loaded machine a scrape of a daemon
        that is closing can take a good part of a second, which is not the daemon's."""
        exited: list[float] = []

        def wait() -> None:
            self.process.wait()
            exited.append(time.monotonic())

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        scrapes: list[str] = []
        while waiter.is_alive() and time.monotonic() - started < GRACE + 10:
            text = self.scrape()
            if text is not None:
                scrapes.append(text)
            time.sleep(0.1)
        _, err = self.process.communicate(timeout=30)
        waiter.join(5)
        seconds = exited[0] - started
        return seconds, [json.loads(line) for line in err.splitlines() if line.strip()], scrapes


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts the daemon against `peer` and `stub`; kills it at the end if it is still up."""
    processes: list[subprocess.Popen[str]] = []

    def launch(peer: Peer, stub: SlackStub, **options: Any) -> Daemon:
        port = free_port()
        options.setdefault("shutdown_grace", f"{GRACE:g}s")
        config = write_daemon_config(
            tmp_path / "costwatch.yaml", peer, stub, port, EVERY_KEY, **options
        )
        env = {**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN}
        command = [sys.executable, "-m", "costwatch", "--log-format", "json", "run"]
        process = subprocess.Popen(
            [*command, "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return Daemon(process, f"http://127.0.0.1:{port}", tmp_path / "state.db")

    yield launch
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as server:
        server.add_channel("#ai-spend")
        yield server


# Long enough that only a deadline or the shutdown can end them: a 60 s request timeout and a
# retry budget of five minutes.
PATIENT = {"timeout": 60, "retry_max_elapsed": 300, "max_attempts": 6, "every": "1h"}


def assert_clean_exit(daemon: Daemon, seconds: float, log: list[dict[str, Any]]) -> None:
    assert daemon.process.returncode == 0, log
    assert seconds < GRACE + 1, f"exited {seconds:.1f}s after SIGTERM"
    loud = [entry for entry in log if entry["level"] in ("error", "critical")]
    assert not loud, loud
    assert not [entry for entry in log if "exception" in entry], "a traceback was logged"
    assert log[-1]["message"] == "costwatch stopped"


def assert_no_error_cycles(scrapes: list[str]) -> None:
    for text in scrapes:
        assert 'costwatch_cycles_total{outcome="error"} 0.0' in text


def messages(log: list[dict[str, Any]], level: str) -> list[str]:
    return [entry["message"] for entry in log if entry["level"] == level]


@pytest.mark.parametrize("mode", ["silent", "trickle", "trickle_download"])
def test_sigterm_while_an_export_request_hangs_exits_within_the_grace_as_interrupted(
    mode: Any, start: Callable[..., Daemon], stub: SlackStub
) -> None:
    with StuckPeer(mode) as peer:
        daemon = start(peer, stub, **PATIENT)
        wanted = 2 if mode == "trickle_download" else 1  # the export, then its download
        wait_for(lambda: peer.connections >= wanted, 30, f"{wanted} connection(s) to the peer")
        time.sleep(1.0)  # well inside the request: a second of silence or trickle
        seconds, log, scrapes = daemon.terminate()

    assert_clean_exit(daemon, seconds, log)
    assert any(m.startswith("cycle interrupted by shutdown") for m in messages(log, "info"))
    assert not any(m.startswith("a cycle is still running") for m in messages(log, "warning"))
    assert_no_error_cycles(scrapes)
    with sqlite3.connect(daemon.state) as db:  # sound, and nothing of the cycle recorded
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    db.close()


def test_sigterm_during_an_export_retry_sleep_exits_within_the_grace_as_interrupted(
    start: Callable[..., Daemon], stub: SlackStub
) -> None:
    with Simulator(Workspace(keys=3), api_key=SECRET) as sim:
        sim.faults.fail_export(503, times=10, retry_after="120")
        daemon = start(sim, stub, **PATIENT)
        wait_for(lambda: len(sim.requests) >= 1, 30, "the first export attempt")
        time.sleep(1.0)  # inside the 120 s Retry-After
        seconds, log, scrapes = daemon.terminate()

    assert_clean_exit(daemon, seconds, log)
    assert any(m.startswith("cycle interrupted by shutdown") for m in messages(log, "info"))
    assert_no_error_cycles(scrapes)


def test_sigterm_while_slack_rate_limits_for_an_hour_exits_at_once_and_keeps_the_rows(
    start: Callable[..., Daemon], stub: SlackStub
) -> None:
    stub.retry_after = 3600
    stub.fail_next(429, times=1000)
    with Simulator(Workspace(keys=3), api_key=SECRET) as sim:
        daemon = start(sim, stub, every="1h")
        wait_for(lambda: len(stub.requests) >= 2, 30, "the 429s of more than one post")
        seconds, log, _ = daemon.terminate()

    assert_clean_exit(daemon, seconds, log)
    assert not stub.posts()
    with sqlite3.connect(daemon.state) as db:
        pending = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
    db.close()
    assert pending >= 1  # every alert still waits for Slack


def test_sigterm_during_a_capped_slack_retry_after_ends_the_wait(
    start: Callable[..., Daemon], stub: SlackStub
) -> None:
    stub.retry_after = 25  # under the cap: slept, but through a wait that shutdown ends
    stub.fail_next(429, times=1000)
    with Simulator(Workspace(keys=3), api_key=SECRET) as sim:
        daemon = start(sim, stub, every="1h")
        wait_for(lambda: len(stub.requests) >= 1, 30, "the first 429")
        time.sleep(1.0)  # inside the 25 s wait
        seconds, log, _ = daemon.terminate()

    assert_clean_exit(daemon, seconds, log)
    assert not stub.posts()


def test_sigterm_while_a_slack_post_hangs_exits_within_the_grace(
    start: Callable[..., Daemon], stub: SlackStub
) -> None:
    stub.delay_next(60, times=1000)  # Slack takes every request and answers none in time
    with Simulator(Workspace(keys=3), api_key=SECRET) as sim:
        daemon = start(sim, stub, every="1h")
        wait_for(lambda: daemon.counter("costwatch_cycles_total", "ok") == 1, 30, "a cycle")
        time.sleep(1.0)  # the first post is in flight
        seconds, log, _ = daemon.terminate()

    assert daemon.process.returncode == 0
    assert seconds < GRACE + 1, f"exited {seconds:.1f}s after SIGTERM"
    assert not [entry for entry in log if "exception" in entry]
    with sqlite3.connect(daemon.state) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        pending = db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
    db.close()
    assert pending >= 1  # nothing marked sent that Slack did not accept


def test_cycles_keep_running_while_slack_delivery_waits_out_a_retry_after(
    start: Callable[..., Daemon], stub: SlackStub
) -> None:
    stub.retry_after = 20
    stub.fail_next(429, times=1000)
    with Simulator(Workspace(keys=3), api_key=SECRET) as sim:
        daemon = start(sim, stub, every="1s")
        wait_for(lambda: len(stub.requests) >= 1, 30, "the first 429")
        # While the first post waits its 20 s, cycles go on every second.
        wait_for(
            lambda: (daemon.counter("costwatch_cycles_total", "ok") or 0) >= 4,
            15,
            "four cycles while delivery waits",
        )
        seconds, log, _ = daemon.terminate()

    assert_clean_exit(daemon, seconds, log)
    assert not any("skipping this one" in m for m in messages(log, "warning"))
