"""Several `costwatch run` processes on one PostgreSQL state, with the simulator and the Slack
stand-in: one leads (runs cycles, delivers), the others stand by, and every due alert is
delivered exactly once outside the documented window, whatever happens to the leader or the
database. Real processes, a real database, real sockets; nothing of costwatch is mocked."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pgserver
import psycopg
import pytest
from loopback import free_port
from slackstub import TOKEN, SlackStub

from costwatch.simulator import Simulator, Workspace
from costwatch.state.pgschema import LEADER_LOCK, LOCK_CLASS

INTERVAL = 1.0  # schedule.every
LEASE = 3.0  # state.lease: standbys try every 0.3 s, the leader renews every second
# A standby's next try (lease / 10), then its first cycle: in a process that may have started
# a second ago (it is cold: polars, httpx and the first export), on a busy 2-core machine.
FAILOVER = 0.3 + 5.0
BUDGET_IN_TEXT = re.compile(r"\(budget (b\d{2})\b")
CYCLE_OK = re.compile(r"cycle ok in ([0-9.]+)s")  # the daemon's INFO line of each cycle
HOLDER_PID = re.compile(r"\(pid (\d+) on host")
ENV = {**os.environ, "LANGDOCK_API_KEY": "sk-replica-key", "SLACK_BOT_TOKEN": TOKEN}


@dataclass(frozen=True)
class Peers:
    """What every replica talks to: the simulator, the Slack stand-in, the database (or, for
    a SQLite installation, the state file's path)."""

    sim: Simulator
    stub: SlackStub
    url: str


def write_config(path: Path, peers: Peers, port: int, n: int) -> None:
    """One alert per budget (a shared pool over every key, one threshold, no forecast), on two
    channels, paced so that delivering them takes a while and kills land inside it."""
    budgets = "".join(
        f'  - name: b{i:02d}\n    scope: shared\n    keys: "*"\n    limits: {{cost_usd: 0.01}}\n'
        f'    channel: "#c{i % 2}"\n'
        for i in range(n)
    )
    sim, stub, url = peers.sim, peers.stub, peers.url
    postgres = url.startswith("postgresql://")  # else the SQLite file at that path
    state = f"  url: {url}\n  lease: {LEASE:g}s\n" if postgres else f"  path: {url}\n"
    text = f"""\
langdock:
  base_url: {sim.base_url}
  api_key: ${{LANGDOCK_API_KEY}}
  allow_insecure_download: true
  timeout_seconds: 5
  retry_max_elapsed_seconds: 1
  max_attempts: 2
schedule:
  every: {INTERVAL:g}s
  timezone: Europe/Berlin
  shutdown_grace: 5s
state:
{state}slack:
  token: ${{SLACK_BOT_TOKEN}}
  channel: "#c0"
  api_url: {stub.api_url}
  min_interval_seconds: 0.15
  retry_every: 1s
  digest_after: 1000
metrics:
  listen: 127.0.0.1:{port}
defaults:
  thresholds: [100]
  forecast: false
budgets:
{budgets}"""
    temporary = path.with_suffix(".new")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)  # a reload never reads half a file


@dataclass
class Replica:
    """One `costwatch run` with its own configuration file and metrics port."""

    config: Path
    port: int
    process: subprocess.Popen[str] | None = None
    logs: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "costwatch", "run", "--config", str(self.config)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.logs.append(self.process.communicate(timeout=30)[1])

    def stop(self) -> int:
        """SIGTERM, and the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.logs.append(self.process.communicate(timeout=30)[1])
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
        return self.process.returncode

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)
        except httpx.TransportError:
            return None

    def metric(self, name: str) -> float | None:
        answer = self.get("/metrics")
        if answer is None:
            return None
        found = re.search(rf"^{re.escape(name)} (\S+)$", answer.text, re.MULTILINE)
        return float(found[1]) if found else None


def query(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as db:
        return db.execute(sql.encode(), params).fetchall()


def leader_pid(url: str) -> int | None:
    """The OS pid of the process holding the leader lock now (from the epoch's holder)."""
    rows = query(
        url,
        "SELECT l.holder FROM costwatch.leader l WHERE EXISTS (SELECT 1 FROM pg_locks"
        " WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s"
        " AND objsubid = 2 AND database = (SELECT oid FROM pg_database"
        " WHERE datname = current_database()))",
        LOCK_CLASS,
        LEADER_LOCK,
    )
    match = HOLDER_PID.search(str(rows[0][0])) if rows else None
    return int(match[1]) if match else None


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            value = condition()
            if value:
                return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def outbox(url: str) -> tuple[Counter[str], set[str]]:
    """(alert rows per budget, budgets whose row is not marked sent)."""
    try:
        rows = query(url, "SELECT payload, sent_at FROM costwatch.outbox WHERE kind = 'alert'")
    except psycopg.errors.UndefinedTable:
        return Counter(), set()
    planned: Counter[str] = Counter()
    unsent: set[str] = set()
    for payload, sent_at in rows:
        budget = json.loads(str(payload))["budget"]
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


class CycleWatch:
    """Every committed cycle, seen as a new `export_health.last_success` (each successful
    cycle writes its `now` there), polled every 20 ms in a thread; the largest gap."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.seen: list[datetime] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> CycleWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(psycopg.Error):
                rows = query(self._url, "SELECT last_success FROM costwatch.export_health")
                if (
                    rows
                    and rows[0][0] is not None
                    and (not self.seen or rows[0][0] != self.seen[-1])
                ):
                    assert isinstance(rows[0][0], datetime)
                    self.seen.append(rows[0][0])

    def largest_gap(self) -> float:
        return max(
            ((b - a).total_seconds() for a, b in zip(self.seen, self.seen[1:], strict=False)),
            default=0.0,
        )


@contextlib.contextmanager
def replicas(count: int, tmp_path: Path, peers: Peers, budgets: int) -> Iterator[list[Replica]]:
    started = []
    for n in range(count):
        replica = Replica(tmp_path / f"replica-{n}.yaml", free_port())
        write_config(replica.config, peers, replica.port, budgets)
        replica.start()
        started.append(replica)
    try:
        yield started
    finally:
        for replica in started:
            if replica.process is not None and replica.process.poll() is None:
                replica.process.kill()
                replica.process.communicate()


def healthy(replica: Replica) -> bool:
    answer = replica.get("/healthz")
    return answer is not None and answer.status_code == 200


def cycled_after(cycles: CycleWatch, moment: datetime) -> bool:
    return cycles.seen[-1] > moment


def all_delivered(url: str, budgets: int) -> bool:
    planned, unsent = outbox(url)
    return len(planned) == budgets and not unsent


def assert_once_outside_the_window(
    url: str, stub: SlackStub, budgets: int, windows: Counter[str]
) -> Counter[str]:
    planned, unsent = outbox(url)
    expected = {f"b{n:02d}" for n in range(budgets)}
    assert set(planned) == expected  # every alert that was due was planned...
    assert set(planned.values()) == {1}  # ...once
    assert unsent == set()
    sent = posted(stub)
    assert set(sent) == expected  # and delivered
    duplicates = Counter({b: n - 1 for b, n in sent.items() if n > 1})
    for budget, extra in duplicates.items():
        assert extra <= windows[budget], (budget, extra, windows[budget])
    return duplicates


KILLS = 30
BASE = 4


@pytest.mark.slow
def test_three_replicas_the_leader_killed_30_times_deliver_every_alert_once_without_gaps(
    tmp_path: Path,
) -> None:
    """Three replicas; 30 times, one more budget is added (so each round has an alert of its
    own to plan and deliver), and after a random 0.3 to 2 s (and once every replica is up) the
    leader is SIGKILLed and started again (as a standby now). The window: an alert whose post
    the stand-in accepted while its row was still unsent when the leader died will be posted
    again by the next leader; any other duplicate fails the test. After each kill the test
    waits for the next leader's first committed cycle (a leader killed before its first cycle
    would say nothing of failover): each failover (the kill to the next leader's first cycle)
    within FAILOVER, and no gap between committed cycles longer than one interval plus the
    failover, the cycles' own length (as the replicas logged it) counted in."""
    rng = random.Random(20261201)
    windows: Counter[str] = Counter()
    failovers: list[float] = []  # per kill: from the kill to the next leader's first cycle
    with (
        pgserver.database() as url,
        Simulator(Workspace(keys=6), api_key="sk-replica-key") as sim,
        SlackStub() as stub,
    ):
        stub.add_channel("#c0")
        stub.add_channel("#c1")
        peers = Peers(sim, stub, url)
        with replicas(3, tmp_path, peers, BASE) as group, CycleWatch(url) as cycles:
            by_pid = {replica.pid: replica for replica in group}
            wait_for(lambda: cycles.seen, 30, "a first cycle")
            for kill in range(KILLS):
                for replica in group:
                    write_config(replica.config, peers, replica.port, BASE + kill + 1)
                due = time.monotonic() + rng.uniform(0.3, 2.0)
                # A failover needs a standby: the replica started again after the last kill
                # is up (started, campaigning) before the leader dies, however long a cold
                # start takes on this machine; else the gap would measure that start.
                for replica in group:
                    wait_for(functools.partial(healthy, replica), 60, "every replica up")
                time.sleep(max(0.0, due - time.monotonic()))
                pid = wait_for(
                    lambda: leader_pid(url) in by_pid and leader_pid(url), 15, "a leader"
                )
                victim = by_pid.pop(int(pid))  # type: ignore[call-overload]
                victim.kill()
                killed = datetime.now(UTC)
                _, unsent = outbox(url)
                for budget in set(posted(stub)) & unsent:
                    windows[budget] += 1
                victim.start()
                by_pid[victim.pid] = victim
                wait_for(
                    functools.partial(cycled_after, cycles, killed), 30, "the next leader's cycle"
                )
                failovers.append(
                    (min(at for at in cycles.seen if at > killed) - killed).total_seconds()
                )
            budgets = BASE + KILLS
            wait_for(lambda: all_delivered(url, budgets), 90, "every alert delivered")
            time.sleep(3 * INTERVAL)  # cycles of the last leader, for the gap measure
            codes = [replica.stop() for replica in group]
        assert codes == [0, 0, 0], [replica.logs[-1][-2000:] for replica in group]
        duplicates = assert_once_outside_the_window(url, stub, budgets, windows)
        epoch = query(url, "SELECT epoch FROM costwatch.leader")[0][0]
    assert isinstance(epoch, int)
    assert epoch >= KILLS + 1  # a new leader after every kill
    gap = cycles.largest_gap()
    assert len(cycles.seen) > KILLS
    # Cycles are seen by the `now` they start at: two starts are one interval apart, or one
    # cycle's length when a cycle outlasts the interval (the run due meanwhile is skipped); a
    # kill can cut short a cycle under way, whose start is never committed. So across a kill
    # the gap is an interval (or a cycle), the cut cycle's time, and the failover: a loaded
    # machine lengthens the cycles, which the replicas' own logs say, never the bound's logic.
    longest = max(
        (
            float(took)
            for replica in group
            for log in replica.logs
            for took in CYCLE_OK.findall(log)
        ),
        default=0.0,
    )
    bound = max(INTERVAL, longest) + longest + FAILOVER
    assert max(failovers) <= FAILOVER, failovers
    assert gap <= bound, f"{gap:.2f} s between two cycles (cycles took up to {longest:.2f} s)"
    print(
        f"{KILLS} leaders killed; {sum(windows.values())} kill(s) inside the window;"
        f" {sum(duplicates.values())} duplicate post(s), all inside it; {len(cycles.seen)}"
        f" cycles; across a kill the gap was {sum(failovers) / len(failovers):.2f} s on"
        f" average, {max(failovers):.2f} s at most (bound {FAILOVER:g} s); the largest gap"
        f" {gap:.2f} s (bound {bound:.2f} s: cycles took up to {longest:.2f} s)"
    )


def test_a_leader_whose_backend_is_terminated_stops_writing_and_another_takes_over(
    tmp_path: Path,
) -> None:
    with (
        pgserver.database() as url,
        Simulator(Workspace(keys=6), api_key="sk-replica-key") as sim,
        SlackStub() as stub,
    ):
        stub.add_channel("#c0")
        stub.add_channel("#c1")
        peers = Peers(sim, stub, url)
        with replicas(2, tmp_path, peers, 3) as group:
            by_pid = {replica.pid: replica for replica in group}
            wait_for(lambda: all_delivered(url, 3), 30, "the first alerts delivered")
            old = by_pid[int(wait_for(lambda: leader_pid(url), 10, "a leader"))]  # type: ignore[call-overload]
            (other,) = [replica for replica in group if replica is not old]
            assert wait_for(lambda: old.metric("costwatch_leader") == 1.0, 10, "old leads")
            assert other.metric("costwatch_leader") == 0.0
            standby = other.get("/readyz")
            assert standby is not None
            assert (standby.status_code, standby.text.strip()) == (503, "standby")
            assert other.get("/healthz").status_code == 200  # type: ignore[union-attr]
            ((backend,),) = query(
                url,
                # advisory locks are per database; pg_locks shows the whole cluster's
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = %s AND objid = %s AND database = (SELECT oid FROM"
                " pg_database WHERE datname = current_database())",
                LOCK_CLASS,
                LEADER_LOCK,
            )
            assert isinstance(backend, int)
            time.sleep(random.Random(15).uniform(0, INTERVAL))  # somewhere in a cycle
            pgserver.terminate(pgserver.server(), backend)
            wait_for(lambda: leader_pid(url) == other.pid, LEASE + FAILOVER, "the other leads")
            wait_for(lambda: old.metric("costwatch_leader") == 0.0, LEASE, "old stands by")
            assert old.process is not None
            assert old.process.poll() is None
            answer = old.get("/readyz")
            assert answer is not None
            assert (answer.status_code, answer.text.strip()) == (503, "standby")
            wait_for(
                lambda: (other.get("/readyz") or httpx.Response(0)).status_code == 200, 10, "ready"
            )
            for replica in group:
                write_config(replica.config, peers, replica.port, 5)
            wait_for(lambda: all_delivered(url, 5), 30, "the new alerts delivered")
            codes = [replica.stop() for replica in group]
        assert codes == [0, 0]
        assert "no longer the leader" in old.logs[-1]
        assert_once_outside_the_window(url, stub, 5, Counter())


def test_the_database_restarted_under_the_replicas_fails_cycles_counted_and_loses_nothing(
    tmp_path: Path,
) -> None:
    cluster = pgserver.Cluster.start()  # our own: the shared server is not restarted
    try:
        with (
            pgserver.database(cluster.server) as url,
            Simulator(Workspace(keys=6), api_key="sk-replica-key") as sim,
            SlackStub() as stub,
        ):
            stub.add_channel("#c0")
            stub.add_channel("#c1")
            peers = Peers(sim, stub, url)
            with replicas(2, tmp_path, peers, 3) as group:
                wait_for(lambda: all_delivered(url, 3), 30, "the first alerts delivered")
                epoch = query(url, "SELECT epoch FROM costwatch.leader")[0][0]
                cluster.down("fast")
                time.sleep(3 * INTERVAL)
                cluster.up()
                failed = sum(
                    r.metric('costwatch_cycles_total{outcome="error"}') or 0 for r in group
                )
                assert failed > 0  # the cycles that met no database were counted
                for replica in group:
                    write_config(replica.config, peers, replica.port, 5)
                wait_for(lambda: all_delivered(url, 5), 40, "the new alerts delivered")
                assert sum(r.metric("costwatch_leader") or 0 for r in group) == 1
                codes = [replica.stop() for replica in group]
            assert codes == [0, 0]
            assert_once_outside_the_window(url, stub, 5, Counter())
            assert query(url, "SELECT epoch FROM costwatch.leader")[0][0] > epoch  # type: ignore[operator]
    finally:
        cluster.stop()


def costwatch(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwatch", *arguments],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_sqlite_installation_migrated_mid_period_sends_no_alert_again(tmp_path: Path) -> None:
    """A SQLite installation delivers three alerts, then plans two more it has not delivered
    yet (`check --queue-only`); `migrate-state` moves it into PostgreSQL, and two replicas on
    the database deliver the two waiting alerts and nothing else, ever: each alert once."""
    sqlite = tmp_path / "state.db"
    with (
        pgserver.database() as url,
        Simulator(Workspace(keys=6), api_key="sk-replica-key") as sim,
        SlackStub() as stub,
    ):
        stub.add_channel("#c0")
        stub.add_channel("#c1")
        before = Peers(sim, stub, str(sqlite))
        with replicas(1, tmp_path, before, 3) as (alone,):
            wait_for(lambda: len(posted(stub)) == 3, 30, "the SQLite daemon's alerts")
            assert alone.stop() == 0
        write_config(alone.config, before, alone.port, 5)
        queued = costwatch("check", "--config", str(alone.config), "--queue-only")
        assert queued.returncode == 1, queued.stderr  # thresholds crossed, planned, not sent
        moved = costwatch("migrate-state", "--from", str(sqlite), "--to", url)
        assert moved.returncode == 0, moved.stderr
        assert "5 outbox rows (2 not yet delivered)" in moved.stdout
        again = costwatch("migrate-state", "--from", str(sqlite), "--to", url)
        assert again.returncode == 2
        assert "holds state already" in again.stderr
        after = Peers(sim, stub, url)
        with replicas(2, tmp_path, after, 5) as group:
            wait_for(lambda: all_delivered(url, 5), 30, "the waiting alerts delivered")
            time.sleep(4 * INTERVAL)  # more cycles: none of them plans anything again
            assert [replica.stop() for replica in group] == [0, 0]
        assert_once_outside_the_window(url, stub, 5, Counter())
