"""What costwatch keeps between cycles: the alert ledger, the outbox, export health and the
daily usage history, behind one interface (`Store`).

    base.py      `Store`, `Transaction`, `History` and `Notices`: what a cycle, delivery, the
                 keeper of the history and the commands need; the records (`OutboxItem`,
                 `Message`, `StoredDay`, `NoticeKey`)
    sqlite.py    `SqliteState`: the store in one SQLite file
    daily.py     the daily usage history's SQL (`usage_day`, `usage_daily`, marks)
    schema.py    creating, recognising and migrating the file (`MIGRATIONS`, `SCHEMA_VERSION`)
    lock.py      one writer per state file (`flock` on `<state>.lock`)
    hourly.py    the spend rate's hourly snapshots of today so far (`pghourly.py` on PostgreSQL)
    notices.py   notices sent once per kind, subject and period, in the ledger (both engines)
    rows.py      damaged rows read the safe way, each logged once and counted
    postgres.py  `PostgresState`: the store in PostgreSQL, its writes fenced by the epoch
    pgschema.py  its tables and migrations (`pgschema.MIGRATIONS`), its advisory locks
    leader.py    leader election on PostgreSQL (`Elector`), `Leadership` for the daemon

`open_store(config)` opens the store the configuration names: the SQLite file at `state.path`,
or the PostgreSQL database at `state.url`; `leadership(store)` says who of several processes
leads. Code that means SQLite opens `SqliteState.open(path)`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from costwatch.config import StateConfig
from costwatch.state.base import (
    History,
    Message,
    NoticeKey,
    Notices,
    OutboxItem,
    Store,
    StoredDay,
    Transaction,
)
from costwatch.state.schema import MIGRATIONS, SCHEMA_VERSION
from costwatch.state.sqlite import SqliteState

if TYPE_CHECKING:
    from costwatch.state.leader import Leadership, SharedSnapshot
    from costwatch.state.postgres import PostgresState

# Names whose modules load psycopg: imported when first asked for (`__getattr__`), so that a
# process on SQLite (`costwatch check` from cron) does not pay for PostgreSQL's driver.
_ON_POSTGRES = (
    ("Elected", "costwatch.state.leader"),
    ("Leadership", "costwatch.state.leader"),
    ("SharedSnapshot", "costwatch.state.leader"),
    ("Sole", "costwatch.state.leader"),
    ("PostgresState", "costwatch.state.postgres"),
)


def __getattr__(name: str) -> Any:
    for known, module in _ON_POSTGRES:
        if name == known:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "History",
    "Leadership",
    "Message",
    "NoticeKey",
    "Notices",
    "OutboxItem",
    "PostgresState",
    "SharedSnapshot",
    "SqliteState",
    "Store",
    "StoredDay",
    "Transaction",
    "leadership",
    "open_store",
]


def open_store(
    config: StateConfig,
    *,
    write: bool = True,
    wait: float = 0.0,
    command: str = "a costwatch process",
    lead: bool = True,
) -> Store:
    """The store `config` names. SQLite: opened as `SqliteState.open` opens it (see there): to
    write, this process first becomes its one writer (waiting up to `wait` seconds);
    `write=False` opens it read-only. PostgreSQL: to write, this process must lead (see
    `leader.py`): with `lead`, it takes the leader lock first (waiting up to `wait` seconds,
    else `StateError` naming the leader); without, it is a standby that writes nothing until
    the daemon's campaign (`leadership(store)`) makes it lead. `write=False` writes nothing."""
    if config.url is None:
        return SqliteState.open(config.path, write=write, wait=wait, command=command)
    from costwatch.state.postgres import PostgresState  # noqa: PLC0415 (psycopg, only here)

    password = config.password.get_secret_value() if config.password is not None else None
    store = PostgresState.open(
        config.url.get_secret_value(),
        password=password,
        where=config.where(),
        lease=config.lease,
        holder=command,
        read_only=not write,
    )
    try:
        if write and lead:
            assert store.elector is not None
            store.elector.lead(wait)
    except BaseException:
        store.close()
        raise
    return store


def leadership(store: Store) -> Leadership:
    """Who leads among the processes on `store`: elected on PostgreSQL, this one on SQLite."""
    from costwatch.state.leader import Elected, Sole  # noqa: PLC0415 (psycopg, only here)
    from costwatch.state.postgres import PostgresState  # noqa: PLC0415

    if isinstance(store, PostgresState) and store.elector is not None:
        return Elected(store.elector, store.share, store.shared)
    return Sole()
