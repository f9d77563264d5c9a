"""Moving an installation's state from its SQLite file to PostgreSQL (`costwatch migrate-state`).

Everything that decides what is sent moves, as it is: the ledger (so nothing fires again), the
outbox with its ids, attempts, errors, retry times and sent marks (so what waited is delivered
once, and what was delivered is not again), export health, the daily usage history day by day
with what is known of each day, the spend rate's hourly snapshots and the keeper's marks. All
of it in one PostgreSQL transaction, under the planners' lock: the target has all of it or
none. A target that holds any state already is refused (merging two histories could send an
alert twice or lose one). The SQLite file's writer lock is held throughout, so no daemon
writes it meanwhile; the file is left as it was, for a way back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from costwatch.errors import StateError
from costwatch.state import hourly, pgdaily, pghourly
from costwatch.state.pgschema import LOCK_CLASS, WRITE_LOCK
from costwatch.state.pgtransaction import Connection
from costwatch.state.postgres import PostgresState
from costwatch.state.sqlite import SqliteState

__all__ = ["Moved", "sqlite_to_postgres"]

_FIRST, _LAST = date(1970, 1, 1), date(9999, 12, 31)
_TABLES = ("ledger", "outbox", "export_health", "usage_day", "usage_hour", "marks")


@dataclass(frozen=True)
class Moved:
    """What was moved."""

    ledger: int
    outbox: int
    unsent: int
    days: int
    marks: int
    health: bool

    def describe(self) -> str:
        return (
            f"{self.ledger} ledger entries, {self.outbox} outbox rows ({self.unsent} not yet"
            f" delivered), {self.days} stored days of usage, {self.marks} marks"
            + (", export health" if self.health else "")
        )


def sqlite_to_postgres(source: Path, target: PostgresState) -> Moved:
    """Copy the SQLite state at `source` into the empty PostgreSQL state `target`."""
    if not source.is_file():
        raise StateError(f"{source}: no such state file")
    with SqliteState.open(source, command="costwatch migrate-state") as sqlite:
        read = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)
        try:
            with target.bulk() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, WRITE_LOCK))
                _refuse_unless_empty(db, target.where)
                ledger = _ledger(read, db)
                outbox, unsent = _outbox(read, db)
                health = _health(read, db)
                marks = _marks(read, db)
                days = _history(read, sqlite, db)
                _snapshots(read, db)
        except (sqlite3.Error, ValueError) as error:
            raise StateError(f"{source}: cannot be read for the move: {error}") from None
        finally:
            read.close()
    return Moved(ledger, outbox, unsent, days, marks, health)


def _refuse_unless_empty(db: Connection, where: str) -> None:
    held = [t for t in _TABLES if db.execute(f"SELECT EXISTS (SELECT 1 FROM {t})").fetchone()[0]]  # type: ignore[index]  # noqa: S608
    if held:
        raise StateError(
            f"{where}: holds state already ({', '.join(held)}); migrate-state moves a SQLite"
            " file into an empty database only"
        )


def _time(text: Any) -> datetime | None:
    if text is None or text == "":
        return None
    moment = datetime.fromisoformat(str(text))
    if moment.utcoffset() is None:
        raise ValueError(f"a time without its UTC offset: {str(text)[:40]!r}")
    return moment


def _ledger(read: sqlite3.Connection, db: Connection) -> int:
    rows = read.execute(
        "SELECT budget, subject, model, metric, kind, period, level, limit_value, used, sent_at"
        " FROM ledger"
    ).fetchall()
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO ledger VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [(*row[:9], _time(row[9])) for row in rows],
        )
    return len(rows)


def _outbox(read: sqlite3.Connection, db: Connection) -> tuple[int, int]:
    rows = read.execute(
        "SELECT id, created_at, channel, kind, payload, attempts, last_error, next_attempt_at,"
        " sent_at FROM outbox ORDER BY id"
    ).fetchall()
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO outbox (id, created_at, channel, kind, payload, attempts, last_error,"
            " next_attempt_at, sent_at) OVERRIDING SYSTEM VALUE"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [_outbox_row(row) for row in rows],
        )
    if rows:  # the next id goes on from the file's
        db.execute(
            "SELECT setval(pg_get_serial_sequence('outbox', 'id'), %s)", (max(r[0] for r in rows),)
        )
    return len(rows), sum(1 for row in rows if row[8] is None)


def _outbox_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    created, retry, sent = _time(row[1]), _time(row[7]), _time(row[8])
    return (row[0], created, row[2], row[3], row[4], row[5], row[6], retry, sent)


def _health(read: sqlite3.Connection, db: Connection) -> bool:
    row = read.execute(
        "SELECT consecutive_failures, failing_since, last_success, last_reason, alerted"
        " FROM export_health WHERE id = 1"
    ).fetchone()
    if row is None:
        return False
    db.execute(
        "INSERT INTO export_health VALUES (1,%s,%s,%s,%s,%s)",
        (row[0], _time(row[1]), _time(row[2]), row[3], bool(row[4])),
    )
    return True


def _marks(read: sqlite3.Connection, db: Connection) -> int:
    rows = read.execute("SELECT name, at FROM marks").fetchall()
    for name, at in rows:
        moment = _time(at)
        assert moment is not None
        pgdaily.set_mark(db, name, moment)
    return len(rows)


def _history(read: sqlite3.Connection, sqlite: SqliteState, db: Connection) -> int:
    days = 0
    for (zone,) in read.execute("SELECT name FROM usage_zone").fetchall():
        stored = sqlite.stored_days(zone, _FIRST, _LAST)
        if not stored:
            continue
        frame = sqlite.usage_by_day(zone, min(stored), max(stored))
        for day, known in stored.items():
            rows = frame.filter(frame["day"] == day).drop("day")
            pgdaily.put_day(
                db,
                zone,
                day,
                rows,
                exported_at=known.exported_at,
                settled=known.settled,
                has_tokens=known.has_tokens,
            )
            days += 1
    return days


def _snapshots(read: sqlite3.Connection, db: Connection) -> None:
    """Each zone's hourly snapshots, an hour at a time, when each was taken."""
    for (zone,) in read.execute("SELECT name FROM usage_zone").fetchall():
        taken = hourly.snapshots(read, zone, _FIRST, _LAST)
        times = dict(
            ((day, hour), at)
            for day, hour, at in read.execute(
                "SELECT day, hour, taken_at FROM usage_hour JOIN usage_zone z ON z.id = zone"
                " WHERE z.name = ?",
                (zone,),
            ).fetchall()
        )
        for day, hour in sorted(taken.taken):
            at = _time(times[(day - _FIRST).days, hour])
            assert at is not None
            rows = taken.frame.filter((taken.frame["day"] == day) & (taken.frame["hour"] == hour))
            pghourly.put_snapshot(
                db, zone, day, hour, rows.drop("day", "hour"), taken_at=at, keep_from=_FIRST
            )
