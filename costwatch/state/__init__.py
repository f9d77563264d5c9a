"""What costwatch keeps between cycles: the alert ledger, the outbox, the budget history and
export health, behind one interface (`Store`).

    base.py    `Store` and `Transaction`: what a cycle, delivery and the commands need; the
               records (`OutboxItem`, `Message`, `BudgetHistoryRow`)
    sqlite.py  `SqliteState`: the store in one SQLite file
    schema.py  creating, recognising and migrating the file (`MIGRATIONS`, `SCHEMA_VERSION`)
    lock.py    one writer per state file (`flock` on `<state>.lock`)
    rows.py    damaged rows read the safe way, each logged once and counted

`open_store(config)` opens the store the configuration names (today: the SQLite file at
`state.path`), for the commands and the daemon; code that means SQLite opens
`SqliteState.open(path)`.
"""

from __future__ import annotations

from costwatch.config import StateConfig
from costwatch.state.base import BudgetHistoryRow, Message, OutboxItem, Store, Transaction
from costwatch.state.schema import MIGRATIONS, SCHEMA_VERSION
from costwatch.state.sqlite import SqliteState

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "BudgetHistoryRow",
    "Message",
    "OutboxItem",
    "SqliteState",
    "Store",
    "Transaction",
    "open_store",
]


def open_store(
    config: StateConfig,
    *,
    write: bool = True,
    wait: float = 0.0,
    command: str = "a costwatch process",
) -> Store:
    """The store `config` names, opened as `SqliteState.open` opens it (see there): to write,
    this process first becomes its one writer (waiting up to `wait` seconds); `write=False`
    opens it read-only."""
    return SqliteState.open(config.path, write=write, wait=wait, command=command)
