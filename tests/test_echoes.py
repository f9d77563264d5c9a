"""Hostile input through a running daemon: echoes stay quoted and bounded, a FIFO secret never
hangs a reload. Each test runs `costwatch run` as a process against the simulator and the
Slack stand-in, over loopback.

- A 400 whose message carries a newline, ANSI escapes and a fake log line, then an export whose
  CSV header is one 20 MB line of hostile column names: every stderr line is still a log record
  (`<time> <LEVEL> <logger>: ...`), stderr stays small, and `/readyz` answers one short line.
- A reload onto a configuration whose `api_key_file` is a FIFO is refused at once, naming the
  path, and SIGTERM afterwards stops the daemon within its grace period.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from loopback import free_port, wait_for, write_daemon_config
from slackstub import TOKEN, SlackStub

from costwatch.simulator import Simulator, Workspace

SECRET = "sk-lang-ECHO-k3y-0042"
GRACE = 3  # seconds of shutdown grace in these daemons
RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
FORGED = "\n2026-11-20 12:00:00,000 ERROR costwatch: \x1b[31mforged line\x1b[0m\r\u2028"
EVERY_KEY = '  - name: every-key\n    keys: "*"\n    limits: {cost_usd: 0.5}\n'


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=3), api_key=SECRET) as server:
        yield server


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as server:
        server.add_channel("#ai-spend")
        yield server


def start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "costwatch", "run", "--config", str(config)],
        env={**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, float]:
    """SIGTERM; the stderr and how long the process took to exit (killed after grace + 10 s)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=GRACE + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err, time.monotonic() - started


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def hostile_header(size: int) -> bytes:
    names = [f"col{n}{FORGED}" for n in range(size // (len(FORGED) + 8))]
    header = ",".join('"' + name.replace('"', '""') + '"' for name in names)
    return (header + "\r\n1,2\r\n").encode()


def test_hostile_server_text_and_a_20_mb_header_reach_logs_and_readyz_quoted_and_bounded(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    port = free_port()
    body = '{"error": "Bad request", "message": %s}' % repr(FORGED).replace("'", '"')  # noqa: UP031
    sim.faults.fail_export(400, body=body.encode())
    sim.faults.download_content(hostile_header(20_000_000), times=1000)
    sim.faults.announce_records(1, times=1000)  # its one row, so it reaches the loader
    config = write_daemon_config(
        tmp_path / "costwatch.yaml", sim, stub, port, EVERY_KEY, shutdown_grace=f"{GRACE}s"
    )
    process = start(config)
    readyz: list[str] = []
    try:

        def refused_csv() -> bool:
            answer = get(f"http://127.0.0.1:{port}/readyz")
            if answer is not None and "missing required column" in answer.text:
                readyz.append(answer.text)
            return bool(readyz)

        wait_for(refused_csv, 60, "/readyz naming the refused CSV")
    finally:
        err, _ = stop(process)

    assert len(readyz[0]) < 2000
    assert readyz[0].count("\n") == 1  # one line, ended
    assert "\x1b" not in readyz[0]
    assert "\\x1b[31mforged" in readyz[0]  # quoted, not dropped
    assert "Langdock rejected the export request (400)" in err
    assert "\x1b" not in err
    assert "\u2028" not in err
    assert len(err) < 100_000  # a 20 MB header, echoed in a few hundred characters per line
    for line in err.splitlines():
        assert RECORD.match(line) or line.startswith(("Traceback", " ", "costwatch")), line


def test_a_reload_onto_a_fifo_secret_is_refused_and_sigterm_still_stops_within_grace(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    port = free_port()
    path = tmp_path / "costwatch.yaml"
    config = write_daemon_config(path, sim, stub, port, EVERY_KEY, shutdown_grace=f"{GRACE}s")
    fifo = tmp_path / "langdock-key"
    os.mkfifo(fifo)
    process = start(config)
    lines: list[str] = []
    stderr = process.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")))
    reader.start()
    try:
        wait_for(lambda: any("cycle ok" in line for line in lines), 60, "the first good cycle")
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace("  api_key: ${LANGDOCK_API_KEY}\n", f"  api_key_file: {fifo}\n"),
            encoding="utf-8",
        )
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("not reloaded" in line for line in lines), 30, "the refused reload")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=GRACE + 10)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        with process:  # closes the pipes
            pass
    err = "".join(lines)
    assert process.returncode == 0, err
    assert took < GRACE + 2
    assert f"'{fifo}' is a FIFO (named pipe), not a regular file with the secret" in err
