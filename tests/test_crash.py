"""Crash safety over a real SQLite file: a cycle killed anywhere loses and repeats no alert."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from loopback import free_port, write_daemon_config
from slackstub import TOKEN, SlackStub

from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

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


# -- the daemon, delivery included, killed 50 times against one state file ---------------------

KILLS = 50
BASE_BUDGETS = 8
BUDGET_IN_TEXT = re.compile(r"\(budget (b\d{2})\b")


def daemon_config(
    path: Path, sim: Simulator, stub: SlackStub, budgets: int, port: int | None = None
) -> Path:
    """One alert per budget (a shared pool over every key, one threshold, no forecast), on two
    channels, paced so that delivering them takes a while and kills land inside it."""
    lines = [
        f"  - name: b{n:02d}\n"
        '    scope: shared\n    keys: "*"\n    limits: {cost_usd: 0.01}\n'
        f'    channel: "#c{n % 2}"\n'
        for n in range(budgets)
    ]
    return write_daemon_config(
        path,
        sim,
        stub,
        port or free_port(),
        "".join(lines),
        shutdown_grace="5s",
        channel="#c0",
        min_interval=0.15,
        slack="  digest_after: 1000\n",
        defaults="  thresholds: [100]\n  forecast: false\n",
    )


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def outbox_by_budget(state: Path) -> tuple[Counter[str], set[str]]:
    """(alert rows per budget, budgets whose row is not marked sent)."""
    planned: Counter[str] = Counter()
    if not state.exists():
        return planned, set()
    with sqlite3.connect(state) as db:
        try:
            rows = db.execute("SELECT payload, sent_at FROM outbox WHERE kind = 'alert'").fetchall()
        except sqlite3.OperationalError:  # killed before the schema was created
            rows = []
    db.close()
    unsent: set[str] = set()
    for payload, sent_at in rows:
        budget = json.loads(payload)["budget"]
        planned[budget] += 1
        if sent_at is None:
            unsent.add(budget)
    return planned, unsent


def posted(stub: SlackStub) -> Counter[str]:
    """Accepted posts per budget, read from each message's notification text."""
    found: Counter[str] = Counter()
    for post in stub.posts():
        match = BUDGET_IN_TEXT.search(str(post.body.get("text", "")))
        assert match is not None, post.body.get("text")
        found[match[1]] += 1
    return found


@pytest.mark.slow
def test_the_daemon_killed_50_times_delivers_every_alert_once_outside_the_window(
    tmp_path: Path,
) -> None:
    """SIGKILL `costwatch run` 50 times at random moments (0.2-1.5 s after the start: during
    start-up, the cycle, its commit, or Slack delivery) against one state file, with one more
    budget in the file before every restart so that every run has an alert of its own to plan
    and deliver. Then a clean run until the outbox is empty.

    Each budget yields exactly one alert, and its name is in the message's text, so the posts
    the Slack stand-in accepted can be counted per alert. The one documented window is between
    Slack accepting a post and `mark_sent` committing: after each kill, an alert whose post the
    stand-in has accepted but whose outbox row is still unsent is "in the window", and will be
    posted again. So afterwards every alert has exactly one outbox row (planned once), at least
    one accepted post (nothing lost), and more than one only if it was in the window at a kill,
    at most once more per such kill.
    """
    rng = random.Random(20261125)
    state = tmp_path / "state.db"
    env = {**os.environ, "LANGDOCK_API_KEY": "sk-crash-key", "SLACK_BOT_TOKEN": TOKEN}
    windows: Counter[str] = Counter()
    with Simulator(Workspace(keys=6), api_key="sk-crash-key") as sim, SlackStub() as stub:
        stub.add_channel("#c0")
        stub.add_channel("#c1")
        config = tmp_path / "costwatch.yaml"
        command = [sys.executable, "-m", "costwatch", "run", "--config", str(config)]
        for kill in range(KILLS):
            daemon_config(config, sim, stub, BASE_BUDGETS + kill)
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.2, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            _, unsent = outbox_by_budget(state)
            for budget in set(posted(stub)) & unsent:
                windows[budget] += 1

        budgets = BASE_BUDGETS + KILLS
        port = free_port()
        daemon_config(config, sim, stub, budgets, port)
        final = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while not healthy(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            while time.monotonic() < deadline:
                planned, unsent = outbox_by_budget(state)
                if len(planned) == budgets and not unsent:
                    break
                time.sleep(0.2)
            final.send_signal(signal.SIGTERM)
            _, err = final.communicate(timeout=30)
        finally:
            if final.poll() is None:
                final.kill()
                final.communicate()
        assert final.returncode == 0, err
        sent = posted(stub)

    planned, unsent = outbox_by_budget(state)
    expected = {f"b{n:02d}" for n in range(budgets)}
    assert set(planned) == expected  # every alert that was due was planned...
    assert set(planned.values()) == {1}  # ...once
    assert unsent == set()
    assert set(sent) == expected  # and delivered
    duplicates = {b: n - 1 for b, n in sent.items() if n > 1}
    for budget, extra in duplicates.items():
        assert extra <= windows[budget], (budget, extra, windows[budget])
    print(
        f"{KILLS} kills; {sum(windows.values())} kill(s) inside the window; "
        f"{sum(duplicates.values())} duplicate post(s), all inside it"
    )


# -- a state file that cannot be used, through the commands as processes -----------------------


def run_command(
    config: Path, env: dict[str, str], *extra: str, limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`costwatch check` on the example export; `limit` caps the file size (RLIMIT_FSIZE: what
    a full disk looks like to root, EFBIG where a full disk says ENOSPC)."""

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return subprocess.run(
        [*check_command(config), *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        preexec_fn=cap,
    )


def run_daemon_briefly(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`costwatch run` where it cannot start: it must exit on its own, with 2."""
    return subprocess.run(
        [sys.executable, "-m", "costwatch", "run", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _corrupt(state: Path) -> None:
    state.write_bytes(random.Random(7).randbytes(8192))


def _directory(state: Path) -> None:
    state.mkdir()


def _under_a_file(state: Path) -> Path:
    state.parent.joinpath("not-a-folder").write_text("x", encoding="utf-8")
    return state.parent / "not-a-folder" / "state.db"


STARTUP_REFUSALS = {
    "corrupt (random bytes)": (_corrupt, "not a costwatch state file"),
    "a directory in its place": (_directory, "state"),
    "its parent is a file": (_under_a_file, "state"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(STARTUP_REFUSALS))
def test_a_state_file_that_cannot_be_used_stops_start_up_with_exit_2_and_is_left_alone(
    tmp_path: Path, env: dict[str, str], case: str, command: str
) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state.db"
    damage, message = STARTUP_REFUSALS[case]
    moved = damage(state)
    if isinstance(moved, Path):
        text = config.read_text(encoding="utf-8").replace(str(state), str(moved))
        config.write_text(text, encoding="utf-8")
        state = moved
    before = state.read_bytes() if state.is_file() else None
    done = run_command(config, env) if command == "check" else run_daemon_briefly(config, env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr.lower(), done.stderr
    assert "Traceback" not in done.stderr
    if before is not None:
        assert state.read_bytes() == before  # never replaced by a fresh file


def test_a_locked_state_file_fails_the_check_with_exit_2_and_the_next_one_plans_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state.db"
    with SqliteState.open(state):
        pass  # a current, empty state file
    # Another program (a sqlite3 shell, a replication tool: not costwatch, so it holds no writer
    # lock) holds SQLite's own write lock; the writer lock is free, so check gets that far.
    other = sqlite3.connect(state, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        done = run_command(config, env)
        assert done.returncode == 2, done.stderr
        assert "database is locked" in done.stderr
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert outbox_identities(state) == Counter()  # the failed check wrote nothing
    done = run_command(config, env)
    assert done.returncode == 1, done.stderr
    identities = outbox_identities(state)
    assert len(identities) == EXPECTED_ALERTS
    assert set(identities.values()) == {1}


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "existing file"])
def test_a_full_disk_fails_the_check_with_exit_2_and_the_file_stays_sound(
    tmp_path: Path, env: dict[str, str], existing: bool
) -> None:
    config = config_with_state(tmp_path)
    state = tmp_path / "state.db"
    if existing:
        with SqliteState.open(state):
            pass
    done = run_command(config, env, limit=4096)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "state" in done.stderr.lower(), done.stderr
    assert "afresh" not in done.stderr  # the file is sound: moving it away would re-send alerts
    assert state.exists() == existing  # no half-made file left behind
    done = run_command(config, env)  # space again: one cycle plans every alert, once
    assert done.returncode == 1, done.stderr
    identities = outbox_identities(state)
    assert len(identities) == EXPECTED_ALERTS
    assert set(identities.values()) == {1}


def cycles_failed(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return 0.0
    for line in text.splitlines():
        if line.startswith('costwatch_cycles_total{outcome="error"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_the_daemon_counts_cycles_failed_on_a_locked_state_and_catches_up_once_released(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    with SqliteState.open(state):
        pass
    env = {**os.environ, "LANGDOCK_API_KEY": "sk-lock-key", "SLACK_BOT_TOKEN": TOKEN}
    with Simulator(Workspace(keys=6), api_key="sk-lock-key") as sim, SlackStub() as stub:
        stub.add_channel("#c0")
        stub.add_channel("#c1")
        port = free_port()
        config = daemon_config(tmp_path / "costwatch.yaml", sim, stub, BASE_BUDGETS, port)
        # Another program (not costwatch: no writer lock) holds SQLite's own write lock.
        other = sqlite3.connect(state, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        process = subprocess.Popen(
            [sys.executable, "-m", "costwatch", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while cycles_failed(port) < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert cycles_failed(port) >= 1  # counted, and the daemon is still up
            assert outbox_by_budget(state)[0] == Counter()
            other.execute("ROLLBACK")
            while time.monotonic() < deadline + 30:
                planned, unsent = outbox_by_budget(state)
                if len(planned) == BASE_BUDGETS and not unsent:
                    break
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            other.close()
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        assert "cycle failed: " in err
        assert "cannot write the state: database is locked; the next cycle tries again" in err
        assert "Traceback" not in err  # an expected condition, said in one line
        sent = posted(stub)
    planned, unsent = outbox_by_budget(state)
    expected = {f"b{n:02d}" for n in range(BASE_BUDGETS)}
    assert (set(planned), set(planned.values()), unsent) == (expected, {1}, set())
    assert sent == Counter(dict.fromkeys(expected, 1))  # each alert delivered once
