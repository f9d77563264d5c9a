"""The SQLite state over real files: creation, refusals, the writer lock, SQLite's locks,
atomicity, crashes, threads."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import periods
from costwatch.alerts import LedgerEntry
from costwatch.errors import StateError
from costwatch.health import ExportHealth
from costwatch.state import MIGRATIONS, SCHEMA_VERSION, Message, SqliteState

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
PERIOD = periods.current("month", BERLIN, T0).key()  # "month:2026-11-01@Europe/Berlin"


def entry(**changes: Any) -> LedgerEntry:
    base = LedgerEntry(
        budget="every-key",
        subject="key-1",
        model="",
        metric="cost_usd",
        kind="actual",
        period=PERIOD,
        level=80.0,
        limit=200.0,
        used=161.5,
        sent_at=T0,
    )
    return replace(base, **changes)


def message(n: int = 0, channel: str | None = "#ai-spend") -> Message:
    return Message(kind="alert", channel=channel, payload={"n": n, "text": f"alert {n}"})


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with a plain connection of its own, as another process would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


def count(path: Path, table: str) -> int:
    return int(query(path, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 (fixed names)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def state(path: Path) -> Iterator[SqliteState]:
    with SqliteState.open(path, busy_timeout=0.2) as opened:
        yield opened


def refused_untouched(path: Path, match: str) -> StateError:
    """Opening `path` fails with `match`, and the folder and the file's bytes are as before."""
    before, files = path.read_bytes(), listing(path.parent)
    with pytest.raises(StateError, match=match) as raised:
        SqliteState.open(path).close()
    assert path.read_bytes() == before
    assert listing(path.parent) == files
    return raised.value


def run_python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- creating, opening, migrating -------------------------------------------------------------


def test_a_new_file_is_made_0600_in_a_new_folder_with_wal_and_the_current_schema(
    tmp_path: Path,
) -> None:
    path = tmp_path / "var" / "lib" / "costwatch" / "state.db"
    with SqliteState.open(path) as state:
        state.commit(now=T0, messages=[message()])
        assert mode(path) == 0o600
        assert mode(path.with_name("state.db-wal")) == 0o600
        assert mode(path.with_name("state.db-shm")) == 0o600
        assert mode(path.with_name("state.db.lock")) == 0o600  # the writer lock's file
        assert listing(path.parent) == {"state.db", "state.db-wal", "state.db-shm", "state.db.lock"}
    assert mode(path.parent) == 0o700
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "SELECT version FROM schema_version ORDER BY rowid") == [
        (n,) for n in range(1, SCHEMA_VERSION + 1)
    ]
    # The last close checkpoints and removes the WAL; the lock file stays (never removed while
    # in use, and a file that is there is no harm).
    assert listing(path.parent) == {"state.db", "state.db.lock"}


def test_an_existing_0644_file_and_its_wal_are_tightened_to_0600(path: Path) -> None:
    SqliteState.open(path).close()
    path.chmod(0o644)
    with SqliteState.open(path) as state:
        state.commit(now=T0, messages=[message()])
        for file in (path, path.with_name("state.db-wal"), path.with_name("state.db-shm")):
            assert mode(file) == 0o600, file


def test_reopening_a_current_file_changes_neither_its_schema_nor_its_rows(path: Path) -> None:
    with SqliteState.open(path) as state:
        state.commit(now=T0, ledger=[entry()], messages=[message()])
    before = path.read_bytes()
    for _ in range(3):
        SqliteState.open(path).close()
    assert path.read_bytes() == before
    assert count(path, "schema_version") == SCHEMA_VERSION


def make_file_at(path: Path, version: int) -> None:
    """A costwatch file as an older costwatch wrote it: the first `version` migrations only."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number in range(version):
            for statement in MIGRATIONS[number].split(";"):
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (number + 1,))


def test_a_schema_1_file_is_migrated_in_order_and_keeps_its_rows(path: Path) -> None:
    make_file_at(path, 1)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?)",
            ("b", "k", "", "cost_usd", "actual", PERIOD, 50, 200, 101, T0.isoformat()),
        )
        db.execute(
            "INSERT INTO outbox (created_at, channel, kind, payload) VALUES (?,?,?,?)",
            (T0.isoformat(), "#c", "alert", '{"old": true}'),
        )
    assert query(path, "PRAGMA application_id") == [(0,)]
    with SqliteState.open(path) as state:
        assert [item.payload for item in state.pending()] == [{"old": True}]
        assert state.ledger([PERIOD])[("b", "k", "", "cost_usd", "actual", PERIOD)].used == 101
    assert query(path, "SELECT version FROM schema_version ORDER BY rowid") == [
        (n,) for n in range(1, SCHEMA_VERSION + 1)
    ]
    assert query(path, "PRAGMA application_id") != [(0,)]


def test_a_version_0_file_runs_every_migration_in_order(path: Path) -> None:
    make_file_at(path, 0)
    SqliteState.open(path).close()
    assert query(path, "SELECT version FROM schema_version ORDER BY rowid") == [
        (n,) for n in range(1, SCHEMA_VERSION + 1)
    ]
    tables = {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"ledger", "outbox", "export_health", "usage_day", "usage_daily", "marks"} <= tables
    assert "history" not in tables  # the budget history, dropped by migration 3


def test_a_migration_that_fails_is_rolled_back_whole(path: Path) -> None:
    make_file_at(path, 0)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE history (x)")  # migration 1 cannot create its own `history`
    with pytest.raises(StateError, match="cannot prepare the state file: table history already"):
        SqliteState.open(path).close()
    assert count(path, "schema_version") == 0
    assert {row[0] for row in query(path, "SELECT name FROM sqlite_master")} == {
        "schema_version",
        "history",
    }


def test_a_file_from_a_newer_costwatch_is_refused_and_left_untouched(path: Path) -> None:
    SqliteState.open(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    error = refused_untouched(path, "newer costwatch")
    assert f"schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION}" in str(error)
    assert "upgrade costwatch" in str(error)


# -- files that are not ours, or damaged: refused, never replaced -----------------------------


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=9000))
def test_a_file_of_random_bytes_is_refused_and_left_untouched(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        path.write_bytes(content)
        refused_untouched(path, "not a SQLite database|not a usable costwatch state file")


def test_an_empty_existing_file_is_refused_rather_than_taken_for_a_new_one(path: Path) -> None:
    path.touch()
    refused_untouched(path, "empty .*was it truncated")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            [
                "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
                "INSERT INTO users VALUES (1, 'a')",
            ],
            "another application .*tables users",
            id="other-tables",
        ),
        pytest.param(
            ["CREATE TABLE schema_version (version INTEGER)", "CREATE TABLE users (id)"],
            "another application .*tables schema_version, users",
            id="its-own-schema_version",
        ),
        pytest.param(
            ["PRAGMA application_id = 1234", "PRAGMA user_version = 7"],
            r"another application \(application_id 0x4d2",
            id="other-application-id",
        ),
    ],
)
def test_another_applications_sqlite_file_is_refused_and_left_untouched(
    path: Path, setup: list[str], expected: str
) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        for statement in setup:
            db.execute(statement)
    error = refused_untouched(path, expected)
    assert "point state.path elsewhere" in str(error)
    assert query(path, "PRAGMA journal_mode") == [("delete",)]  # not even switched to WAL


def filled(path: Path, rows: int = 3000) -> int:
    """A costwatch file of several pages, checkpointed; returns its size."""
    with SqliteState.open(path) as state:
        state.commit(now=T0, ledger=[entry(subject=f"key-{n}") for n in range(rows)])
    return path.stat().st_size


@pytest.mark.parametrize("keep", [0.5, 0.9, 4096 + 100, 60])
def test_a_truncated_costwatch_file_is_refused_and_left_untouched(path: Path, keep: float) -> None:
    size = filled(path)
    with path.open("r+b") as file:
        file.truncate(int(size * keep) if keep < 1 else int(keep))
    refused_untouched(path, "damaged|not a usable costwatch state file")


def test_a_costwatch_file_with_a_garbled_page_is_refused_as_damaged(path: Path) -> None:
    size = filled(path)
    page = 4096
    assert size > 6 * page
    with path.open("r+b") as file:
        file.seek(3 * page)
        file.write(bytes(range(256)) * (page // 256))
    refused_untouched(path, "damaged|not a usable costwatch state file")


def test_a_path_that_is_a_folder_or_lies_under_a_file_cannot_be_opened(tmp_path: Path) -> None:
    # Root ignores file modes: these are the "unwritable" places that stay unwritable as root.
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(StateError, match="not a regular file"):
        SqliteState.open(tmp_path / "folder.db")
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(StateError, match="plain is not a folder"):
        SqliteState.open(tmp_path / "plain" / "state.db")
    with pytest.raises(StateError, match="cannot create the state file: Not a directory"):
        SqliteState.open(tmp_path / "plain" / "sub" / "state.db")


# -- one writer per file: the writer lock ----------------------------------------------------

HOLD_UNTIL_TOLD = """
import sys
from pathlib import Path
from costwatch.state import SqliteState

with SqliteState.open(Path(sys.argv[1]), command=sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


class Holder:
    """Another process that holds the state's writer lock until `release()` or `kill()`."""

    def __init__(self, path: Path, command: str = "costwatch run") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD_UNTIL_TOLD, str(path), command],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "released\n"
        self.process.communicate(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=30)


@contextmanager
def held_elsewhere(path: Path, command: str = "costwatch run") -> Iterator[Holder]:
    holder = Holder(path, command)
    try:
        yield holder
    finally:
        holder.kill()


def test_a_second_process_cannot_write_the_file_and_is_told_who_holds_it(path: Path) -> None:
    with held_elsewhere(path) as holder:
        before = path.read_bytes()
        with pytest.raises(StateError) as raised:
            SqliteState.open(path)
        assert path.read_bytes() == before
    message = str(raised.value)
    expected = (
        f"{path} is in use by costwatch run (pid {holder.process.pid} on host"
        f" {socket.gethostname()} since "
    )
    assert message.startswith(expected), message
    assert message.endswith(": one process at a time writes a state file"), message


def test_whatever_the_lock_file_holds_the_refusal_is_one_line_of_text(path: Path) -> None:
    """The lock file is data written by another process (or anyone): its content, garbled or
    hostile, never breaks the refusal, never forges a log line, never hides the file's name."""
    lock = path.with_name("state.db.lock")
    with held_elsewhere(path):

        @settings(max_examples=60, deadline=None)
        @given(
            st.one_of(
                st.binary(max_size=600),
                st.fixed_dictionaries(
                    {
                        "command": st.text(max_size=300),
                        "pid": st.integers(-(2**70), 2**70) | st.text(max_size=5),
                        "host": st.text(max_size=300),
                        "since": st.text(max_size=50),
                    }
                ).map(lambda record: json.dumps(record).encode()),
            )
        )
        def refused(content: bytes) -> None:
            lock.write_bytes(content)  # the holder keeps its lock: flock is on the open file
            with pytest.raises(StateError) as raised:
                SqliteState.open(path)
            message = str(raised.value)
            assert message.startswith(f"{path} is in use by "), message
            assert message.endswith(": one process at a time writes a state file"), message
            assert message.isprintable(), message
            assert len(message) < len(str(path)) + 600

        refused()


def test_a_writer_waits_up_to_its_wait_says_so_and_then_refuses(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with held_elsewhere(path, "costwatch check"):
        started = time.monotonic()
        with pytest.raises(StateError, match=r"in use by costwatch check .*\(waited 0.5 s\)$"):
            SqliteState.open(path, wait=0.5)
        assert time.monotonic() - started >= 0.5
    assert "is in use by costwatch check (pid " in caplog.text
    assert "waiting up to 0.5 s for it" in caplog.text


def test_a_writer_that_waits_gets_the_lock_when_the_holder_lets_go(path: Path) -> None:
    holder = Holder(path)
    try:
        letting_go = threading.Timer(0.5, holder.release)
        letting_go.start()
        with SqliteState.open(path, wait=30) as state:
            state.commit(now=T0, messages=[message(1)])
        letting_go.join(timeout=30)
    finally:
        holder.kill()
    assert count(path, "outbox") == 1


@pytest.mark.parametrize("ending", ["close", "SIGKILL"])
def test_the_lock_is_free_again_as_soon_as_its_holder_closes_or_dies(
    path: Path, ending: str
) -> None:
    holder = Holder(path)
    if ending == "close":
        holder.release()
    else:
        holder.kill()  # the kernel releases a flock with the process's last descriptor
    with SqliteState.open(path) as state:  # no wait
        state.commit(now=T0, messages=[message(1)])


TRY_TO_OPEN = """
import sys
from pathlib import Path
from costwatch.errors import StateError
from costwatch.state import SqliteState

try:
    SqliteState.open(Path(sys.argv[1])).close()
    print("opened")
except StateError as error:
    print(error)
"""


def open_elsewhere(path: Path) -> str:
    """What another process's `SqliteState.open(path)` says: "opened" or its refusal."""
    done = subprocess.run(
        [sys.executable, "-c", TRY_TO_OPEN, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_states_of_one_process_share_its_lock_until_the_last_one_closes(path: Path) -> None:
    first = SqliteState.open(path)
    second = SqliteState.open(path)  # the same process: it shares the lock instead of waiting
    first.close()
    refusal = open_elsewhere(path)  # still held here, by the second
    assert refusal.startswith(f"{path} is in use by a costwatch process (pid "), refusal
    second.close()
    assert open_elsewhere(path) == "opened"  # now it is free


def test_a_state_opened_for_reading_takes_no_lock_and_refuses_every_write(path: Path) -> None:
    with SqliteState.open(path) as writer:
        (item,) = writer.commit(now=T0, ledger=[entry()], messages=[message(1)])
    writes: dict[str, Callable[[SqliteState], object]] = {
        "commit": lambda s: s.commit(now=T0, messages=[message(2)]),
        "transaction": lambda s: s.transaction().__enter__(),
        "mark_sent": lambda s: s.mark_sent([item], now=T0),
        "mark_failed": lambda s: s.mark_failed(item, "x", now=T0, retry_at=T0),
        "prune": lambda s: s.prune(T0 + timedelta(days=400), timedelta(days=1)),
    }
    with held_elsewhere(path), SqliteState.open(path, write=False) as reader:
        assert reader.pending_count() == 1
        assert set(reader.ledger([PERIOD])) == {entry().key}
        for name, write in writes.items():
            with pytest.raises(StateError, match="opened for reading only"):
                write(reader)
            assert count(path, "outbox") == 1, name
    assert query(path, "SELECT sent_at, attempts FROM outbox") == [(None, 0)]


def test_the_lock_file_is_tightened_to_0600(path: Path) -> None:
    SqliteState.open(path).close()
    lock = path.with_name("state.db.lock")
    lock.chmod(0o644)
    SqliteState.open(path).close()
    assert mode(lock) == 0o600


def test_the_transaction_of_a_cycle_keeps_another_state_from_reading_until_it_commits(
    path: Path,
) -> None:
    """What a cycle reads to plan is still true when it commits: another writer's ledger read
    (another SqliteState, as another process would be, were it not for the lock) waits for it."""
    SqliteState.open(path).close()
    seen: list[set[Any]] = []
    with (
        SqliteState.open(path, busy_timeout=30) as first,
        SqliteState.open(path, busy_timeout=30) as second,
    ):

        def plan_in_second() -> None:
            with second.transaction() as transaction:
                seen.append(set(transaction.ledger([PERIOD])))
                transaction.commit(now=T0, ledger=[] if seen[-1] else [entry(subject="late")])

        with first.transaction() as transaction:
            assert transaction.ledger([PERIOD]) == {}
            other = threading.Thread(target=plan_in_second)
            other.start()
            time.sleep(0.3)  # the other's read would happen here, were it not held off
            assert seen == []
            transaction.commit(now=T0, ledger=[entry()])
        other.join(timeout=30)
    assert seen == [{entry().key}]  # it saw the first one's plan: nothing planned twice
    assert query(path, "SELECT subject FROM ledger") == [("key-1",)]


def test_a_transaction_that_has_ended_cannot_be_used(state: SqliteState) -> None:
    with state.transaction() as transaction:
        transaction.commit(now=T0, messages=[message(1)])
    with pytest.raises(StateError, match="has ended"):
        transaction.commit(now=T0, messages=[message(2)])
    assert state.pending_count() == 1


def test_a_transaction_that_raises_is_rolled_back_whole(state: SqliteState) -> None:
    def plan_that_fails_after_writing() -> None:
        with state.transaction() as transaction:
            transaction.commit(now=T0, ledger=[entry()], messages=[message(1)])
            raise RuntimeError("the plan failed after writing")

    with pytest.raises(RuntimeError):
        plan_that_fails_after_writing()
    assert state.pending_count() == 0
    assert state.ledger([PERIOD]) == {}


# -- SQLite's own locks (another program's transaction) and atomicity --------------------------


def test_a_commit_against_a_locked_file_fails_after_the_busy_timeout_and_writes_nothing(
    path: Path,
) -> None:
    with SqliteState.open(path, busy_timeout=0.3) as state:
        state.commit(now=T0, messages=[message(1)])
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(StateError, match="cannot write the state: database is locked"):
                state.commit(now=T0, ledger=[entry()], messages=[message(2)])
            assert 0.25 <= time.monotonic() - started < 3
            assert [item.payload["n"] for item in state.pending()] == [1]  # reads still work
            other.execute("ROLLBACK")
        assert state.ledger([PERIOD]) == {}
        state.commit(now=T0, messages=[message(3)])  # and the state is usable once it is free
        assert [item.payload["n"] for item in state.pending()] == [1, 3]
    assert count(path, "ledger") == 0


def test_a_current_file_opens_while_another_process_holds_the_write_lock(path: Path) -> None:
    SqliteState.open(path).close()
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        with SqliteState.open(path, busy_timeout=0.1) as state:  # opening needs no write lock
            assert state.pending_count() == 0
        other.execute("ROLLBACK")


def assert_nothing_from_the_failed_commit(path: Path, state: SqliteState) -> None:
    """Only what `first_commit` wrote is there: through `state`, and through a new `SqliteState`."""

    def check(current: SqliteState) -> None:
        assert [item.payload["n"] for item in current.pending()] == [0]
        assert set(current.ledger([PERIOD])) == {entry().key}
        assert current.export_health() == ExportHealth(consecutive_failures=1)

    check(state)
    with SqliteState.open(path) as reopened:
        check(reopened)
    assert count(path, "ledger") == 1


def first_commit(state: SqliteState) -> None:
    state.commit(
        now=T0,
        ledger=[entry()],
        messages=[message(0)],
        health=ExportHealth(consecutive_failures=1),
    )


def test_a_commit_whose_last_write_fails_leaves_nothing_from_that_call(path: Path) -> None:
    with SqliteState.open(path) as state:
        first_commit(state)
        with pytest.raises(OverflowError):  # the export health row is the last thing written
            state.commit(
                now=T0,
                ledger=[entry(subject="key-2")],
                messages=[message(1), message(2)],
                health=ExportHealth(consecutive_failures=2**70),
            )
        assert_nothing_from_the_failed_commit(path, state)


def test_a_commit_with_a_payload_json_cannot_encode_leaves_nothing_from_that_call(
    path: Path,
) -> None:
    with SqliteState.open(path) as state:
        first_commit(state)
        unencodable = Message(kind="alert", channel=None, payload={"at": object()})
        with pytest.raises(TypeError, match="not JSON serializable"):
            state.commit(
                now=T0,
                ledger=[entry(subject="key-2")],
                messages=[message(1), unencodable],
                health=ExportHealth(),
            )
        assert_nothing_from_the_failed_commit(path, state)


def test_a_naive_datetime_is_refused_and_nothing_of_that_commit_is_written(path: Path) -> None:
    with SqliteState.open(path) as state:
        first_commit(state)
        with pytest.raises(ValueError, match="naive datetime"):
            state.commit(
                now=T0,
                ledger=[entry(subject="key-2")],
                messages=[message(1)],
                health=ExportHealth(last_success=T0.replace(tzinfo=None)),
            )
        assert_nothing_from_the_failed_commit(path, state)


FILE_SIZE_LIMIT = """
import os, resource, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from costwatch.errors import StateError
from costwatch.alerts import LedgerEntry
from costwatch.state import Message, SqliteState

path = Path(sys.argv[1])
now = datetime(2026, 11, 10, tzinfo=UTC)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
with SqliteState.open(path) as state:
    state.commit(now=now, messages=[Message("alert", None, {"n": 0})])
    wal = path.with_name(path.name + "-wal")
    largest = max(path.stat().st_size, wal.stat().st_size)
    resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 4096, resource.RLIM_INFINITY))
    rows = [
        LedgerEntry("b", f"key-{n}", "", "cost_usd", "actual", "p", 80.0, 1.0, n, None)
        for n in range(20000)
    ]
    try:
        state.commit(now=now, messages=[Message("alert", None, {"n": 1})], ledger=rows)
    except StateError as error:
        print("StateError", error)
    else:
        print("committed")
"""


def test_a_commit_that_cannot_grow_the_file_fails_cleanly_and_the_file_stays_sound(
    path: Path,
) -> None:
    # Root cannot be handed a full disk without a mount; a file-size limit (RLIMIT_FSIZE, which
    # binds root too) makes the same writes fail, with EFBIG where a full disk gives ENOSPC.
    with run_python(FILE_SIZE_LIMIT, str(path)) as child:
        out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.startswith("StateError"), out
    assert "cannot write the state" in out
    with SqliteState.open(path) as state:
        assert [item.payload["n"] for item in state.pending()] == [0]
    assert count(path, "ledger") == 0
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


# -- what goes in comes out --------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
numbers = st.floats(allow_nan=False)
# Real instants shown in any zone (a wall-clock time inside a DST gap names no instant, and
# Python compares such datetimes unequal to everything in another zone).
moments = st.builds(
    lambda moment, zone: moment.astimezone(zone),
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 (hypothesis takes naive bounds)
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.timezones(),
)
ledger_entries = st.builds(
    entry,
    budget=texts.filter(bool),  # a budget's name is never empty: no budget is a notice's row
    subject=texts,
    model=texts,
    metric=texts,
    kind=st.sampled_from(["actual", "forecast"]),
    level=numbers,
    limit=numbers,
    used=numbers,
    sent_at=st.none() | moments,
)


@settings(max_examples=60, deadline=None)
@given(ledger_entries)
def test_a_ledger_entry_round_trips_every_field_with_its_time_in_utc(written: LedgerEntry) -> None:
    with tempfile.TemporaryDirectory() as folder, SqliteState.open(Path(folder) / "s.db") as state:
        state.commit(now=T0, ledger=[written])
        (read,) = state.ledger([PERIOD]).values()
    assert read == written
    if read.sent_at is not None:
        assert read.sent_at.utcoffset() == timedelta(0)


def test_ledger_returns_the_requested_periods_only(state: SqliteState) -> None:
    day = periods.current("day", BERLIN, T0).key()
    october = periods.current("month", BERLIN, T0 - timedelta(days=20)).key()
    state.commit(now=T0, ledger=[entry(), entry(period=day), entry(period=october)])
    assert {key[5] for key in state.ledger([PERIOD, day])} == {PERIOD, day}
    assert {key[5] for key in state.ledger([october, october])} == {october}
    assert state.ledger([]) == {}
    assert state.ledger(["week:2026-11-09@Europe/Berlin"]) == {}


def test_a_ledger_entry_written_again_replaces_the_one_before(state: SqliteState) -> None:
    state.commit(now=T0, ledger=[entry(level=50.0)])
    state.commit(now=T0, ledger=[entry(level=100.0, sent_at=None)])
    assert list(state.ledger([PERIOD]).values()) == [entry(level=100.0, sent_at=None)]


def test_pending_lists_unsent_messages_oldest_first_with_kind_channel_and_payload(
    state: SqliteState,
) -> None:
    ids = state.commit(now=T0, messages=[message(1), message(2, channel=None)])
    ids += state.commit(
        now=T0 + timedelta(minutes=15),
        messages=[Message(kind="exports_failing", channel="#ops", payload={"é": ["<!channel>"]})],
    )
    pending = state.pending()
    assert [item.id for item in pending] == ids == sorted(ids)
    assert [(item.kind, item.channel) for item in pending] == [
        ("alert", "#ai-spend"),
        ("alert", None),
        ("exports_failing", "#ops"),
    ]
    assert pending[2].payload == {"é": ["<!channel>"]}
    assert pending[2].created_at == T0 + timedelta(minutes=15)
    assert (pending[0].attempts, pending[0].last_error) == (0, None)
    assert [item.id for item in state.pending(limit=2)] == ids[:2]
    assert state.pending_count() == 3


def test_pending_at_now_holds_back_a_message_until_its_retry_is_due(state: SqliteState) -> None:
    first, second = state.commit(now=T0, messages=[message(1), message(2)])
    retry_at = T0 + timedelta(seconds=30)
    state.mark_failed(first, "ratelimited", now=T0, retry_at=retry_at)
    assert [item.id for item in state.pending(T0)] == [second]
    assert [item.id for item in state.pending(retry_at - timedelta(microseconds=1))] == [second]
    assert [item.id for item in state.pending(retry_at)] == [first, second]
    berlin_now = (retry_at + timedelta(microseconds=1)).astimezone(BERLIN)
    assert [item.id for item in state.pending(berlin_now)] == [first, second]
    assert [item.id for item in state.pending()] == [first, second]  # without now: all unsent


def test_mark_failed_counts_attempts_and_keeps_the_latest_error_text(state: SqliteState) -> None:
    (item_id,) = state.commit(now=T0, messages=[message()])
    state.mark_failed(item_id, "timeout", now=T0, retry_at=T0)
    state.mark_failed(item_id, "channel_not_found: #gone", now=T0, retry_at=T0)
    (item,) = state.pending()
    assert (item.attempts, item.last_error) == (2, "channel_not_found: #gone")


def test_mark_sent_takes_messages_out_of_pending_and_its_count(state: SqliteState) -> None:
    ids = state.commit(now=T0, messages=[message(n) for n in range(4)])
    state.mark_sent([ids[0], ids[2]], now=T0)
    assert [item.id for item in state.pending()] == [ids[1], ids[3]]
    assert state.pending_count() == 2
    state.mark_sent([], now=T0)
    assert state.pending_count() == 2


def test_export_health_is_the_default_until_written_and_then_round_trips(
    state: SqliteState,
) -> None:
    assert state.export_health() == ExportHealth()
    health = ExportHealth(
        consecutive_failures=4,
        failing_since=datetime(2026, 11, 10, 9, 0, tzinfo=timezone(timedelta(hours=5))),
        last_success=T0 - timedelta(days=1),
        last_reason="rate_limited",
        alerted=True,
    )
    state.commit(now=T0, health=health)
    assert state.export_health() == health
    state.commit(now=T0, health=ExportHealth(last_success=T0))
    assert state.export_health() == ExportHealth(last_success=T0)
    assert state.export_health().last_success.tzinfo == UTC  # type: ignore[union-attr]


def test_prune_deletes_old_sent_messages_but_never_unsent_ones(
    path: Path, state: SqliteState
) -> None:
    old, recent = T0 - timedelta(days=40), T0 - timedelta(days=2)
    sent_old, unsent_old = state.commit(now=old, messages=[message(1), message(2)])
    (sent_recent,) = state.commit(now=recent, messages=[message(3)])
    state.mark_sent([sent_old], now=old)
    state.mark_failed(unsent_old, "invalid_auth", now=old, retry_at=old)
    state.mark_sent([sent_recent], now=recent)
    assert state.prune(T0, timedelta(days=30)) == 1
    assert [item.id for item in state.pending()] == [unsent_old]
    assert query(path, "SELECT id FROM outbox ORDER BY id") == [(unsent_old,), (sent_recent,)]
    assert state.prune(T0, timedelta(days=30)) == 0


def test_prune_keeps_the_ledger_of_a_running_period_however_old_its_alerts(
    state: SqliteState,
) -> None:
    now = datetime(2026, 12, 30, 12, 0, tzinfo=UTC)
    quarter = periods.current("quarter", BERLIN, now).key()  # Oct-Dec: running
    september = periods.current("month", BERLIN, datetime(2026, 9, 15, tzinfo=UTC)).key()
    november = periods.current("month", BERLIN, datetime(2026, 11, 15, tzinfo=UTC)).key()
    state.commit(
        now=now,
        ledger=[
            entry(period=quarter, sent_at=datetime(2026, 10, 2, tzinfo=UTC)),  # 89 days ago
            entry(period=september, sent_at=datetime(2026, 9, 20, tzinfo=UTC)),  # ended Oct 1
            entry(period=november, sent_at=None),  # ended Dec 1, within the retention
            entry(period="custom:whatever", sent_at=datetime(2020, 1, 1, tzinfo=UTC)),
        ],
    )
    assert state.prune(now, timedelta(days=30)) == 1
    assert set(state.ledger([quarter, september, november, "custom:whatever"])) == {
        entry(period=p).key for p in (quarter, november, "custom:whatever")
    }


# -- durability across processes and crashes ---------------------------------------------------


def test_everything_written_by_one_state_is_read_back_by_the_next(path: Path) -> None:
    health = ExportHealth(consecutive_failures=3, failing_since=T0, last_reason="timeout")
    with SqliteState.open(path) as state:
        ids = state.commit(
            now=T0,
            ledger=[entry()],
            messages=[message(1), message(2)],
            health=health,
        )
        state.mark_failed(ids[0], "timeout", now=T0, retry_at=T0 + timedelta(minutes=1))
        state.mark_sent([ids[1]], now=T0)
    with SqliteState.open(path) as state:
        assert state.ledger([PERIOD]) == {entry().key: entry()}
        (item,) = state.pending()
        assert (item.id, item.attempts, item.last_error, item.payload) == (
            ids[0],
            1,
            "timeout",
            {"n": 1, "text": "alert 1"},
        )
        assert state.pending(T0) == []
        assert state.export_health() == health


COMMIT_THEN_WAIT = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from costwatch.alerts import LedgerEntry
from costwatch.health import ExportHealth
from costwatch.state import Message, SqliteState

now = datetime(2026, 11, 10, 12, tzinfo=UTC)
state = SqliteState.open(Path(sys.argv[1]))
state.commit(
    now=now,
    ledger=[LedgerEntry("b", "k", "", "cost_usd", "actual", sys.argv[2], 80.0, 200.0, 170.0, now)],
    messages=[Message("alert", "#c", {"n": 1})],
    health=ExportHealth(last_success=now),
)
print("committed", flush=True)
time.sleep(60)
"""


def test_rows_committed_before_a_sigkill_are_there_and_the_file_opens_cleanly(path: Path) -> None:
    with run_python(COMMIT_THEN_WAIT, str(path), PERIOD) as child:
        assert child.stdout is not None
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=10)
    assert line == "committed\n", err
    assert child.returncode == -signal.SIGKILL
    assert path.with_name("state.db-wal").exists()  # killed with the WAL not yet checkpointed
    with SqliteState.open(path) as state:
        assert [item.payload for item in state.pending()] == [{"n": 1}]
        (read,) = state.ledger([PERIOD]).values()
        assert (read.level, read.used, read.sent_at) == (80.0, 170.0, T0)
        assert state.export_health() == ExportHealth(last_success=T0)
    assert count(path, "ledger") == 1
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


COMMIT_FOREVER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from costwatch.alerts import LedgerEntry
from costwatch.state import Message, SqliteState

now = datetime(2026, 11, 10, 12, tzinfo=UTC)
state = SqliteState.open(Path(sys.argv[1]))
n = state.pending_count()
while True:
    rows = [
        LedgerEntry("b", f"k{n}-{i}", "", "cost_usd", "actual", "p", 80.0, 1.0, i, None)
        for i in range(50)
    ]
    state.commit(now=now, messages=[Message("alert", None, {"n": n})], ledger=rows)
    print(n, flush=True)
    n += 1
"""


def test_sigkill_at_arbitrary_moments_between_commits_leaves_only_whole_commits(
    path: Path,
) -> None:
    acknowledged = 0
    for round_ in range(3):
        with run_python(COMMIT_FOREVER, str(path)) as child:
            assert child.stdout is not None
            for _ in range(20 + 7 * round_):  # then kill it, most likely inside a commit
                acknowledged = int(child.stdout.readline()) + 1
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=10)
        with SqliteState.open(path) as state:
            numbers = [item.payload["n"] for item in state.pending()]
        assert numbers == list(range(len(numbers)))  # every commit whole, in order, none lost
        assert len(numbers) >= acknowledged
        assert count(path, "ledger") == 50 * len(numbers)
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


# -- threads ------------------------------------------------------------------------------------


def run_threads(work: Callable[[int], None], threads: int = 2) -> None:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            work(n)
        except BaseException as error:  # re-raised in the main thread below
            errors.append(error)

    started = [threading.Thread(target=guarded, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=30)
    assert not errors, errors


def test_two_threads_committing_and_reading_through_one_state_lose_nothing(
    path: Path, state: SqliteState
) -> None:
    def work(worker: int) -> None:
        for n in range(60):
            subject = f"w{worker}-{n}"
            state.commit(
                now=T0,
                ledger=[entry(subject=subject)],
                messages=[message(n)],
            )
            assert entry(subject=subject).key in state.ledger([PERIOD])
            assert state.pending_count() >= n + 1
            state.export_health()

    run_threads(work)
    assert len(state.ledger([PERIOD])) == 120
    assert state.pending_count() == 120
    assert len({item.id for item in state.pending()}) == 120


def test_two_states_on_one_file_in_two_threads_wait_for_each_other_and_lose_nothing(
    path: Path,
) -> None:
    SqliteState.open(path).close()

    def work(worker: int) -> None:
        with SqliteState.open(path, busy_timeout=10) as state:
            for n in range(40):
                ids = state.commit(now=T0, messages=[message(n)])
                state.mark_sent(ids, now=T0)

    run_threads(work)
    assert count(path, "outbox") == 80
    assert query(path, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == [(0,)]


def test_a_closed_state_answers_with_state_error(path: Path) -> None:
    state = SqliteState.open(path)
    state.close()
    with pytest.raises(StateError, match="closed"):
        state.pending_count()
    with pytest.raises(StateError, match="closed"):
        state.commit(now=T0, messages=[message()])


def test_payloads_are_stored_as_json(path: Path, state: SqliteState) -> None:
    state.commit(now=T0, messages=[Message("alert", None, {"ratio": 1.5, "mention": ["<!here>"]})])
    (payload,) = query(path, "SELECT payload FROM outbox")[0]
    assert json.loads(payload) == {"ratio": 1.5, "mention": ["<!here>"]}
