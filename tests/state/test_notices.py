"""Notices sent once per kind, subject and period, kept in the ledger (`state/notices.py`): on
both engines, through a restart, a rolled-back transaction, retention, the upgrade that carries
the detectors' old marks over (SQLite and PostgreSQL) and `migrate-state`."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from costwatch import periods
from costwatch.alerts import LedgerEntry
from costwatch.state import MIGRATIONS, NoticeKey, PostgresState, SqliteState, Store, pgschema
from costwatch.state.notices import period_end
from costwatch.state.transfer import sqlite_to_postgres

T0 = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
WEEK = periods.current("week", BERLIN, T0).key()
ANOMALY = NoticeKey("anomaly", "key-1", "2026-12-02", metric="cost_usd")
REPORT = NoticeKey("report", "weekly", WEEK)


def budget_entry(period: str) -> LedgerEntry:
    return LedgerEntry(
        budget="every-key",
        subject="key-1",
        model="",
        metric="cost_usd",
        kind="actual",
        period=period,
        level=80.0,
        limit=200.0,
        used=161.5,
        sent_at=T0,
    )


def test_a_recorded_notice_is_sent_and_one_differing_in_any_part_is_not(store: Store) -> None:
    store.record_notices([ANOMALY, REPORT], T0)
    others = [
        NoticeKey("anomaly", "key-1", "2026-12-03", metric="cost_usd"),  # the next day
        NoticeKey("anomaly", "key-2", "2026-12-02", metric="cost_usd"),
        NoticeKey("anomaly", "key-1", "2026-12-02", metric="requests"),
        NoticeKey("anomaly", "key-1", "2026-12-02", model="gpt-4o", metric="cost_usd"),
        NoticeKey("spend_rate", "key-1", "2026-12-02", metric="cost_usd"),
        NoticeKey("report", "monthly", WEEK),
    ]
    assert store.notices_sent([ANOMALY, REPORT, *others]) == {ANOMALY, REPORT}
    assert store.notices_sent([]) == set()


def test_recording_a_notice_again_keeps_it_once_with_its_first_time(store: Store) -> None:
    store.record_notices([ANOMALY, ANOMALY], T0)
    with store.transaction() as transaction:
        transaction.record_notices([ANOMALY], T0 + timedelta(hours=1))
        assert transaction.notices_sent([ANOMALY]) == {ANOMALY}
    assert store.notices_sent([ANOMALY]) == {ANOMALY}


def test_a_notice_recorded_in_a_transaction_that_fails_is_not_sent(store: Store) -> None:
    def fail_after_recording() -> None:
        with store.transaction() as transaction:
            transaction.record_notices([ANOMALY], T0)
            assert transaction.notices_sent([ANOMALY]) == {ANOMALY}
            raise RuntimeError("the cycle failed after planning")

    with pytest.raises(RuntimeError, match="failed after planning"):
        fail_after_recording()
    assert store.notices_sent([ANOMALY]) == set()


def test_notices_stay_out_of_the_budgets_ledger_of_the_same_period(store: Store) -> None:
    store.commit(now=T0, ledger=[budget_entry(WEEK)])
    store.record_notices([REPORT], T0)
    assert list(store.ledger([WEEK])) == [budget_entry(WEEK).key]
    with store.transaction() as transaction:
        assert list(transaction.ledger([WEEK])) == [budget_entry(WEEK).key]


def test_a_notice_survives_a_restart(tmp_path: Path) -> None:
    with SqliteState.open(tmp_path / "state.db") as state:
        state.record_notices([ANOMALY], T0)
    with SqliteState.open(tmp_path / "state.db", write=False) as reader:
        assert reader.notices_sent([ANOMALY, REPORT]) == {ANOMALY}


def test_retention_lets_a_notice_go_once_its_period_ended_longer_ago(store: Store) -> None:
    old_day = NoticeKey("anomaly", "key-1", "2026-08-01", metric="cost_usd")
    old_week = NoticeKey(
        "report", "weekly", periods.current("week", BERLIN, T0 - timedelta(60)).key()
    )
    store.record_notices([ANOMALY, REPORT, old_day, old_week], T0)
    assert store.prune(T0, timedelta(days=30)) == 2
    assert store.notices_sent([ANOMALY, REPORT, old_day, old_week]) == {ANOMALY, REPORT}
    assert store.prune(T0 + timedelta(days=31), timedelta(days=30)) == 0  # the week ends 7 Dec
    assert store.prune(T0 + timedelta(days=40), timedelta(days=30)) == 2


def test_a_days_notice_ends_after_that_day_in_every_zone() -> None:
    end = period_end("2026-12-02")
    assert end is not None
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "Europe/Berlin"):
        local_end = periods.local_midnight(date(2026, 12, 3), ZoneInfo(zone))
        assert local_end <= end <= local_end + timedelta(days=2)
    assert period_end("not a period") is None
    assert period_end(WEEK) == periods.from_key(WEEK).end


# -- carried over: the detectors' marks before the ledger, migrate-state -----------------------


def mark_name(identity: list[str]) -> str:
    return "finding:" + json.dumps(identity, separators=(",", ":"))


IDENTITIES = [
    ["", "key-1", "", "cost_usd", "anomaly", "2026-12-02"],
    ["", "", "gpt-4o", "drift", "unit_cost", "2026-12-02"],
    ["", "key-2", "", "", "new_key", "2026-12-01"],
]
CARRIED = {
    ANOMALY,
    NoticeKey("unit_cost", "", "2026-12-02", model="gpt-4o", metric="drift"),
    NoticeKey("new_key", "key-2", "2026-12-01"),
}


def test_an_upgraded_sqlite_file_carries_the_detectors_marks_into_the_ledger(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number in range(3):  # as costwatch wrote it before notices were in the ledger
            for statement in MIGRATIONS[number].split(";"):
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (number + 1,))
        marks = [(mark_name(i), T0.isoformat()) for i in IDENTITIES]
        marks += [("reconciled:Europe/Berlin:2026-12", T0.isoformat()), ("finding:[1]", "x")]
        db.executemany("INSERT INTO marks VALUES (?, ?)", marks)
    with SqliteState.open(path) as state:
        assert state.notices_sent([*CARRIED, REPORT]) == CARRIED
        assert state.mark("reconciled:Europe/Berlin:2026-12") == T0
        assert state.mark(mark_name(IDENTITIES[0])) is None  # moved, not copied
        assert state.mark("finding:[1]") is None  # not a finding's identity: let go
        assert state.ledger(["2026-12-02"]) == {}


def test_an_upgraded_postgresql_database_carries_the_detectors_marks_into_the_ledger(
    pg_url: str,
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE SCHEMA costwatch")
        db.execute("SET search_path = costwatch")
        db.execute("CREATE TABLE schema_version (version integer)")
        for statement in pgschema.MIGRATIONS[0].split(";"):  # version 1, as released
            if statement.strip():
                db.execute(statement.encode())
        db.execute("INSERT INTO schema_version VALUES (1)")
        for identity in IDENTITIES:
            db.execute("INSERT INTO marks VALUES (%s, %s)", (mark_name(identity), T0))
        db.execute("INSERT INTO marks VALUES ('reconciled:Europe/Berlin:2026-12', %s)", (T0,))
    with PostgresState.open(pg_url, where="test database") as state:
        assert state.notices_sent([*CARRIED, REPORT]) == CARRIED
        assert state.mark("reconciled:Europe/Berlin:2026-12") == T0
        assert state.mark(mark_name(IDENTITIES[0])) is None


def test_migrate_state_carries_the_notices_sent(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        state.commit(now=T0, ledger=[budget_entry(WEEK)])
        state.record_notices([ANOMALY, REPORT], T0)
    with PostgresState.open(pg_url, where="test database") as target:
        moved = sqlite_to_postgres(path, target)
        assert moved.ledger == 3
        assert target.notices_sent([ANOMALY, REPORT]) == {ANOMALY, REPORT}
        assert list(target.ledger([WEEK])) == [budget_entry(WEEK).key]
