"""The state in one SQLite file (`SqliteState`, the first `Store`): the alert ledger, the outbox,
export health and the daily usage history (its SQL in `daily.py`).

- WAL journal, `synchronous=FULL`, file mode 0600 (it holds key names and spend).
- A `schema_version` table and forward-only migrations (`schema.py`); a file written by a
  newer costwatch, or one that is not a costwatch database or is damaged, is refused with a
  clear `StateError` and left as it was, never replaced by a fresh one (that would re-send the
  whole period's alerts).
- One process at a time writes the file: `SqliteState.open` takes its writer lock first
  (`lock.py`) and holds it until `close`; another process is refused, naming the holder.
  `SqliteState.open(..., write=False)` takes no lock and refuses every write.
- A cycle reads the ledger and commits its plan in one transaction (`transaction()`:
  BEGIN IMMEDIATE before the read, COMMIT after the writes), so no other writer, not even a
  second `SqliteState` of the same process, can plan in between: an alert is planned once. The
  ledger rows and the outbox rows of a plan are written together or not at all. Delivery marks
  outbox rows sent. After a crash, nothing fires twice (the ledger says it fired) and nothing is
  lost (the outbox row waits); the one window for a duplicate is between Slack accepting a
  message and `mark_sent`.
- A damaged outbox or ledger row (bad JSON, a bad time, a value of the wrong type) stops
  neither delivery nor planning: outbox rows are set aside, ledger rows read the safe way, each
  logged once and counted (`rows.py`; `on_damaged`). Reading never writes.
- The daily usage history: `put_day` and `set_mark` are each one transaction of their own on
  `SqliteState`, and part of the open one on a `SqliteTransaction`. A file opened read-only
  from before migration 3 has no history: it reads as an empty one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from costwatch.alerts import LedgerEntry, LedgerKey
from costwatch.errors import StateError
from costwatch.health import ExportHealth
from costwatch.state import daily, hourly, notices
from costwatch.state.base import Message, NoticeKey, OutboxItem, StoredDay
from costwatch.state.lock import WriterLock
from costwatch.state.rows import Damage, Damaged, Query, outbox_item, read_ledger
from costwatch.state.schema import (
    connect,
    connect_read_only,
    empty_history,
    has_history,
    rollback,
)

__all__ = ["SqliteState", "SqliteTransaction"]

_T = TypeVar("_T")


class SqliteState:
    """The state file. Thread-safe: one connection behind a lock."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, writer: WriterLock | None = None
    ) -> None:
        self._db = connection
        self._lock = threading.RLock()  # a thread inside transaction() may still read
        self._writer = writer
        self._writable = writer is not None
        self.path = path
        self._damage = Damage(path)
        self._has_history = has_history(connection)
        self._sums = daily.Sums() if writer is not None else None  # a writer's memo

    @property
    def on_damaged(self) -> Callable[[str], None] | None:
        """Called with the table ("outbox", "ledger") of each damaged row, once per row."""
        return self._damage.on_damaged

    @on_damaged.setter
    def on_damaged(self, count: Callable[[str], None] | None) -> None:
        self._damage.on_damaged = count

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        write: bool = True,
        wait: float = 0.0,
        command: str = "a costwatch process",
    ) -> SqliteState:
        """Open (or create) the state file, migrating it to the current schema.

        To write (the default), this process first becomes the file's one writer: it takes the
        writer lock, waiting up to `wait` seconds for another process to let go, and otherwise
        fails with `StateError` naming the holder; `command` is how a refused process will name
        this one. `write=False` takes no lock and opens an existing file read-only
        (`schema.connect_read_only`: no migration, no WAL switch, no chmod), so every write
        through it fails and the file stays byte for byte as it was.
        `busy_timeout` is how many seconds a write waits for SQLite's own lock (another
        program's transaction on the file) before it fails with `StateError`.
        """
        writer = WriterLock.acquire(path, wait=wait, command=command) if write else None
        try:
            opened = connect(path, busy_timeout) if write else connect_read_only(path, busy_timeout)
            return cls(opened, path, writer)
        except BaseException:
            if writer is not None:
                writer.release(discard=True)
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._writer is not None:
                self._writer.release()

    def __enter__(self) -> SqliteState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a cycle's reads and writes --------------------------------------------------------

    def ledger(self, periods: Iterable[str]) -> dict[LedgerKey, LedgerEntry]:
        """Ledger entries of the given periods (older periods are not needed to plan).

        To plan against them and commit the plan, read them through `transaction()` instead.
        """
        return read_ledger(self._query, periods, self._damage)

    def export_health(self) -> ExportHealth:
        return _read_health(self._query)

    @contextmanager
    def transaction(self) -> Iterator[SqliteTransaction]:
        """One transaction, BEGIN IMMEDIATE to COMMIT, for what a cycle reads to plan and then
        writes: no other writer of the file can write in between, so what was read is still
        true when the plan is committed. Rolled back whole on any error; other threads' calls
        on this SqliteState wait until it ends."""
        with self._transaction() as db:
            transaction = SqliteTransaction(db, self._damage, self._sums)
            try:
                yield transaction
            finally:
                transaction.ended = True

    def commit(
        self,
        *,
        now: datetime,
        ledger: Sequence[LedgerEntry] = (),
        messages: Sequence[Message] = (),
        health: ExportHealth | None = None,
    ) -> list[int]:
        """Write a cycle's outcome atomically; returns the new outbox ids."""
        with self.transaction() as transaction:
            return transaction.commit(now=now, ledger=ledger, messages=messages, health=health)

    # -- the daily usage history (see `History` in base.py) ---------------------------------

    def stored_days(self, zone: str, first: date, last: date) -> dict[date, StoredDay]:
        return self._read(daily.stored_days, zone, first, last)

    def usage_between(self, zone: str, first: date, last: date) -> pl.DataFrame:
        sums = self._sums.between if self._sums is not None else daily.usage_between
        return self._read(sums, zone, first, last)

    def usage_by_day(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return self._read(daily.usage_by_day, zone, first, last)

    def put_day(
        self,
        zone: str,
        day: date,
        frame: pl.DataFrame,
        *,
        exported_at: datetime,
        settled: bool,
        has_tokens: bool | None = None,
    ) -> None:
        """Replace the day's rows and its `StoredDay` in one transaction of its own."""
        with self.transaction() as transaction:
            transaction.put_day(
                zone, day, frame, exported_at=exported_at, settled=settled, has_tokens=has_tokens
            )

    def mark(self, name: str) -> datetime | None:
        return self._read(daily.mark, name)

    def set_mark(self, name: str, at: datetime) -> None:
        with self.transaction() as transaction:
            transaction.set_mark(name, at)

    # -- notices sent once (see `Notices` in base.py, `notices.py`) ---------------------------

    def notices_sent(self, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
        return notices.sent(self._query, keys)

    def record_notices(self, keys: Iterable[NoticeKey], at: datetime) -> None:
        with self.transaction() as transaction:
            transaction.record_notices(keys, at)

    # -- the outbox -------------------------------------------------------------------------

    def pending(self, now: datetime | None = None, limit: int = 1000) -> list[OutboxItem]:
        """Unsent outbox rows, oldest first; with `now`, only those due for another attempt."""
        sql = (
            "SELECT id, created_at, channel, kind, payload, attempts, last_error FROM outbox"
            " WHERE sent_at IS NULL"
        )
        params: list[Any] = []
        if now is not None:
            sql += " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
            params.append(_iso(now))
        sql += " AND id > ? ORDER BY id LIMIT ?"
        items: list[OutboxItem] = []
        after = 0  # the last id read: damaged rows are skipped, and more read in their place
        while len(items) < limit:
            wanted = limit - len(items)
            rows = self._query(sql, [*params, after, wanted])
            for row in rows:
                after = row[0]
                try:
                    items.append(outbox_item(row))
                except Damaged as error:
                    self._damage.report("outbox", row[0], f"row {row[0]}", str(error))
            if len(rows) < wanted:
                break
        return items

    def pending_count(self) -> int:
        return int(self._query("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0])

    def mark_sent(self, ids: Iterable[int], now: datetime) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?",
                [(_iso(now), i) for i in ids],
            )

    def mark_failed(self, item_id: int, error: str, now: datetime, retry_at: datetime) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                " WHERE id = ?",
                (error, _iso(retry_at), item_id),
            )
        del now  # kept in the signature: the caller's clock, for symmetry with mark_sent

    # -- housekeeping -------------------------------------------------------------------------

    def prune(self, now: datetime, retention: timedelta) -> int:
        """Delete sent outbox rows older than `retention`, the ledger of periods that ended
        longer than `retention` ago, and the stored days before `retention` (but never those a
        running quarter may need: `daily.KEEP_AT_LEAST`); returns rows deleted. Unsent outbox
        rows and the ledger of a period still running are kept whatever their age: deleting
        them would lose an alert or send one twice."""
        cutoff = now - retention
        with self._transaction() as db:
            first_kept = daily.prune_cutoff(now, retention)
            deleted = daily.delete_before(db, first_kept, self._sums)
            deleted += hourly.delete_before(db, first_kept)
            deleted += db.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (_iso(cutoff),)
            ).rowcount
            for (period,) in db.execute("SELECT DISTINCT period FROM ledger").fetchall():
                end = notices.period_end(period)
                if end is not None and end <= cutoff:
                    deleted += db.execute("DELETE FROM ledger WHERE period = ?", (period,)).rowcount
        return deleted

    # -- plumbing -----------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise StateError(f"{self.path}: {error}") from None

    def _read(self, read: Callable[..., _T], *args: Any) -> _T:
        """A history read outside a transaction; an older file's history is an empty one."""
        with self._lock:
            try:
                if self._has_history:
                    return read(self._db, *args)
                empty = empty_history()
                try:
                    return read(empty, *args)
                finally:
                    empty.close()
            except sqlite3.Error as error:
                raise StateError(f"{self.path}: {error}") from None

    def _transaction(self) -> _Immediate:
        if not self._writable:
            raise StateError(f"{self.path}: opened for reading only; nothing can be written")
        return _Immediate(self)


class SqliteTransaction(daily.InTransaction, hourly.InTransaction):
    """What a cycle reads and writes inside `SqliteState.transaction()`; usable only within it.
    The history's and the snapshots' reads and writes (`daily`, `hourly`) are part of it."""

    def __init__(self, db: sqlite3.Connection, damage: Damage, sums: daily.Sums | None) -> None:
        self._db, self._damage, self._sums = db, damage, sums
        self.ended = False

    def ledger(self, periods: Iterable[str]) -> dict[LedgerKey, LedgerEntry]:
        """Ledger entries of the given periods, as they stand in this transaction."""
        return read_ledger(self._query, periods, self._damage)

    def export_health(self) -> ExportHealth:
        return _read_health(self._query)

    def commit(
        self,
        *,
        now: datetime,
        ledger: Sequence[LedgerEntry] = (),
        messages: Sequence[Message] = (),
        health: ExportHealth | None = None,
    ) -> list[int]:
        """Write a cycle's outcome (committed when the transaction ends); the new outbox ids."""
        db = self._usable()
        db.executemany(
            "INSERT OR REPLACE INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.budget,
                    e.subject,
                    e.model,
                    e.metric,
                    e.kind,
                    e.period,
                    e.level,
                    e.limit,
                    e.used,
                    _iso(e.sent_at),
                )
                for e in ledger
            ],
        )
        ids: list[int] = []
        for message in messages:
            cursor = db.execute(
                "INSERT INTO outbox (created_at, channel, kind, payload) VALUES (?,?,?,?)",
                (_iso(now), message.channel, message.kind, json.dumps(message.payload)),
            )
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
        if health is not None:
            db.execute(
                "INSERT OR REPLACE INTO export_health VALUES (1,?,?,?,?,?)",
                (
                    health.consecutive_failures,
                    _iso(health.failing_since),
                    _iso(health.last_success),
                    health.last_reason,
                    int(health.alerted),
                ),
            )
        return ids

    def notices_sent(self, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
        return notices.sent(self._query, keys)

    def record_notices(self, keys: Iterable[NoticeKey], at: datetime) -> None:
        """Record `keys` as sent at `at`, committed with this transaction."""
        self._usable().executemany(notices.RECORD, notices.record_rows(keys, _iso(at)))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._usable().execute(sql, params).fetchall()

    def _usable(self) -> sqlite3.Connection:
        if self.ended:
            raise StateError("this transaction has ended; start another with transaction()")
        return self._db


def _read_health(query: Query) -> ExportHealth:
    rows = query(
        "SELECT consecutive_failures, failing_since, last_success, last_reason, alerted"
        " FROM export_health WHERE id = 1",
        (),
    )
    if not rows:
        return ExportHealth()
    r = rows[0]
    return ExportHealth(
        consecutive_failures=r[0],
        failing_since=_time(r[1]),
        last_success=_time(r[2]),
        last_reason=r[3],
        alerted=bool(r[4]),
    )


class _Immediate:
    """BEGIN IMMEDIATE ... COMMIT under the state's lock; ROLLBACK on any error."""

    def __init__(self, state: SqliteState) -> None:
        self._state = state

    def __enter__(self) -> sqlite3.Connection:
        self._state._lock.acquire()
        try:
            self._state._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            self._state._lock.release()
            raise StateError(f"{self._state.path}: cannot write the state: {error}") from None
        return self._state._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self._state._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    rollback(db)
                    raise StateError(
                        f"{self._state.path}: cannot write the state: {error}"
                    ) from None
            else:
                rollback(db)
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"{self._state.path}: cannot write the state: {exc}") from None
        finally:
            self._state._lock.release()


def _iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with a fixed width, so that stored times compare correctly as text."""
    if moment is None:
        return None
    if moment.utcoffset() is None:
        raise ValueError(f"a naive datetime cannot be stored: {moment!r}; pass an aware one")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
