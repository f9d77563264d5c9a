"""What costwatch keeps between cycles, as an interface: `Store`, and the records in it.

A cycle, delivery and the commands need exactly this of a state, whatever holds it:

- **a cycle** reads the ledger of its periods and the export health, and commits its plan
  (ledger entries, outbox messages, budget history, export health) in one `transaction()`:
  what it read is still true when it writes, and all of it is written or none;
- **delivery** reads the `pending` outbox rows due now and marks each `mark_sent` once the peer
  accepted it, or `mark_failed` with the error and when to try again;
- **the commands** count what waits (`pending_count`), `prune` what retention lets go, and
  `close` (which lets go of the writer's hold on the state).

`SqliteState` (`costwatch.state.sqlite`) is the first implementation; `open_store(config)` opens
the one the configuration names. The `budget_history` rows are one per budget subject and
metric per cycle (used against limit): not a daily usage history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, Self

from costwatch.alerts import LedgerEntry, LedgerKey
from costwatch.health import ExportHealth

__all__ = ["BudgetHistoryRow", "Message", "OutboxItem", "Store", "Transaction"]


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
class BudgetHistoryRow:
    budget: str
    subject: str
    metric: str
    used: float
    limit: float


class Transaction(Protocol):
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
        budget_history: Sequence[BudgetHistoryRow] = (),
        health: ExportHealth | None = None,
    ) -> list[int]:
        """Write a cycle's outcome (committed when the transaction ends); the new outbox ids."""
        ...


class Store(Protocol):
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
        budget_history: Sequence[BudgetHistoryRow] = (),
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
        """Delete what `retention` lets go (never an unsent row nor a running period's ledger);
        returns rows deleted."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
