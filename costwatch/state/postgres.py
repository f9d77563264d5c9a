"""The state in PostgreSQL (`PostgresState`, a `Store`): the same ledger, outbox, export health
and daily usage history (`pgdaily.py`) as the SQLite file, for several processes on one
database.

- `state.url` names the database; the password may be in it or on its own (`state.password`,
  `password_file`), and never appears in a message: errors name the database by
  `StateConfig.where()` and the driver's first line only. The tables are in the schema
  `costwatch`, migrated by `pgschema.py`.
- One connection per process behind a lock (a cycle's transaction and delivery's marks take
  turns, as with SQLite), made again when it broke: a database restarted under the daemon
  fails the cycles that meet it (`StateError`, counted) and the next ones go through. A pool
  would not earn its place: two threads write, one at a time.
- A cycle's transaction first takes the `WRITE_LOCK` advisory transaction lock: one planner at
  a time across every process, so what it read is still true when it commits.
- Fencing: when an `Elector` is attached, every write (a cycle's commit, a claim, `mark_sent`,
  `mark_failed`, `put_day`, `set_mark`, `prune`, the shared snapshot) checks in its own
  transaction (`leader.check`) that this process still holds the leader lock on its lock
  connection (`pg_locks`, by that backend's pid) and that the `leader` row's epoch is still
  its own, read `FOR SHARE`: a new leader's epoch increment waits for that transaction, so a
  write is either before the new epoch or refused (`NotLeaderError`). A deposed leader,
  paused, partitioned or with its connection dropped, commits nothing.
- Claims: `pending(now)` of a fenced store claims the rows it returns (`FOR UPDATE SKIP LOCKED`,
  `claim_epoch` set to its epoch; a claim of an older epoch is void), and `mark_sent` marks only
  rows claimed by its epoch. Two processes never post the same row, except in the documented
  window (docs/reliability.md): a leader deposed between Slack accepting a post and its
  `mark_sent` commit leaves the row unsent, and the next leader posts it again.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import polars as pl
import psycopg

from costwatch.alerts import LedgerEntry, LedgerKey
from costwatch.errors import NotLeaderError, StateError
from costwatch.health import ExportHealth
from costwatch.state import notices, pgdaily, pghourly
from costwatch.state.base import Message, NoticeKey, OutboxItem, StoredDay
from costwatch.state.daily import prune_cutoff
from costwatch.state.leader import Elector, Fence, SharedSnapshot, check, connect
from costwatch.state.pgschema import LOCK_CLASS, WRITE_LOCK, inspect, migrate
from costwatch.state.pgschema import _first_line as first_line
from costwatch.state.pgtransaction import PostgresTransaction, aware, placeholders, read_health
from costwatch.state.rows import Damage, Damaged, outbox_item, read_ledger

__all__ = ["PostgresState"]

Connection = psycopg.Connection[Any]
_T = TypeVar("_T")
_PENDING = (
    "SELECT id, created_at, channel, kind, payload, attempts, last_error FROM outbox"
    " WHERE sent_at IS NULL"
)
_CLAIM = (
    "WITH due AS (SELECT id FROM outbox WHERE sent_at IS NULL"
    " AND (next_attempt_at IS NULL OR next_attempt_at <= %s)"
    " AND (claim_epoch IS NULL OR claim_epoch <= %s)"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
    " UPDATE outbox SET claim_epoch = %s, claimed_at = %s FROM due WHERE outbox.id = due.id"
    " RETURNING outbox.id, outbox.created_at, outbox.channel, outbox.kind, outbox.payload,"
    " outbox.attempts, outbox.last_error"
)


class PostgresState:
    """The state in a PostgreSQL database. Thread-safe: one connection behind a lock."""

    def __init__(self, make: Callable[[], Connection], where: str) -> None:
        self._make = make
        self.where = where
        self._lock = threading.RLock()
        self._db: Connection | None = None
        self._closed = False
        self._damage = Damage(where)
        self.elector: Elector | None = None
        self.read_only = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        where: str,
        lease: timedelta | None = None,
        holder: str = "a costwatch process",
        read_only: bool = False,
    ) -> PostgresState:
        """Connect to the database at `url` and migrate it; `StateError` if it cannot be used.
        `where` names it in messages (without credentials). With `lease`, an `Elector` on a
        connection of its own is attached (not yet leading: see `Elector.lead`), and `holder`
        says who this process is ("costwatch run"). `read_only` creates, migrates and writes
        nothing (`StateMissing` when there is no state yet; `pgschema.inspect`)."""
        state = cls(lambda: connect(url, password, where), where)
        state.read_only = read_only
        try:
            if read_only:  # nothing created or migrated: StateMissing on an empty database
                inspect(state._connection(), where)
            else:
                migrate(state._connection(), where)
            if lease is not None and not read_only:
                who = f"{holder} (pid {os.getpid()} on host {socket.gethostname()})"
                state.elector = Elector(
                    lambda: connect(url, password, where, lease=lease), where, lease, who
                )
        except BaseException:
            state.close()
            raise
        return state

    @property
    def on_damaged(self) -> Callable[[str], None] | None:
        return self._damage.on_damaged

    @on_damaged.setter
    def on_damaged(self, count: Callable[[str], None] | None) -> None:
        self._damage.on_damaged = count

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
            if self.elector is not None:
                self.elector.close()

    def __enter__(self) -> PostgresState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- a cycle's reads and writes --------------------------------------------------------

    def ledger(self, periods: Iterable[str]) -> dict[LedgerKey, LedgerEntry]:
        return read_ledger(self._query, periods, self._damage)

    def export_health(self) -> ExportHealth:
        return read_health(self._query)

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        """One transaction for what a cycle reads to plan and then writes, under the planners'
        advisory lock and, when fenced, only while this process leads; rolled back whole on
        any error."""
        with self._writing() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, WRITE_LOCK))
            transaction = PostgresTransaction(db, self._damage)
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
        with self.transaction() as transaction:
            return transaction.commit(now=now, ledger=ledger, messages=messages, health=health)

    # -- the daily usage history (see `History` in base.py) ---------------------------------

    def stored_days(self, zone: str, first: date, last: date) -> dict[date, StoredDay]:
        return self._read(pgdaily.stored_days, zone, first, last)

    def usage_between(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return self._read(pgdaily.usage_between, zone, first, last)

    def usage_by_day(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return self._read(pgdaily.usage_by_day, zone, first, last)

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
        with self._writing() as db:
            pgdaily.put_day(
                db,
                zone,
                day,
                frame,
                exported_at=exported_at,
                settled=settled,
                has_tokens=has_tokens,
            )

    def mark(self, name: str) -> datetime | None:
        return self._read(pgdaily.mark, name)

    def set_mark(self, name: str, at: datetime) -> None:
        with self._writing() as db:
            pgdaily.set_mark(db, name, at)

    # -- notices sent once (see `Notices` in base.py, `notices.py`) ---------------------------

    def notices_sent(self, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
        return notices.sent(self._query, keys)

    def record_notices(self, keys: Iterable[NoticeKey], at: datetime) -> None:
        with self._writing() as db:
            PostgresTransaction(db, self._damage).record_notices(keys, at)

    # -- the outbox -------------------------------------------------------------------------

    def pending(self, now: datetime | None = None, limit: int = 1000) -> list[OutboxItem]:
        """Unsent outbox rows, oldest first; with `now`, only those due. A fenced store claims
        the due rows it returns for its epoch (rows another process is claiming are skipped)."""
        fence = self._fence() if now is not None else None
        if fence is not None and now is not None:
            return self._claim(now, limit, fence)
        sql = _PENDING
        params: list[Any] = []
        if now is not None:
            sql += " AND (next_attempt_at IS NULL OR next_attempt_at <= %s)"
            params.append(aware(now))
        return self._items(self._query(sql + " ORDER BY id LIMIT %s", [*params, limit]))

    def _claim(self, now: datetime, limit: int, fence: Fence) -> list[OutboxItem]:
        with self._writing() as db:
            rows = db.execute(
                _CLAIM, (aware(now), fence.epoch, limit, fence.epoch, aware(now))
            ).fetchall()
        return self._items(sorted(rows, key=lambda row: int(row[0])))

    def _items(self, rows: list[tuple[Any, ...]]) -> list[OutboxItem]:
        items: list[OutboxItem] = []
        for row in rows:
            try:
                items.append(outbox_item(row))
            except Damaged as error:
                self._damage.report("outbox", row[0], f"row {row[0]}", str(error))
        return items

    def pending_count(self) -> int:
        return int(self._query("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0])

    def mark_sent(self, ids: Iterable[int], now: datetime) -> None:
        """Mark rows Slack accepted; a fenced store marks only the rows its epoch claimed."""
        wanted = list(ids)
        fence = self._fence()
        with self._writing() as db:
            db.execute(
                "UPDATE outbox SET sent_at = %s, attempts = attempts + 1 WHERE id = ANY(%s)"
                " AND sent_at IS NULL AND (%s::bigint IS NULL OR claim_epoch = %s)",
                (aware(now), wanted, fence and fence.epoch, fence and fence.epoch),
            )

    def mark_failed(self, item_id: int, error: str, now: datetime, retry_at: datetime) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = %s,"
                " next_attempt_at = %s WHERE id = %s",
                (error, aware(retry_at), item_id),
            )
        del now  # the caller's clock, for symmetry with mark_sent

    # -- housekeeping and the shared snapshot ---------------------------------------------------

    def prune(self, now: datetime, retention: timedelta) -> int:
        """As `SqliteState.prune`: never an unsent row, a running period's ledger, nor a stored
        day a running quarter may need."""
        cutoff = (now - retention).astimezone(UTC)
        with self._writing() as db:
            deleted = pgdaily.delete_before(db, prune_cutoff(now, retention))
            deleted += pghourly.delete_before(db, prune_cutoff(now, retention))
            deleted += db.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < %s", (cutoff,)
            ).rowcount
            for (period,) in db.execute("SELECT DISTINCT period FROM ledger").fetchall():
                end = notices.period_end(period)
                if end is not None and end <= cutoff:
                    deleted += db.execute(
                        "DELETE FROM ledger WHERE period = %s", (period,)
                    ).rowcount
        return deleted

    def share(self, snapshot: SharedSnapshot) -> None:
        """Keep the leader's last metrics snapshot in the database, for the standbys."""
        with self._writing() as db:
            db.execute(
                "UPDATE leader SET snapshot = %s, snapshot_at = %s, snapshot_truncated = %s"
                " WHERE id = 1",
                (snapshot.text, aware(snapshot.at), snapshot.truncated),
            )

    def shared(self) -> SharedSnapshot | None:
        """The leader's last metrics snapshot, if it shared one."""
        rows = self._query(
            "SELECT snapshot, snapshot_at, snapshot_truncated FROM leader WHERE id = 1"
            " AND snapshot IS NOT NULL"
        )
        if not rows:
            return None
        text, at, truncated = rows[0]
        return SharedSnapshot(bytes(text), at, int(truncated or 0))

    # -- plumbing -----------------------------------------------------------------------------

    def bulk(self) -> AbstractContextManager[Connection]:
        """One writing transaction on the connection itself, to move a whole state in
        (`transfer.py`); fenced like every write."""
        return self._writing()

    def _connection(self) -> Connection:
        """The connection, made (again) if there is none or the last one broke."""
        if self._closed:
            raise StateError(f"{self.where}: the state is closed")
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._db = self._make()
        return self._db

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(placeholders(sql), params).fetchall()
            except psycopg.Error as error:
                raise StateError(f"{self.where}: {first_line(error)}") from None

    def _read(self, read: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            try:
                return read(self._connection(), *args)
            except psycopg.Error as error:
                raise StateError(f"{self.where}: {first_line(error)}") from None

    def _fence(self) -> Fence | None:
        """This process's fence when an elector is attached; NotLeaderError if it does not
        lead. None: an unfenced store (a command's, or one being migrated into)."""
        if self.elector is None:
            return None
        fence = self.elector.fence()
        if fence is None:
            raise NotLeaderError(f"{self.where}: this process is not the leader; it writes nothing")
        return fence

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that writes: fenced (checked inside it) when an elector is attached."""
        if self.read_only:
            raise StateError(f"{self.where}: opened for reading only; nothing can be written")
        fence = self._fence()
        with self._lock:
            try:
                db = self._connection()
                with db.transaction():
                    if fence is not None:
                        check(db, fence, self.elector, self.where)
                    yield db
            except psycopg.Error as error:
                raise StateError(
                    f"{self.where}: cannot write the state: {first_line(error)}"
                ) from None
