"""A cycle's transaction on PostgreSQL (`PostgresTransaction`), and how rows are written and read
back: aware UTC times, the ledger's upsert, export health."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from costwatch.alerts import LedgerEntry, LedgerKey
from costwatch.errors import StateError
from costwatch.health import ExportHealth
from costwatch.state import notices, pgdaily, pghourly
from costwatch.state.base import Message, NoticeKey
from costwatch.state.rows import Damage, read_ledger

__all__ = ["PostgresTransaction", "aware", "placeholders", "read_health"]

Connection = psycopg.Connection[Any]


class PostgresTransaction(pgdaily.InTransaction, pghourly.InTransaction):
    """What a cycle reads and writes inside `PostgresState.transaction()`, the history's and
    the snapshots' reads and writes (`pgdaily`, `pghourly`) included."""

    def __init__(self, db: Connection, damage: Damage) -> None:
        self._db = db
        self._damage = damage
        self.ended = False

    def ledger(self, periods: Iterable[str]) -> dict[LedgerKey, LedgerEntry]:
        return read_ledger(self._query, periods, self._damage)

    def export_health(self) -> ExportHealth:
        return read_health(self._query)

    def commit(
        self,
        *,
        now: datetime,
        ledger: Sequence[LedgerEntry] = (),
        messages: Sequence[Message] = (),
        health: ExportHealth | None = None,
    ) -> list[int]:
        db = self._usable()
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO ledger VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (budget, subject, model, metric, kind, period) DO UPDATE SET"
                " level = excluded.level, limit_value = excluded.limit_value,"
                " used = excluded.used, sent_at = excluded.sent_at",
                [_ledger_row(e) for e in ledger],
            )
            ids: list[int] = []
            for message in messages:
                row = cursor.execute(
                    "INSERT INTO outbox (created_at, channel, kind, payload)"
                    " VALUES (%s,%s,%s,%s) RETURNING id",
                    (aware(now), message.channel, message.kind, json.dumps(message.payload)),
                ).fetchone()
                assert row is not None
                ids.append(int(row[0]))
            if health is not None:
                cursor.execute(
                    "INSERT INTO export_health VALUES (1,%s,%s,%s,%s,%s) ON CONFLICT (id) DO"
                    " UPDATE SET consecutive_failures = excluded.consecutive_failures,"
                    " failing_since = excluded.failing_since,"
                    " last_success = excluded.last_success,"
                    " last_reason = excluded.last_reason, alerted = excluded.alerted",
                    (
                        health.consecutive_failures,
                        aware(health.failing_since),
                        aware(health.last_success),
                        health.last_reason,
                        health.alerted,
                    ),
                )
        return ids

    def notices_sent(self, keys: Iterable[NoticeKey]) -> set[NoticeKey]:
        return notices.sent(self._query, keys)

    def record_notices(self, keys: Iterable[NoticeKey], at: datetime) -> None:
        """Record `keys` as sent at `at`, committed with this transaction."""
        with self._usable().cursor() as cursor:
            cursor.executemany(placeholders(notices.RECORD), notices.record_rows(keys, aware(at)))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._usable().execute(placeholders(sql), params).fetchall()

    def _usable(self) -> Connection:
        if self.ended:
            raise StateError("this transaction has ended; start another with transaction()")
        return self._db


def _ledger_row(e: LedgerEntry) -> tuple[Any, ...]:
    return (
        e.budget,
        e.subject,
        e.model,
        e.metric,
        e.kind,
        e.period,
        e.level,
        e.limit,
        e.used,
        aware(e.sent_at),
    )


def read_health(query: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]) -> ExportHealth:
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
        failing_since=r[1],
        last_success=r[2],
        last_reason=r[3],
        alerted=bool(r[4]),
    )


def placeholders(sql: str) -> bytes:
    """SQL shared with SQLite (`rows.read_ledger`) writes its parameters `?`; psycopg's `%s`."""
    return sql.replace("?", "%s").encode()


def aware(moment: datetime | None) -> datetime | None:
    """A time to store: aware, in UTC (a naive one is refused, as SQLite's `_iso` does)."""
    if moment is None:
        return None
    if moment.utcoffset() is None:
        raise ValueError(f"a naive datetime cannot be stored: {moment!r}; pass an aware one")
    return moment.astimezone(UTC)
