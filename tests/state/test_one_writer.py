"""One writer per state file, proved with real processes: two `costwatch run`, `check` beside
a running daemon, a run whose metrics port is taken, restarts after SIGTERM and SIGKILL; and
the cycle's ledger read and commit as one transaction, with two states in two threads."""

from __future__ import annotations

import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import IO

import httpx
import pytest
from loopback import free_port, wait_for, write_daemon_config
from slackstub import TOKEN, SlackStub

from costwatch import cycle
from costwatch.cli.check import STATE_WAIT_SECONDS
from costwatch.config import Config, load_config
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
EXPORT = EXAMPLES / "export-2026-11.csv"
NOW = "2026-11-20T12:00:00+00:00"
SECRET = "sk-one-writer-key"
BUDGETS = 4
ENV = {**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN}


def budgets(count: int = BUDGETS) -> str:
    """`count` shared pools over every key: one alert each, its budget named in the text."""
    return "".join(
        f'  - name: b{n:02d}\n    scope: shared\n    keys: "*"\n    limits: {{cost_usd: 0.01}}\n'
        for n in range(count)
    )


def config(path: Path, sim: Simulator, stub: SlackStub, port: int | None = None) -> Path:
    """A daemon configuration; every file written into one folder shares its state.db."""
    return write_daemon_config(
        path,
        sim,
        stub,
        port or free_port(),
        budgets(),
        shutdown_grace="5s",
        slack="  digest_after: 1000\n",
        defaults="  thresholds: [100]\n  forecast: false\n",
    )


def port_of(config_file: Path) -> int:
    return int(config_file.read_text(encoding="utf-8").split("listen: 127.0.0.1:")[1].split()[0])


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=6), api_key=SECRET) as server:
        yield server


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub() as server:
        server.add_channel("#ai-spend")
        yield server


class Process:
    """A costwatch command as a child process, its stderr read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "costwatch", *args],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        assert self.popen.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.popen.stderr,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, text: str, seconds: float) -> str:
        """The first stderr line that contains `text`; fails after `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.err.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {seconds}s: {''.join(self.err)}")

    def finish(self, seconds: float) -> tuple[int, str]:
        """Wait for the process to end on its own; its exit code and whole stderr."""
        try:
            code = self.popen.wait(timeout=seconds)
        finally:
            self.kill()
        while not self.lines.empty():
            self.err.append(self.lines.get())
        return code, "".join(self.err)

    def stop(self, signum: int = signal.SIGTERM, seconds: float = 30) -> tuple[int, str]:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
        return self.finish(seconds)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=30)
        self._reader.join(timeout=30)
        if self.popen.stderr is not None:
            self.popen.stderr.close()


def run(config_file: Path) -> Process:
    return Process("run", "--config", str(config_file))


def check(config_file: Path, *extra: str) -> Process:
    """`costwatch check` of the saved example export (every pool over its limit)."""
    csv = ("--csv", str(EXPORT), "--now", NOW)
    return Process("check", "--config", str(config_file), *csv, *extra)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def posted(stub: SlackStub) -> Counter[str]:
    """Accepted posts per budget, from each message's text."""
    found: Counter[str] = Counter()
    for post in stub.posts():
        text = str(post.body.get("text", ""))
        found.update(f"b{n:02d}" for n in range(BUDGETS) if f"(budget b{n:02d}" in text)
    return found


def unsent(state: Path) -> int:
    """Outbox rows not yet sent, read with a plain connection of the test's own."""
    with closing(sqlite3.connect(state)) as db:
        return int(db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])


def rows(state: Path) -> int:
    """Outbox rows, sent or not."""
    with closing(sqlite3.connect(state)) as db:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


# -- two daemons ----------------------------------------------------------------------------------


def test_a_second_run_on_the_same_state_file_exits_2_at_once_naming_the_file_and_the_holder(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    first_config = config(tmp_path / "first.yaml", sim, stub)
    second_config = config(tmp_path / "second.yaml", sim, stub)  # its own port, the same state
    state = tmp_path / "state.db"
    first = run(first_config)
    try:
        wait_for(lambda: healthy(port_of(first_config)), 30, "the first daemon")
        second = run(second_config)
        code, err = second.finish(30)  # at once: it waits for nothing
        assert code == 2, err
        assert f"cannot start: {state} is in use by costwatch run (pid {first.pid} on" in err
        assert "one process at a time writes a state file" in err
        assert "Traceback" not in err
        assert not healthy(port_of(second_config))  # it never served
        wait_for(lambda: sum(posted(stub).values()) >= BUDGETS, 30, "the first daemon's alerts")
        wait_for(lambda: unsent(state) == 0, 30, "the outbox emptied")
        assert first.popen.poll() is None  # the first keeps running
    finally:
        code, err = first.stop()
    assert code == 0, err
    assert posted(stub) == Counter({f"b{n:02d}": 1 for n in range(BUDGETS)})  # each alert once


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_lock_is_released_when_run_exits_so_a_restart_right_after_starts(
    tmp_path: Path, sim: Simulator, stub: SlackStub, signum: int
) -> None:
    config_file = config(tmp_path / "costwatch.yaml", sim, stub)
    port = port_of(config_file)
    first = run(config_file)
    try:
        wait_for(lambda: healthy(port), 30, "the first daemon")
    finally:
        first.stop(signum)
    again = run(config_file)
    try:
        wait_for(lambda: healthy(port) or again.popen.poll() is not None, 30, "the restart")
        assert again.popen.poll() is None, again.finish(5)
    finally:
        code, err = again.stop()
    assert code == 0, err


# -- start-up: nothing delivered before it fully succeeded --------------------------------------


def test_a_run_whose_metrics_port_is_taken_exits_2_having_posted_nothing(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    config_file = config(tmp_path / "costwatch.yaml", sim, stub)
    queued = check(config_file, "--queue-only")  # plans the alerts into the outbox, no more
    code, err = queued.finish(60)
    assert code == 1, err
    assert unsent(tmp_path / "state.db") == BUDGETS  # the outbox has rows to deliver
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port_of(config_file)))
        taken.listen()
        code, err = run(config_file).finish(30)
    assert code == 2, err
    assert "cannot serve metrics on 127.0.0.1:" in err
    assert stub.posts() == []  # nothing was delivered
    assert unsent(tmp_path / "state.db") == BUDGETS
    again = run(config_file)  # the lock went with the failed process: a restart starts
    try:
        wait_for(lambda: unsent(tmp_path / "state.db") == 0, 30, "delivery after a good start")
    finally:
        code, err = again.stop()
    assert code == 0, err
    assert len(stub.posts()) == rows(tmp_path / "state.db")  # each row posted once, after all


# -- check beside a daemon ----------------------------------------------------------------------


def test_check_beside_a_running_daemon_waits_then_refuses_with_exit_2_naming_the_holder(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    config_file = config(tmp_path / "costwatch.yaml", sim, stub)
    daemon = run(config_file)
    try:
        wait_for(lambda: healthy(port_of(config_file)), 30, "the daemon")
        checking = check(config_file)
        checking.wait_for_line("waiting", 30)
        started = time.monotonic()
        code, err = checking.finish(STATE_WAIT_SECONDS + 30)
        waited = time.monotonic() - started
        assert code == 2, err
        state = tmp_path / "state.db"
        assert f"costwatch: {state} is in use by costwatch run (pid {daemon.pid} on" in err
        assert "one process at a time writes a state file" in err
        assert waited >= STATE_WAIT_SECONDS * 0.5  # it did wait before giving up
        assert "Traceback" not in err
        assert daemon.popen.poll() is None  # the daemon is undisturbed
    finally:
        code, err = daemon.stop()
    assert code == 0, err


HOLD_UNTIL_TOLD = """
import sys
from pathlib import Path
from costwatch.state import SqliteState

with SqliteState.open(Path(sys.argv[1]), command="a test holding the lock"):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_check_waits_for_a_holder_that_lets_go_within_the_wait_and_then_runs(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    config_file = config(tmp_path / "costwatch.yaml", sim, stub)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_UNTIL_TOLD, str(tmp_path / "state.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        checking = check(config_file, "--queue-only")
        line = checking.wait_for_line("waiting", 30)
        assert "in use by a test holding the lock (pid " in line
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "released\n"
        code, err = checking.finish(60)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert code == 1, err  # it ran its cycle: budgets crossed
    assert unsent(tmp_path / "state.db") == BUDGETS


def test_check_dry_run_beside_a_running_daemon_neither_waits_nor_writes(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    config_file = config(tmp_path / "costwatch.yaml", sim, stub)
    daemon = run(config_file)
    try:
        wait_for(lambda: healthy(port_of(config_file)), 30, "the daemon")
        code, err = check(config_file, "--dry-run").finish(60)
        assert code == 1, err
        assert "waiting" not in err
    finally:
        code, err = daemon.stop()
    assert code == 0, err


# -- the cycle's ledger read and commit: one transaction -----------------------------------------


def cycle_config(tmp_path: Path, name: str) -> tuple[Config, Path]:
    """config/examples/per-key.yaml with a state file of its own (7 alerts on the export)."""
    path = tmp_path / f"{name}.db"
    text = (EXAMPLES / "per-key.yaml").read_text(encoding="utf-8")
    source = tmp_path / f"{name}.yaml"
    source.write_text(
        text.replace("schedule:", f"state:\n  path: {path}\nschedule:", 1), encoding="utf-8"
    )
    return load_config(source, {"LANGDOCK_API_KEY": "unused-with-csv"}), path


def cycles_at_once(loaded: Config, path: Path, threads: int) -> list[int]:
    """`threads` cycles at the same moment, each through a `SqliteState` of its own on `path`;
    how many alerts each one planned."""
    barrier = threading.Barrier(threads, timeout=30)
    planned: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with SqliteState.open(path) as state:
                deps = cycle.Deps(config=loaded, csv=EXPORT, state=state)
                barrier.wait()
                planned.append(len(cycle.run_once(deps, datetime.fromisoformat(NOW)).outbox_ids))
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)

    started = [threading.Thread(target=work) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    assert not errors, errors
    return planned


def test_cycles_of_three_states_in_three_threads_plan_each_alert_once(tmp_path: Path) -> None:
    """Three `SqliteState`s of one process on one file (the writer lock is the process's, so all
    may write) run the same cycle at the same moment, round after round: whichever reaches the
    ledger later sees what the first committed, so no alert is planned twice."""
    for round_ in range(6):
        loaded, path = cycle_config(tmp_path, f"state-{round_}")
        SqliteState.open(path).close()
        planned = cycles_at_once(loaded, path, 3)
        assert sorted(planned) == [0, 0, 7], (round_, planned)  # one planned all, none twice
