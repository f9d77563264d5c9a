"""Who of several processes on one PostgreSQL state leads: runs the cycles and delivers.

- **Election**: a session advisory lock (`pgschema.LEADER_LOCK`) held on a connection of its
  own, for as long as the process leads. `pg_try_advisory_lock` never waits: a standby tries
  again every `retry_every` (a tenth of `state.lease`, within 0.2 to 2 s). The database
  releases the lock the moment the holder's session ends: the process exits or is killed
  (its socket closes), `pg_terminate_backend`, or the session stays silent for `state.lease`
  (`idle_session_timeout`, TCP keepalives and `tcp_user_timeout` on that connection): a
  paused or partitioned leader loses it within one lease while the leader renews every third.
- **Epoch**: each acquisition increments `leader.epoch` and writes who holds it. The store's
  writes are fenced by it (`postgres.py`): a deposed leader commits nothing, and the first
  refused write steps it down at once (`deposed`), before its next renewal would notice.
  Deposed, it stands again only after two `retry_every`: a standby that was waiting takes the
  lock first (its next try is within one), instead of the old leader taking it back at once.
- `Leadership` is what the daemon needs of it (`Sole` for the SQLite file, whose writer lock
  already makes its process the only one; `Elected` for PostgreSQL): whether it leads, the
  campaign loop, stepping down, and the last metrics snapshot shared by the leader with the
  standbys, so dashboards do not go blank on failover.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg

from costwatch.deadline import StopSignal
from costwatch.errors import NotLeaderError, StateError
from costwatch.state.pgschema import LEADER_LOCK, LOCK_CLASS, SCHEMA
from costwatch.state.pgschema import _first_line as first_line

__all__ = [
    "Elected",
    "Elector",
    "Fence",
    "Leadership",
    "SharedSnapshot",
    "Sole",
    "check",
    "connect",
]

log = logging.getLogger("costwatch.state")

Connection = psycopg.Connection[Any]
CONNECT_SECONDS = 5  # libpq's connect_timeout for every costwatch connection
STATEMENT_SECONDS = 60  # no statement of the state's connection waits longer (lock waits: 10 s)


@dataclass(frozen=True)
class Fence:
    """What a leader's writes are checked against: its epoch and its lock connection's backend."""

    epoch: int
    pid: int
    lock: int = LEADER_LOCK


@dataclass(frozen=True)
class SharedSnapshot:
    """The leader's last metrics snapshot, as `Metrics` serves it (`snapshot_state`)."""

    text: bytes
    at: datetime
    truncated: int


def connect(
    url: str, password: str | None, where: str, *, lease: timedelta | None = None
) -> Connection:
    """A connection to the state's database: autocommit (transactions are explicit), UTC,
    `search_path` the costwatch schema, bounded waits. With `lease`, the leader lock's
    connection: the server ends it after `lease` of silence, and so does the kernel when the
    peer stops acknowledging. `StateError` naming `where` (never the URL) if it fails."""
    options = f"-c search_path={SCHEMA} -c TimeZone=UTC"
    extra: dict[str, Any] = {}
    if lease is None:
        options += f" -c statement_timeout={STATEMENT_SECONDS * 1000} -c lock_timeout=10000"
    else:
        millis = int(lease.total_seconds() * 1000)
        options += f" -c idle_session_timeout={millis} -c statement_timeout={millis // 3}"
        extra = {
            "keepalives": 1,
            "keepalives_idle": max(1, int(lease.total_seconds() / 3)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": millis,
        }
    if password is not None:
        extra["password"] = password
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_SECONDS,
            application_name="costwatch",
            options=options,
            **extra,
        )
    except psycopg.Error as error:
        raise StateError(f"{where}: cannot connect: {first_line(error)}") from None


class Elector:
    """This process's candidacy: `try_lead`, `renew`, `deposed`, `fence`; see the module."""

    def __init__(
        self, make: Callable[[], Connection], where: str, lease: timedelta, holder: str = ""
    ) -> None:
        self._make = make
        self.where = where
        self.lease = lease
        self.holder = holder or f"costwatch (pid {os.getpid()} on host {socket.gethostname()})"
        self.retry_every = min(2.0, max(0.2, lease.total_seconds() / 10))
        self.renew_every = lease.total_seconds() / 3
        self._lock = threading.Lock()
        self._db: Connection | None = None
        self._fence: Fence | None = None
        self.on_change: Callable[[bool], None] | None = None
        self.problem: str | None = None  # why the last attempt could not even ask the database
        self._deposed_at = -float("inf")  # time.monotonic() when it last stopped leading

    def fence(self) -> Fence | None:
        """The fence while this process leads, else None."""
        return self._fence

    @property
    def leading(self) -> bool:
        return self._fence is not None

    def try_lead(self) -> bool:
        """One attempt to take the leader lock (never waits); whether this process leads."""
        with self._lock:
            if self._fence is not None:
                return True
            try:
                if self._db is None or self._db.closed or self._db.broken:
                    self._drop()
                    self._db = self._make()
                got = self._db.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LEADER_LOCK)
                ).fetchone()
                self.problem = None
                if not got or not got[0]:
                    return False
                row = self._db.execute(
                    "UPDATE leader SET epoch = epoch + 1, holder = %s, since = now()"
                    " WHERE id = 1 RETURNING epoch",
                    (self.holder,),
                ).fetchone()
                assert row is not None
                self._fence = Fence(int(row[0]), self._db.info.backend_pid)
            except (psycopg.Error, StateError) as error:
                reason = _reason(error)
                if reason != self.problem:
                    log.warning("%s: cannot stand for leader: %s", self.where, reason)
                self.problem = reason
                self._drop()
                return False
            epoch = self._fence.epoch
        log.info("%s: this process leads now (epoch %d)", self.where, epoch)
        self._notify(True)
        return True

    def renew(self) -> bool:
        """The leader's heartbeat on its lock connection; False (and stepped down) if lost."""
        with self._lock:
            db = self._db
            if self._fence is None or db is None:
                return False
            try:
                db.execute("SELECT 1")
                return True
            except psycopg.Error as error:
                reason = first_line(error)
        self.deposed(f"its lock connection failed ({reason})")
        return False

    def deposed(self, why: str = "a write was refused: another process leads") -> None:
        """Stop leading now (the lock connection closed, so the lock is free if it was not)."""
        with self._lock:
            was = self._fence
            self._fence = None
            self._drop()
            if was is not None:
                self._deposed_at = time.monotonic()
        if was is not None:
            log.warning("%s: no longer the leader (epoch %d): %s", self.where, was.epoch, why)
            self._notify(False)

    def lead(self, wait: float) -> None:
        """Lead within `wait` seconds, or `StateError` naming who leads."""
        deadline = time.monotonic() + wait
        while not self.try_lead():
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" (waited {wait:g} s)" if wait > 0 else ""
                raise StateError(
                    f"{self.where} is in use by {self.current() or 'another process'}: one"
                    f" process at a time writes the state, the leader{waited}"
                )
            time.sleep(min(self.retry_every, left))

    def current(self) -> str | None:
        """Who the database says leads (the holder of the latest epoch), or None."""
        try:
            with self._make() as db:
                row = db.execute("SELECT holder, since, epoch FROM leader WHERE id = 1").fetchone()
        except (psycopg.Error, StateError):
            return None
        if row is None or row[0] is None:
            return None
        return f"{row[0]} since {row[1]:%Y-%m-%d %H:%M:%S} UTC (epoch {row[2]})"

    def campaign(self, stop: StopSignal) -> None:
        """Until `stop`: renew while leading, try to lead while not (after being deposed, not
        before two `retry_every` have passed: the standbys' turn first)."""
        while not stop.is_set():
            if self.leading:
                if self.renew():
                    stop.wait(self.renew_every)
                continue
            rest = self._deposed_at + 2 * self.retry_every - time.monotonic()
            if rest > 0:
                stop.wait(rest)
            elif not self.try_lead():
                stop.wait(self.retry_every)

    def close(self) -> None:
        """Let go of the lock and its connection (a standby's or a leader's on the way out)."""
        with self._lock:
            self._fence = None
            self._drop()

    def _drop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _notify(self, leading: bool) -> None:
        if self.on_change is not None:
            self.on_change(leading)


def check(db: Connection, fence: Fence, elector: Elector | None, where: str) -> None:
    """Inside the writing transaction: the lock still held by our lock connection's backend
    and the epoch still ours (read FOR SHARE, so a new leader's increment waits for us)."""
    row = db.execute("SELECT epoch FROM leader WHERE id = 1 FOR SHARE").fetchone()
    held = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = %s AND objid = %s AND objsubid = 2 AND pid = %s",
        (LOCK_CLASS, fence.lock, fence.pid),
    ).fetchone()
    epoch = None if row is None else int(row[0])
    if epoch != fence.epoch or not held or not held[0]:
        if elector is not None:
            elector.deposed()
        raise NotLeaderError(
            f"{where}: deposed (this process led epoch {fence.epoch}, the database"
            f" is at {epoch}); nothing of this write was committed"
        )


def _reason(error: BaseException) -> str:
    return first_line(error) if isinstance(error, psycopg.Error) else str(error)


class Leadership(Protocol):
    """What the daemon needs to know and do about leading (see the module docstring)."""

    @property
    def leading(self) -> bool: ...

    @property
    def problem(self) -> str | None:
        """Why this process cannot even ask to lead (the database is unreachable), or None."""
        ...

    def campaign(self, stop: StopSignal, on_change: Callable[[bool], None]) -> None:
        """Until `stop`, stand for leader; `on_change(leading)` on every change."""
        ...

    def step_down(self, why: str) -> None: ...

    def share(self, snapshot: SharedSnapshot) -> None:
        """The leader keeps its last snapshot where the standbys read it."""
        ...

    def shared(self) -> SharedSnapshot | None: ...


class Sole:
    """The one process of a SQLite file: it always leads (its writer lock saw to that)."""

    leading = True
    problem = None

    def campaign(self, stop: StopSignal, on_change: Callable[[bool], None]) -> None:
        on_change(True)
        stop.wait(None)

    def step_down(self, why: str) -> None:
        del why  # nobody else could lead

    def share(self, snapshot: SharedSnapshot) -> None:
        del snapshot  # no standby to read it

    def shared(self) -> SharedSnapshot | None:
        return None


class Elected:
    """A PostgreSQL state's leadership: its `Elector` and where the snapshot is shared."""

    def __init__(
        self,
        elector: Elector,
        share: Callable[[SharedSnapshot], None],
        shared: Callable[[], SharedSnapshot | None],
    ) -> None:
        self._elector = elector
        self._share = share
        self._shared = shared

    @property
    def leading(self) -> bool:
        return self._elector.leading

    @property
    def problem(self) -> str | None:
        return self._elector.problem

    def campaign(self, stop: StopSignal, on_change: Callable[[bool], None]) -> None:
        self._elector.on_change = on_change
        on_change(self._elector.leading)
        self._elector.campaign(stop)

    def step_down(self, why: str) -> None:
        self._elector.deposed(why)

    def share(self, snapshot: SharedSnapshot) -> None:
        self._share(snapshot)

    def shared(self) -> SharedSnapshot | None:
        return self._shared()
