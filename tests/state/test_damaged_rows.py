"""One damaged state row never stops delivery or planning, and never sends an alert twice.

Rows are written the real way (`SqliteState.commit`, a real planning cycle against the simulator),
then damaged with a plain sqlite3 connection, as a disk fault or a hand edit would: JSON that
does not parse, times that are not times, values of the wrong type. Delivery is the real
slack_sdk against the Slack stand-in; planning is `cycle.run_once` against the simulator.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeClock
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from loopback import free_port, wait_for, write_daemon_config
from slackrounds import enqueue, make_alert, run, token_config
from slackstub import TOKEN, SlackStub
from test_faults import CONFIG, KEY, NOW, STEP, Clock, alert_identities

from costwatch import cycle
from costwatch.config import parse_config
from costwatch.daemon import Daemon
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.metrics import Metrics
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

LATER = NOW + timedelta(minutes=15)
PERIOD = "month:2026-11-01@Europe/Berlin"  # the simulator cycles' period


def damage(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the file behind costwatch's back, with a connection of its own."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, params)


def damaged_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "costwatch.state" and "is damaged" in r.getMessage()
    ]


class Counted:
    """Stands in for the metric: the tables `on_damaged` was called with."""

    def __init__(self) -> None:
        self.tables: list[str] = []

    def __call__(self, table: str) -> None:
        self.tables.append(table)


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(retry_after=0) as server:
        for name in ("ai-spend", "finance"):
            server.add_channel(name)
        yield server


# -- the outbox -------------------------------------------------------------------------------

OUTBOX_DAMAGE = {
    "payload not JSON": ("payload", "not json at all"),
    "payload cut short": ("payload", '{"budget": "b1", "scope": '),
    "payload a list": ("payload", "[1, 2, 3]"),
    "payload a string": ("payload", '"an alert"'),
    "payload null": ("payload", "null"),
    "payload nested too deep": ("payload", "[" * 100_000),
    "payload a BLOB": ("payload", b"\xff\xfe\x00"),
    "created_at not a time": ("created_at", "yesterday"),
    "created_at without offset": ("created_at", "2026-11-20T12:00:00"),
    "created_at a number": ("created_at", 1_764_000_000),
    "kind a BLOB": ("kind", b"\x00alert"),
    "channel a BLOB": ("channel", b"#finance"),
    "attempts text": ("attempts", "many"),
    "last_error a BLOB": ("last_error", b"\x00"),
}


@pytest.mark.parametrize("case", OUTBOX_DAMAGE, ids=list(OUTBOX_DAMAGE))
def test_a_damaged_outbox_row_is_set_aside_logged_once_and_the_rest_is_delivered(
    case: str, stub: SlackStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    column, value = OUTBOX_DAMAGE[case]
    path = tmp_path / "state.db"
    counted = Counted()
    with SqliteState.open(path) as state:
        state.on_damaged = counted
        first, bad, last = enqueue(state, make_alert("b0"), make_alert("b1"), make_alert("b2"))
        damage(path, f"UPDATE outbox SET {column} = ? WHERE id = ?", (value, bad))  # noqa: S608
        report = run(state, token_config(stub), FakeClock())
        assert (report.sent, report.messages) == (2, 2)
        assert [item.id for item in state.pending()] == []  # set aside: not offered again
        assert state.pending_count() == 1  # and not delivered, so still counted as waiting
        again = run(state, token_config(stub), FakeClock(), now=LATER)
        assert again.messages == 0
    posted = " ".join(r.text for r in stub.posts())
    assert "b0-prod" in posted
    assert "b2-prod" in posted
    assert "b1-prod" not in posted
    (logged,) = damaged_logs(caplog)  # once, for both rounds
    assert f"outbox row {bad} is damaged ({column}" in logged
    assert counted.tables == ["outbox"]
    with closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT sent_at, attempts FROM outbox WHERE id = ?", (bad,)).fetchone()
    assert row[0] is None  # kept, never marked sent
    assert {first, last}.isdisjoint({bad})


def test_pending_with_a_limit_skips_damaged_rows_to_the_next_sound_one(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        ids = enqueue(state, *(make_alert(f"b{i}") for i in range(5)))
        for bad in ids[:3]:
            damage(path, "UPDATE outbox SET payload = '{' WHERE id = ?", (bad,))
        assert [item.id for item in state.pending(NOW, limit=1)] == [ids[3]]
        assert [item.id for item in state.pending(NOW, limit=2)] == ids[3:]
        assert [item.id for item in state.pending(NOW, limit=9)] == ids[3:]


COLUMNS = ["created_at", "channel", "kind", "payload", "attempts", "last_error"]
VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # what SQLite can store
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from(["{", "[]", "{}", "null", "2026-11-20T12:00:00", "alert", "#finance"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    damaged=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from(COLUMNS), VALUES), min_size=1, max_size=4
    )
)
def test_whatever_is_written_into_outbox_rows_every_untouched_row_is_delivered_once(
    damaged: list[tuple[int, str, Any]],
) -> None:
    with SlackStub(retry_after=0) as stub, tempfile.TemporaryDirectory() as folder:
        for name in ("ai-spend", "finance"):
            stub.add_channel(name)
        path = Path(folder) / "state.db"
        with SqliteState.open(path) as state:
            ids = enqueue(state, *(make_alert(f"budget{i}") for i in range(5)))
            for index, column, value in damaged:
                try:
                    sql = f"UPDATE outbox SET {column} = ? WHERE id = ?"  # noqa: S608
                    damage(path, sql, (value, ids[index]))
                except sqlite3.IntegrityError:
                    assume(False)  # a NOT NULL column: SQLite itself refuses
            config = token_config(stub, digest_after=10)
            run(state, config, FakeClock())
            run(state, config, FakeClock(), now=LATER)
        texts = [r.text for r in stub.posts()]
    touched = {index for index, _, _ in damaged}
    for i in range(5):
        count = sum(f"budget{i}-prod" in text for text in texts)
        assert count <= 1  # a touched row may still be sound (a valid time, a channel)
        if i not in touched:
            assert count == 1


def test_an_alert_row_that_cannot_be_rendered_holds_up_no_digest(
    stub: SlackStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        ids = enqueue(state, *(make_alert(f"b{i}", "#finance") for i in range(7)))
        damage(path, "UPDATE outbox SET payload = '{\"budget\": 1}' WHERE id = ?", (ids[3],))
        report = run(state, token_config(stub, digest_after=5), FakeClock())
        assert (report.digests, report.messages, report.sent) == (1, 1, 6)
        assert report.permanent_errors == {"render_failed": 1}
        (left,) = state.pending()
        assert left.id == ids[3]
        assert str(left.last_error).startswith("render_failed")
    (digest,) = stub.posts("finance")
    assert all(f"b{i}-prod" in digest.text for i in (0, 1, 2, 4, 5, 6))


# -- the ledger -------------------------------------------------------------------------------

LEDGER_DAMAGE = {
    "sent_at not a time": "sent_at = 'yesterday'",
    "sent_at without offset": "sent_at = '2026-11-20T12:45:00'",
    "sent_at a BLOB": "sent_at = x'00ff'",
    "level text": "level = 'high'",
    "level a BLOB": "level = x'00'",
    "limit text": "limit_value = 'unknown'",
    "used text": "used = 'lots'",
    "level and limit text": "level = 'x', limit_value = 'y'",
    "budget a BLOB": "budget = CAST(budget AS BLOB)",
    "subject a BLOB": "subject = CAST(subject AS BLOB)",
    "kind unknown": "kind = kind || '?'",
}


class Planner:
    """The simulator and its clock: one real cycle at a time."""

    def __init__(self, sim: Simulator, clock: Clock) -> None:
        self.sim = sim
        self.clock = clock


def plan_cycle(
    planner: Planner, state: SqliteState, now: datetime, limit: float = 5
) -> list[tuple[Any, ...]]:
    """One real cycle at `now`; the alerts it planned (budget, key, metric, kind, threshold)."""
    sim = planner.sim
    planner.clock.now = now
    config = parse_config(
        CONFIG.format(base_url=sim.base_url, key=KEY, attempts=3).replace(
            "cost_usd: 5", f"cost_usd: {limit}"
        )
    )
    before = set(alert_identities(state))
    with httpx.Client(timeout=httpx.Timeout(5.0)) as http:
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=3, max_elapsed_seconds=60),
            sleep=FakeClock().sleep,
            jitter=lambda: 0.5,
        )
        outcome = cycle.run_once(cycle.Deps(config, client=client, state=state), now)
    assert outcome.ok, outcome.error
    return sorted(set(alert_identities(state)) - before)


@pytest.fixture
def planner() -> Iterator[Planner]:
    clock = Clock()
    with Simulator(Workspace(keys=6), api_key=KEY, clock=clock) as server:
        yield Planner(server, clock)


@pytest.fixture
def baseline(planner: Planner, tmp_path: Path) -> list[list[tuple[Any, ...]]]:
    """What three undamaged cycles plan: alerts, nothing new, the alerts a lower limit adds."""
    with SqliteState.open(tmp_path / "baseline.db") as state:
        return [
            plan_cycle(planner, state, NOW),
            plan_cycle(planner, state, NOW + STEP),
            plan_cycle(planner, state, NOW + 2 * STEP, limit=3),
        ]


@pytest.mark.parametrize("case", LEDGER_DAMAGE, ids=list(LEDGER_DAMAGE))
def test_a_damaged_ledger_row_neither_stops_planning_nor_sends_its_alert_again(
    case: str,
    planner: Planner,
    baseline: list[list[tuple[Any, ...]]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, unchanged, lowered = baseline
    assert first  # the case is worth testing: alerts, then none, then more
    assert not unchanged
    assert lowered
    path = tmp_path / "state.db"
    counted = Counted()
    with SqliteState.open(path) as state:
        state.on_damaged = counted
        assert plan_cycle(planner, state, NOW) == first
        with closing(sqlite3.connect(path)) as db:
            rows = int(db.execute("SELECT count(*) FROM ledger").fetchone()[0])
        damage(path, f"UPDATE ledger SET {LEDGER_DAMAGE[case]}")  # noqa: S608
        assert plan_cycle(planner, state, NOW + STEP) == []  # nothing sent a second time
        assert (
            plan_cycle(planner, state, NOW + 2 * STEP, limit=3) == lowered
        )  # a higher level fires
        assert plan_cycle(planner, state, NOW + 3 * STEP, limit=3) == []
    assert counted.tables == ["ledger"] * rows  # each damaged row counted once
    assert len(damaged_logs(caplog)) == rows  # and logged once


def test_a_ledger_row_whose_level_cannot_be_read_is_written_back_sound(
    planner: Planner, tmp_path: Path
) -> None:
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        plan_cycle(planner, state, NOW)
        damage(path, "UPDATE ledger SET level = 'x', limit_value = x'00'")
        plan_cycle(planner, state, NOW + STEP)
    with closing(sqlite3.connect(path)) as db:
        kinds = db.execute("SELECT DISTINCT typeof(level), typeof(limit_value) FROM ledger")
        assert kinds.fetchall() == [("real", "real")]


# -- the daemon counts them ---------------------------------------------------------------------

QUIET = """\
  - name: roomy
    keys: "*"
    limits: {cost_usd: 1000000}
"""


def test_the_daemon_counts_damaged_rows_in_its_metrics_and_delivers_the_rest(
    tmp_path: Path, stub: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", KEY)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    port = free_port()
    with Simulator(Workspace(keys=2), api_key=KEY) as sim:
        config = write_daemon_config(tmp_path / "c.yaml", sim, stub, port, QUIET)
        with SqliteState.open(tmp_path / "state.db") as state:
            _, bad = enqueue(state, make_alert("good"), make_alert("bad"))
        damage(tmp_path / "state.db", "UPDATE outbox SET payload = '{' WHERE id = ?", (bad,))
        daemon = Daemon.from_path(config)
        runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        runner.start()
        try:
            wait_for(lambda: len(stub.posts()) >= 1, 30, "the sound row delivered")
            url = f"http://127.0.0.1:{port}/metrics"
            wait_for(
                lambda: (
                    'costwatch_state_damaged_rows_total{table="outbox"} 1.0'
                    in httpx.get(url, timeout=2).text
                ),
                30,
                "the damaged row counted",
            )
            scrape = httpx.get(url, timeout=2).text
            assert 'costwatch_state_damaged_rows_total{table="ledger"} 0.0' in scrape
        finally:
            daemon.stop()
            runner.join(timeout=30)
    assert not runner.is_alive()
    assert ["good-prod" in r.text for r in stub.posts()] == [True]


def test_metrics_refuse_an_unknown_table() -> None:
    with pytest.raises(ValueError, match="table"):
        Metrics().state_damaged("history")


def test_logging_a_damaged_row_never_quotes_its_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="costwatch.state")
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        (row,) = enqueue(state, make_alert("b0"))
        damage(path, "UPDATE outbox SET payload = ? WHERE id = ?", ("{<!channel> secret", row))
        assert state.pending() == []
    assert "<!channel>" not in caplog.text
    assert damaged_logs(caplog)


def test_reading_damaged_rows_writes_nothing(planner: Planner, tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        plan_cycle(planner, state, NOW)
        enqueue(state, make_alert("b0"))
        damage(path, "UPDATE outbox SET payload = '{'")
        damage(path, "UPDATE ledger SET level = 'x', sent_at = 'y'")
        before = dump(path)
        assert state.pending() == []
        assert state.ledger([PERIOD])
        assert dump(path) == before  # so `check --dry-run` stays read-only


def dump(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT 'outbox', * FROM outbox").fetchall()
        return rows + db.execute("SELECT 'ledger', * FROM ledger").fetchall()
