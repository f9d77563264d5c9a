"""What costwatch keeps between cycles, as an interface: `Store`, and the records in it.

A cycle, delivery and the commands need exactly this of a state, whatever holds it:

- **a cycle** reads the ledger of its periods and the export health, and commits its plan
  (ledger entries, outbox messages, export health) in one `transaction()`:
  what it read is still true when it writes, and all of it is written or none;
- **delivery** reads the `pending` outbox rows due now and marks each `mark_sent` once the peer
  accepted it, or `mark_failed` with the error and when to try again;
- **the commands** count what waits (`pending_count`), `prune` what retention lets go, and
  `close` (which lets go of the writer's hold on the state);
- **the usage history** (issue 13): per local day of a zone, per key and model, the usage of
  that day as exported (`put_day`, one transaction per day, replacing what was stored), what is
  known of each stored day (`stored_days` -> `StoredDay`), the sums over a range of days
  (`usage_between`, the frame `budgets.evaluate` takes) and the days one by one
  (`usage_by_day`, for forecasts and reports); and small named instants (`mark`, `set_mark`)
  that the keeper of the history keeps (when a period was last reconciled);
- **hourly snapshots** (`Hourly`, inside a cycle's transaction): per local day and hour of a
  zone, each key's usage of that day so far as the last cycle of that hour exported it
  (`put_snapshot`, replacing that hour's), read back with the hours taken (`snapshots` ->
  `Snapshots`) for the spend rate now (`detect/rate.py`); kept only as long as the
  detectors' window (`keep_from`) and pruned with the days;
- **notices sent once** (`Notices`): a notice that is not a budget's alert (a detector's
  finding, a scheduled report) is sent once per kind, subject and period. The sender asks
  `notices_sent(keys)` which of the notices it is about to queue were sent already, and
  `record_notices(keys, at)` in the transaction that queues the rest, so a restart, a second
  replica or the next cycle never sends one twice. A `NoticeKey` is (kind, subject, period)
  and, where a kind needs them, a model and a metric: e.g. `NoticeKey("anomaly", key_id,
  "2026-12-02", metric="cost_usd")` for a detector's day (the local day of the schedule's
  zone), `NoticeKey("report", "weekly", week.key())` for a report. The period is a
  `Period.key()` or a local day's ISO date: either ends (`notices.period_end`), so `prune`
  lets the record go like the ledger of a closed period. They are kept in the ledger itself
  as rows with no budget (`notices.py`), which `Store.ledger` never returns.

`SqliteState` (`costwatch.state.sqlite`) is the first implementation; `open_store(config)` opens
the one the configuration names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol, Self

import polars as pl

from costwatch.alerts import LedgerEntry, LedgerKey
from costwatch.health import ExportHealth

__all__ = [
    "Days",
    "History",
    "Hourly",
    "Message",
    "NoticeKey",
    "Notices",
    "OutboxItem",
    "Snapshots",
    "Store",
    "StoredDay",
    "Transaction",
]


@dataclass(frozen=True)
class OutboxItem:
    id: int
    created_at: datetime
    channel: str | None
    kind: str  # "alert", "exports_failing", "exports_recovered"
    payload: dict[str, Any]
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class Message:
    """Something to put in the outbox."""

    kind: str
    channel: str | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredDay:
    """What is known of one stored day of one zone."""

    zone: str  # IANA zone name of the local day
    day: date
    exported_at: datetime  # when its rows were exported (UTC-aware)
    settled: bool  # exported at/after the day's settle time (the keeper decides; a cycle: False)
    rows: int  # key x model rows stored for it (0: a day with no usage, still stored)
    has_tokens: bool = False  # its export carried the BYOK token columns


@dataclass(frozen=True)
class Snapshots:
    """The hourly snapshots of a zone's days (`Hourly.snapshots`)."""

    frame: pl.DataFrame  # detect.rate.SNAPSHOT: day, hour, key, its name, requests, cost so far
    taken: frozenset[tuple[date, int]]  # (day, hour) of every snapshot, keys or none

    def recorded(self, hour: int) -> list[date]:
        """The days whose snapshot of `hour` was taken (another day is unknown, never $0)."""
        return sorted(day for day, taken in self.taken if taken == hour)


@dataclass(frozen=True, order=True)
class NoticeKey:
    """A notice sent once: per kind, subject and period (see the module docstring)."""

    kind: str  # "anomaly", "spend_rate", "new_key", "report", ...: the notice's own kind
    subject: str  # what it is about: a key's id, a model, a report's name; "" for none
    period: str  # a `Period.key()`, or a local day's ISO date ("2026-12-02")
    model: str = ""  # where a kind tells models apart (a key x model anomaly)
    metric: str = ""  # where a kind tells metrics apart (cost_usd, requests)


class Notices(Protocol):
    """Which notices were sent, on a `Store` and inside its `Transaction` alike."""

    def notices_sent(self, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
        """Those of `keys` recorded as sent (in any earlier cycle, by any process)."""
        ...

    def record_notices(self, keys: Iterable[NoticeKey], at: datetime) -> None:
        """Record `keys` as sent at `at` (in a transaction: with it; on a store: at once). A
        key recorded already keeps its first time."""
        ...


class History(Protocol):
    """The daily usage history: what a cycle and the keeper read and write of it, on a `Store`
    and inside its `Transaction` alike. Days are local dates of `zone`; ranges are inclusive."""

    def stored_days(self, zone: str, first: date, last: date) -> dict[date, StoredDay]:
        """The stored days of `zone` in [first, last], by day."""
        ...

    def usage_between(self, zone: str, first: date, last: date) -> pl.DataFrame:
        """usage.SCHEMA, one row per (api_key_id, model), summed over the stored days in
        [first, last]; a key's api_key_name is the latest day's it was seen with one. A token
        sum is null where no day reported it."""
        ...

    def usage_by_day(self, zone: str, first: date, last: date) -> pl.DataFrame:
        """usage.SCHEMA plus a "day" (pl.Date) column: per stored day, key and model, sorted by
        day (forecasts, anomalies and backtests read this)."""
        ...

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
        """Replace the day's rows with `frame` (usage.SCHEMA, one row per key and model; an
        empty frame is a day without usage) and its `StoredDay`, all at once: a crash leaves
        the day as it was or as given, never half of it, never twice. `has_tokens` is the
        export's (`Usage.has_tokens`); None: whether any token cell is filled."""
        ...

    def mark(self, name: str) -> datetime | None:
        """The instant last set for `name` (e.g. "reconciled:Europe/Berlin:2026-11"), or None."""
        ...

    def set_mark(self, name: str, at: datetime) -> None: ...


class Hourly(Protocol):
    """Today's usage so far, a snapshot per local hour (see the module docstring)."""

    def put_snapshot(
        self,
        zone: str,
        day: date,
        hour: int,
        frame: pl.DataFrame,
        *,
        taken_at: datetime,
        keep_from: date,
    ) -> None:
        """Replace the snapshot of local `hour` (0-23) of `day` with `frame`: one row per key
        (api_key_id, api_key_name, requests, total_cost_usd), its use from local midnight to
        `taken_at`; an empty frame is an hour by which no key had used anything. The zone's
        snapshots of days before `keep_from` are deleted with it."""
        ...

    def snapshots(
        self, zone: str, first: date, last: date, *, hour: int | None = None
    ) -> Snapshots:
        """The snapshots of the days [first, last] of `zone`; with `hour`, only those of that
        hour plus each key's earliest one (where its days begin: what the spend rate reads of
        the other hours), so a cycle reads a day's worth of rows per key, not 24. `taken` is
        every hour's either way."""
        ...


class Days(History, Notices, Hourly, Protocol):
    """The days, snapshots and notices the detectors read and write: a `Transaction`, or
    every workspace's of one (`partitions.JoinedDays`)."""


class Transaction(Days, Protocol):
    """What a cycle reads and writes inside `Store.transaction()`; usable only within it."""

    def ledger(self, periods: Iterable[str]) -> dict[LedgerKey, LedgerEntry]:
        """Ledger entries of the given periods, as they stand in this transaction."""
        ...

    def export_health(self) -> ExportHealth: ...

    def commit(
        self,
        *,
        now: datetime,
        ledger: Sequence[LedgerEntry] = (),
        messages: Sequence[Message] = (),
        health: ExportHealth | None = None,
    ) -> list[int]:
        """Write a cycle's outcome (committed when the transaction ends); the new outbox ids."""
        ...


class Store(History, Notices, Protocol):
    """The state a cycle, delivery and the commands share (see the module docstring)."""

    @property
    def on_damaged(self) -> Callable[[str], None] | None:
        """Called with the table ("outbox", "ledger") of each damaged row, once per row."""
        ...

    @on_damaged.setter
    def on_damaged(self, count: Callable[[str], None] | None) -> None: ...

    def ledger(self, periods: Iterable[str]) -> dict[LedgerKey, LedgerEntry]:
        """Ledger entries of the given periods, read outside a transaction (to plan without
        committing: a dry run)."""
        ...

    def export_health(self) -> ExportHealth: ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction for what a cycle reads to plan and then writes: no other writer can
        write in between; rolled back whole on any error."""
        ...

    def commit(
        self,
        *,
        now: datetime,
        ledger: Sequence[LedgerEntry] = (),
        messages: Sequence[Message] = (),
        health: ExportHealth | None = None,
    ) -> list[int]:
        """`transaction().commit(...)` on its own; returns the new outbox ids."""
        ...

    def pending(self, now: datetime | None = None, limit: int = 1000) -> list[OutboxItem]:
        """Unsent outbox rows, oldest first; with `now`, only those due for another attempt."""
        ...

    def pending_count(self) -> int: ...

    def mark_sent(self, ids: Iterable[int], now: datetime) -> None: ...

    def mark_failed(self, item_id: int, error: str, now: datetime, retry_at: datetime) -> None: ...

    def prune(self, now: datetime, retention: timedelta) -> int:
        """Delete what `retention` lets go (never an unsent row, nor a running period's ledger,
        nor a stored day a running period may need); returns rows deleted."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
