"""`costwatch demo` as a newcomer runs it: a forecast, 50%, 80% and 100% within two minutes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest


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
