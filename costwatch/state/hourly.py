"""The hourly snapshots in SQLite: the SQL behind `Hourly` (`state/base.py`), inside a cycle's
transaction (`SqliteTransaction`).

Tables (migration 5 in `schema.py`): `usage_hour` says which local hours of which days of a
zone were snapshot (when, how many keys), `usage_hourly` holds each key's use of that day so
far (requests and cost; keys and names interned as the daily history's, `daily.py`), keyed
(zone, day, hour, key) so a zone's window of days is one range scan. A snapshot replaces the
hour's inside the caller's transaction, and deletes the zone's days before `keep_from`: the
table holds the detectors' window only (about 24 x window x the keys that spend that day).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from datetime import UTC, date, datetime

import polars as pl

from costwatch.detect.rate import SNAPSHOT
from costwatch.state import daily
from costwatch.state.base import Snapshots

__all__ = ["COLUMNS", "InTransaction", "checked", "delete_before", "put_snapshot", "snapshots"]

# What a snapshot's frame holds: one row per key.
COLUMNS: dict[str, pl.DataType] = {
    name: SNAPSHOT[name] for name in ("api_key_id", "api_key_name", "requests", "total_cost_usd")
}
_READ = """
    SELECT h.day, h.hour, k.api_key_id, n.name, h.requests, h.cost
    FROM usage_hourly h JOIN usage_key k ON k.id = h.key LEFT JOIN usage_name n ON n.id = h.name
    WHERE h.zone = :zone AND h.day BETWEEN :first AND :last ORDER BY h.day, h.hour, h.key
"""
# One hour's rows, and each key's row in the last snapshot of its first day (snapshots add up
# over the day, so the day's last holds every key that spent by then): where its days begin.
# Every row is found by its key's prefix (zone, day, hour), never by scanning the window.
_READ_HOUR = """
    WITH taken AS (
        SELECT day, hour FROM usage_hour WHERE zone = :zone AND day BETWEEN :first AND :last
    ), last_hours AS (
        SELECT day, max(hour) AS hour FROM taken GROUP BY day
    ), firsts AS (
        SELECT h.key, min(h.day) AS day FROM last_hours t
        JOIN usage_hourly h ON h.zone = :zone AND h.day = t.day AND h.hour = t.hour
        GROUP BY h.key
    ), picked AS (
        SELECT h.day, h.hour, h.key, h.name, h.requests, h.cost FROM taken t
        JOIN usage_hourly h ON h.zone = :zone AND h.day = t.day AND h.hour = t.hour
        WHERE t.hour = :hour
        UNION
        SELECT h.day, h.hour, h.key, h.name, h.requests, h.cost FROM firsts f
        JOIN last_hours t ON t.day = f.day
        JOIN usage_hourly h ON h.zone = :zone AND h.day = f.day AND h.hour = t.hour
            AND h.key = f.key
    )
    SELECT p.day, p.hour, k.api_key_id, n.name, p.requests, p.cost
    FROM picked p JOIN usage_key k ON k.id = p.key LEFT JOIN usage_name n ON n.id = p.name
    ORDER BY p.day, p.hour, p.key
"""


def checked(frame: pl.DataFrame, hour: int, taken_at: datetime) -> pl.DataFrame:
    """`frame` as COLUMNS, refused (ValueError) unless it is a snapshot: one row per key, an
    hour of 0-23, an aware time."""
    if not 0 <= hour <= 23:
        raise ValueError(f"a snapshot's hour is 0-23, not {hour}")
    if taken_at.tzinfo is None:
        raise ValueError("taken_at must be timezone-aware")
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"a snapshot needs the columns {', '.join(missing)}")
    rows = frame.select(pl.col(column).cast(dtype) for column, dtype in COLUMNS.items())
    if rows.get_column("api_key_id").null_count():
        raise ValueError("a snapshot's rows need an api_key_id")
    if rows.get_column("api_key_id").is_duplicated().any():
        raise ValueError("a snapshot has one row per api_key_id")
    return rows


def frame_of(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    """SNAPSHOT from rows of (day as a date, hour, key, name, requests, cost)."""
    return pl.DataFrame(rows, schema=SNAPSHOT, orient="row")


def put_snapshot(
    db: sqlite3.Connection,
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
    zone_id = daily._zone_id(db, zone, create=True)
    keys = daily._intern(db, "key", rows["api_key_id"])
    names = daily._intern(db, "name", rows["api_key_name"])
    coded = rows.select(
        daily._coded("api_key_id", keys),
        daily._coded("api_key_name", names),
        "requests",
        "total_cost_usd",
    )
    number = daily.day_number(day)
    where = (zone_id, number, hour)
    db.execute("DELETE FROM usage_hourly WHERE zone = ? AND day = ? AND hour = ?", where)
    db.executemany(
        "INSERT INTO usage_hourly VALUES (?,?,?,?,?,?,?)",
        ((*where, *row) for row in coded.iter_rows()),
    )
    taken = taken_at.astimezone(UTC).isoformat()
    db.execute("INSERT OR REPLACE INTO usage_hour VALUES (?,?,?,?,?)", (*where, taken, rows.height))
    old = (zone_id, daily.day_number(keep_from))
    db.execute("DELETE FROM usage_hourly WHERE zone = ? AND day < ?", old)
    db.execute("DELETE FROM usage_hour WHERE zone = ? AND day < ?", old)


def snapshots(
    db: sqlite3.Connection, zone: str, first: date, last: date, hour: int | None = None
) -> Snapshots:
    zone_id = daily._zone_id(db, zone)
    if zone_id is None or last < first:
        return Snapshots(frame_of([]), frozenset())
    span = {
        "zone": zone_id,
        "first": daily.day_number(first),
        "last": daily.day_number(last),
        "hour": hour,
    }
    rows = [
        (_day(row[0]), *row[1:])
        for row in db.execute(_READ_HOUR if hour is not None else _READ, span)
    ]
    taken = db.execute(
        "SELECT day, hour FROM usage_hour WHERE zone = :zone AND day BETWEEN :first AND :last",
        span,
    ).fetchall()
    return Snapshots(frame_of(rows), frozenset((_day(day), hour) for day, hour in taken))


def delete_before(db: sqlite3.Connection, cutoff: date) -> int:
    """Delete every zone's snapshots of days before `cutoff`; rows deleted."""
    number = daily.day_number(cutoff)
    deleted = db.execute("DELETE FROM usage_hourly WHERE day < ?", (number,)).rowcount
    return deleted + db.execute("DELETE FROM usage_hour WHERE day < ?", (number,)).rowcount


def _day(number: int) -> date:
    return date.fromordinal(daily._EPOCH.toordinal() + number)


class InTransaction(ABC):
    """The snapshots' reads and writes inside an open transaction (`SqliteTransaction`)."""

    @abstractmethod
    def _usable(self) -> sqlite3.Connection:
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
