"""`costwatch demo` as a newcomer runs it: a forecast, 50%, 80% and 100% within two minutes."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from loopback import free_port

from costwatch import demo
from costwatch.slack.render import Rendered
from costwatch.slack.terminal import TerminalSender


@pytest.mark.slow
def test_demo_shows_forecast_50_80_and_100_percent_alerts_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "costwatch", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    wanted = {
        "forecast": re.compile(r"support-bot-prod is on course for \$[\d,.]+ by \w+ \d+"),
        "50%": re.compile(r"support-bot-prod at \d+% of its \$30 monthly budget"),
        "80%": re.compile(r"warning, 80% threshold reached"),
        "100%": re.compile(r"critical, 100% threshold reached"),
    }
    seen: dict[str, float] = {}
    started = time.monotonic()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            for name, pattern in wanted.items():
                if name not in seen and pattern.search(line):
                    seen[name] = time.monotonic() - started

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = started + 150
        while len(seen) < len(wanted) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert set(seen) == set(wanted), "".join(lines[-80:])
        assert max(seen.values()) < 120  # within two minutes
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert "costwatch stopped" in err
    assert "http://127.0.0.1:" in "".join(lines[:6])  # where the metrics are


def time_wait_on(port: int) -> socket.socket:
    """A connection accepted on `port` and closed there first: that side waits in TIME_WAIT."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first, as the metrics server does
    listener.close()
    client.recv(1)  # the FIN arrived
    return client


def test_the_demo_keeps_its_preferred_port_after_an_earlier_run_left_it_in_time_wait() -> None:
    port = free_port()
    client = time_wait_on(port)
    try:
        assert demo.free_port("127.0.0.1", port) == port
    finally:
        client.close()


def test_the_demo_moves_off_a_port_something_listens_on() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert demo.free_port("127.0.0.1", taken) != taken


class SlowTerminal(io.StringIO):
    """A terminal that takes its time over each write, as a busy one does."""

    def write(self, text: str) -> int:
        written = super().write(text)
        time.sleep(0.002)
        return written


def test_log_lines_wait_for_a_slack_box_and_never_land_inside_it() -> None:
    terminal = SlowTerminal()
    sender = TerminalSender(terminal)
    logger = logging.getLogger("costwatch.demo.test")
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    message = Rendered(text="\n".join(f"line {n} of the alert" for n in range(20)))
    try:
        with demo.logs_between_messages(sender.lock):

            def chatter() -> None:
                for n in range(200):
                    logger.info("cycle %d", n)

            talker = threading.Thread(target=chatter)
            talker.start()
            for _ in range(10):
                sender.post("#ai-spend", message)
            talker.join(timeout=30)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = terminal.getvalue().splitlines()
    rule = "─" * 72
    inside = False
    for line in lines:
        if line == rule:
            inside = not inside
        else:
            assert not (inside and "LOG" in line), line
            assert rule not in line, line  # a log line glued to a box's edge
    assert not inside
    assert sum(1 for line in lines if line.startswith("LOG cycle")) == 200
