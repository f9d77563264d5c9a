"""What costwatch keeps between cycles: the alert ledger, the outbox, export health and the
daily usage history, behind one interface (`Store`).

    base.py    `Store`, `Transaction` and `History`: what a cycle, delivery, the keeper of the
               history and the commands need; the records (`OutboxItem`, `Message`, `StoredDay`)
    sqlite.py  `SqliteState`: the store in one SQLite file
    daily.py   the daily usage history's SQL (`usage_day`, `usage_daily`, marks)
    schema.py  creating, recognising and migrating the file (`MIGRATIONS`, `SCHEMA_VERSION`)
    lock.py    one writer per state file (`flock` on `<state>.lock`)
    rows.py    damaged rows read the safe way, each logged once and counted

`open_store(config)` opens the store the configuration names (today: the SQLite file at
`state.path`), for the commands and the daemon; code that means SQLite opens
`SqliteState.open(path)`.
"""

from __future__ import annotations

from costwatch.config import StateConfig
from costwatch.state.base import History, Message, OutboxItem, Store, StoredDay, Transaction
from costwatch.state.schema import MIGRATIONS, SCHEMA_VERSION
from costwatch.state.sqlite import SqliteState

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "History",
    "Message",
    "OutboxItem",
    "SqliteState",
    "Store",
    "StoredDay",
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
