"""Notices sent once per kind, subject and period (`NoticeKey`, `Notices` in `base.py`), kept in
the ledger, on SQLite and PostgreSQL with the same SQL.

A notice's row in the `ledger` table has no budget (`budget = ''`: a budget's name is never
empty), the notice's kind, subject, model, metric and period in the key columns, zeros for
level, limit and use, and when it was first recorded as `sent_at`. So the ledger is the one
record of what was sent: `migrate-state` copies it whole, `prune` lets a notice's row go once
its period has ended longer than the retention ago (`period_end`), and `rows.read_ledger` (the
budgets' ledger) leaves these rows out. Before migration 4 (SQLite; 2 on PostgreSQL) the
detectors kept a mark per finding (`finding:<identity>` in `marks`); the migration moves them
here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from costwatch import periods
from costwatch.state.base import NoticeKey
from costwatch.state.rows import Query

__all__ = ["RECORD", "period_end", "record_rows", "sent"]

# `?` placeholders (psycopg's through `pgtransaction.placeholders`); the time is the caller's
# engine's (SQLite: ISO text, PostgreSQL: an aware datetime).
RECORD = (
    "INSERT INTO ledger (budget, kind, subject, model, metric, period, level, limit_value,"
    " used, sent_at) VALUES ('', ?, ?, ?, ?, ?, 0, 0, 0, ?)"
    " ON CONFLICT (budget, subject, model, metric, kind, period) DO NOTHING"
)
_SENT = "SELECT kind, subject, model, metric FROM ledger WHERE budget = '' AND period = ?"
# A local day ends at the latest 12 hours after the next UTC midnight (UTC-12): two days after
# its UTC midnight is past its end in every zone.
_DAY_END = timedelta(days=2)


def sent(query: Query, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
    """Those of `keys` that the ledger holds, one query per period (a cycle asks about one)."""
    wanted = set(keys)
    found: set[NoticeKey] = set()
    for period in sorted({key.period for key in wanted}):
        for kind, subject, model, metric in query(_SENT, (period,)):
            key = NoticeKey(_text(kind), _text(subject), period, _text(model), _text(metric))
            if key in wanted:
                found.add(key)
    return found


def record_rows(keys: Iterable[NoticeKey], at: Any) -> list[tuple[Any, ...]]:
    """RECORD's parameters for `keys`, each once, sent at `at` (as the engine stores times)."""
    return [(k.kind, k.subject, k.model, k.metric, k.period, at) for k in sorted(set(keys))]


def period_end(period: str) -> datetime | None:
    """When the period a ledger row names ends: a `Period.key()`'s end; a local day's ISO date
    (a notice's day, its zone not kept), past its end in every zone; None if it names none."""
    try:
        return periods.from_key(period).end
    except ValueError:
        pass
    try:
        day = date.fromisoformat(period)
    except ValueError:
        return None
    return datetime.combine(day, time(), UTC) + _DAY_END


def _text(value: Any) -> str:
    """A key column as text (SQLite keeps a BLOB it was given as one)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
