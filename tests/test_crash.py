"""Crash safety over a real SQLite file: a cycle killed anywhere loses and repeats no alert."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"
NOW = "2026-11-20T12:00:00+00:00"
EXPECTED_ALERTS = 7  # what config/examples/per-key.yaml plans for the example export


def config_with_state(tmp_path: Path) -> Path:
    text = (EXAMPLES / "per-key.yaml").read_text(encoding="utf-8")
    text = text.replace("schedule:", f"state:\n  path: {tmp_path / 'state.db'}\nschedule:", 1)
    path = tmp_path / "costwatch.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def check_command(config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "costwatch",
        "check",
        "--config",
        str(config),
        "--csv",
        str(EXAMPLES / "export-2026-11.csv"),
        "--now",
        NOW,
    ]


def outbox_identities(state: Path) -> Counter[tuple[object, ...]]:
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT payload FROM outbox WHERE kind = 'alert'").fetchall()
    db.close()
    payloads = [json.loads(row[0]) for row in rows]
    return Counter(
        (p["budget"], p["api_key_id"], p["model"], p["metric"], p["kind"], p["threshold"])
        for p in payloads
    )


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "LANGDOCK_API_KEY": "unused-with-csv"}


def test_the_same_cycle_twice_plans_each_alert_once(tmp_path: Path, env: dict[str, str]) -> None:
    config = config_with_state(tmp_path)
    for _ in range(2):
        done = subprocess.run(
            check_command(config), env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 1, done.stderr
    identities = outbox_identities(tmp_path / "state.db")
    assert len(identities) == EXPECTED_ALERTS
    assert set(identities.values()) == {1}
    assert "Alerts planned in this run: 0" in done.stdout
    assert f"Waiting in the outbox for delivery: {EXPECTED_ALERTS}" in done.stdout


def test_sigkill_at_random_points_of_a_cycle_loses_and_repeats_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = config_with_state(tmp_path)
    rng = random.Random(20261125)
    # How long a whole cycle takes here, so the kills land all over it.
    started = time.monotonic()
    subprocess.run([*check_command(config), "--dry-run"], env=env, capture_output=True, check=False)
    whole = time.monotonic() - started
    for _ in range(12):
        process = subprocess.Popen(
            check_command(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.0, whole * 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = subprocess.run(
        check_command(config), env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stderr
    identities = outbox_identities(tmp_path / "state.db")
    assert len(identities) == EXPECTED_ALERTS  # nothing that was due is missing
    assert set(identities.values()) == {1}  # and nothing was planned twice
