"""The hourly snapshots in PostgreSQL: the SQL behind `Hourly` (`state/base.py`) inside a
cycle's transaction (`PostgresTransaction`), the same concepts as SQLite's (`hourly.py`):
`usage_hour` (which hours of which days were snapshot) and `usage_hourly` (each key's use of
that day so far), keys and names interned as the daily history's (`pgdaily.py`); a snapshot
replaces its hour's and deletes the zone's days before `keep_from`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date, datetime
from typing import Any

import polars as pl
import psycopg

from costwatch.state import pgdaily
from costwatch.state.base import Snapshots
from costwatch.state.hourly import checked, frame_of

__all__ = ["InTransaction", "delete_before", "put_snapshot", "snapshots"]

Connection = psycopg.Connection[Any]
_READ = """
    SELECT h.day, h.hour, k.api_key_id, n.name, h.requests, h.cost
    FROM usage_hourly h JOIN usage_key k ON k.id = h.key LEFT JOIN usage_name n ON n.id = h.name
    WHERE h.zone = %(zone)s AND h.day BETWEEN %(first)s AND %(last)s
    ORDER BY h.day, h.hour, h.key
"""
# One hour's rows, and each key's row in the last snapshot of its first day (snapshots add up
# over the day, so the day's last holds every key that spent by then): where its days begin.
# Every row is found by its key's prefix (zone, day, hour), never by scanning the window.
_READ_HOUR = """
    WITH taken AS (
        SELECT day, hour FROM usage_hour
        WHERE zone = %(zone)s AND day BETWEEN %(first)s AND %(last)s
    ), last_hours AS (
        SELECT day, max(hour) AS hour FROM taken GROUP BY day
    ), firsts AS (
        SELECT h.key, min(h.day) AS day FROM last_hours t
        JOIN usage_hourly h ON h.zone = %(zone)s AND h.day = t.day AND h.hour = t.hour
        GROUP BY h.key
    ), picked AS (
        SELECT h.day, h.hour, h.key, h.name, h.requests, h.cost FROM taken t
        JOIN usage_hourly h ON h.zone = %(zone)s AND h.day = t.day AND h.hour = t.hour
        WHERE t.hour = %(hour)s
        UNION
        SELECT h.day, h.hour, h.key, h.name, h.requests, h.cost FROM firsts f
        JOIN last_hours t ON t.day = f.day
        JOIN usage_hourly h ON h.zone = %(zone)s AND h.day = f.day AND h.hour = t.hour
            AND h.key = f.key
    )
    SELECT p.day, p.hour, k.api_key_id, n.name, p.requests, p.cost
    FROM picked p JOIN usage_key k ON k.id = p.key LEFT JOIN usage_name n ON n.id = p.name
    ORDER BY p.day, p.hour, p.key
"""


def put_snapshot(
    db: Connection,
    zone: str,
    day: date,
    hour: int,
    frame: pl.DataFrame,
    *,
    taken_at: datetime,
    keep_from: date,
) -> None:
    """Replace the hour's snapshot and forget the zone's days before `keep_from`."""
    rows = checked(frame, hour, taken_at)
    zone_id = pgdaily._zone_id(db, zone, create=True)
    keys = pgdaily._intern(db, "key", rows["api_key_id"])
    names = pgdaily._intern(db, "name", rows["api_key_name"])
    coded = rows.select(
        pgdaily._coded("api_key_id", keys),
        pgdaily._coded("api_key_name", names),
        "requests",
        "total_cost_usd",
    )
    where = (zone_id, day, hour)
    db.execute("DELETE FROM usage_hourly WHERE zone = %s AND day = %s AND hour = %s", where)
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO usage_hourly VALUES (%s,%s,%s,%s,%s,%s,%s)",
            [(*where, *row) for row in coded.iter_rows()],
        )
    db.execute(
        "INSERT INTO usage_hour VALUES (%s,%s,%s,%s,%s) ON CONFLICT (zone, day, hour) DO UPDATE"
        " SET taken_at = excluded.taken_at, rows = excluded.rows",
        (*where, taken_at, rows.height),
    )
    db.execute("DELETE FROM usage_hourly WHERE zone = %s AND day < %s", (zone_id, keep_from))
    db.execute("DELETE FROM usage_hour WHERE zone = %s AND day < %s", (zone_id, keep_from))


def snapshots(
    db: Connection, zone: str, first: date, last: date, hour: int | None = None
) -> Snapshots:
    zone_id = pgdaily._zone_id(db, zone)
    if zone_id is None or last < first:
        return Snapshots(frame_of([]), frozenset())
    span = {"zone": zone_id, "first": first, "last": last, "hour": hour}
    rows = db.execute(_READ_HOUR if hour is not None else _READ, span).fetchall()
    taken = db.execute(
        "SELECT day, hour FROM usage_hour WHERE zone = %(zone)s"
        " AND day BETWEEN %(first)s AND %(last)s",
        span,
    ).fetchall()
    return Snapshots(frame_of(rows), frozenset((day, int(hour)) for day, hour in taken))


def delete_before(db: Connection, cutoff: date) -> int:
    """Delete every zone's snapshots of days before `cutoff`; rows deleted."""
    deleted = db.execute("DELETE FROM usage_hourly WHERE day < %s", (cutoff,)).rowcount
    return deleted + db.execute("DELETE FROM usage_hour WHERE day < %s", (cutoff,)).rowcount


class InTransaction(ABC):
    """The snapshots' reads and writes inside an open transaction (`PostgresTransaction`)."""

    @abstractmethod
    def _usable(self) -> Connection:
        """The open transaction\'s connection (`StateError` once it has ended)."""

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
        put_snapshot(self._usable(), zone, day, hour, frame, taken_at=taken_at, keep_from=keep_from)

    def snapshots(
        self, zone: str, first: date, last: date, *, hour: int | None = None
    ) -> Snapshots:
        return snapshots(self._usable(), zone, first, last, hour)
