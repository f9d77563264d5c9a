"""The daily usage history in SQLite: the SQL behind `History` (`state/base.py`), over one
connection, for `SqliteState` and its transactions alike.

Tables (migration 3 in `schema.py`): `usage_day` says which local days of a zone are stored
(when exported, settled or not, how many rows, whether the export carried token columns);
`usage_daily` holds their rows, `WITHOUT ROWID` and keyed (zone, day, key, model), so a range of
days of a zone is one range scan of the table itself. Keys, models, key names and zones are
interned as small integers, a day is its number of days since 1970-01-01, so a row is a few
dozen bytes on disk (measured by `bench/bench_history.py`).

Sums are SQL's (`GROUP BY` over the range scan), so only one row per key and model crosses into
Python. A token sum is null where no day reported it, as the loader sums the parts of an export.
`put_day` deletes the day's rows and inserts the new ones inside the caller's transaction: the
caller commits (or rolls back) the day as a whole.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from datetime import UTC, date, datetime, timedelta

import polars as pl

from costwatch import history
from costwatch.state.base import StoredDay
from costwatch.usage import SCHEMA, TOKEN_COLUMNS

__all__ = [
    "KEEP_AT_LEAST",
    "InTransaction",
    "Sums",
    "day_number",
    "delete_before",
    "mark",
    "prune_cutoff",
    "put_day",
    "set_mark",
    "stored_days",
    "usage_between",
    "usage_by_day",
]

_EPOCH = date(1970, 1, 1)
# A running quarter (92 days) must stay whole whatever `state.retention` says, in any zone.
KEEP_AT_LEAST = timedelta(days=94)
_MEMO_RANGES = 16  # ranges a writer remembers (a few per zone: day, week, month, quarter)


def day_number(day: date) -> int:
    return (day - _EPOCH).days


def _day(number: int) -> date:
    return _EPOCH + timedelta(days=number)


def _zone_id(db: sqlite3.Connection, zone: str, *, create: bool = False) -> int | None:
    if create:
        db.execute("INSERT OR IGNORE INTO usage_zone (name) VALUES (?)", (zone,))
    row = db.execute("SELECT id FROM usage_zone WHERE name = ?", (zone,)).fetchone()
    return None if row is None else int(row[0])


def stored_days(
    db: sqlite3.Connection, zone: str, first: date, last: date
) -> dict[date, StoredDay]:
    zone_id = _zone_id(db, zone)
    if zone_id is None:
        return {}
    rows = db.execute(
        "SELECT day, exported_at, settled, rows, has_tokens FROM usage_day"
        " WHERE zone = ? AND day BETWEEN ? AND ? ORDER BY day",
        (zone_id, day_number(first), day_number(last)),
    ).fetchall()
    return {
        _day(number): StoredDay(
            zone=zone,
            day=_day(number),
            exported_at=datetime.fromisoformat(exported_at),
            settled=bool(settled),
            rows=int(count),
            has_tokens=bool(has_tokens),
        )
        for number, exported_at, settled, count, has_tokens in rows
    }


_BETWEEN = """
    WITH sums AS (
        SELECT key, model, sum(requests), sum(cost), sum(prompt), sum(completion), sum(cached),
            sum(creation), sum(no_cache)
        FROM usage_daily
        WHERE zone = :zone AND day BETWEEN :first AND :last GROUP BY key, model
    ), latest AS (
        SELECT key, name, max(day) FROM usage_daily
        WHERE zone = :zone AND day BETWEEN :first AND :last AND name != 0 GROUP BY key
    )
    SELECT k.api_key_id, n.name, m.name, sums.*
    FROM sums LEFT JOIN latest USING (key) JOIN usage_key k ON k.id = sums.key
    LEFT JOIN usage_name n ON n.id = latest.name LEFT JOIN usage_model m ON m.id = sums.model
    ORDER BY sums.key, sums.model
"""
_BY_DAY = """
    SELECT d.day, k.api_key_id, n.name, m.name, d.requests, d.cost,
        d.prompt, d.completion, d.cached, d.creation, d.no_cache
    FROM usage_daily d JOIN usage_key k ON k.id = d.key
    LEFT JOIN usage_name n ON n.id = d.name LEFT JOIN usage_model m ON m.id = d.model
    WHERE d.zone = ? AND d.day BETWEEN ? AND ? ORDER BY d.day, d.key, d.model
"""
# The interned dimensions: (insert a value unless known, read all values and ids).
_INTERN = {
    "key": (
        "INSERT OR IGNORE INTO usage_key (api_key_id) VALUES (?)",
        "SELECT api_key_id, id FROM usage_key",
    ),
    "model": (
        "INSERT OR IGNORE INTO usage_model (name) VALUES (?)",
        "SELECT name, id FROM usage_model",
    ),
    "name": (
        "INSERT OR IGNORE INTO usage_name (name) VALUES (?)",
        "SELECT name, id FROM usage_name",
    ),
}


def usage_between(db: sqlite3.Connection, zone: str, first: date, last: date) -> pl.DataFrame:
    zone_id = _zone_id(db, zone)
    if zone_id is None or last < first:
        return pl.DataFrame(schema=SCHEMA)
    cursor = db.execute(
        _BETWEEN, {"zone": zone_id, "first": day_number(first), "last": day_number(last)}
    )
    # api_key_id, name, model, then the sums after the two ids of `sums.*`
    rows = [(*row[:3], *row[5:]) for row in cursor]
    return _frame(rows, SCHEMA)


def usage_by_day(db: sqlite3.Connection, zone: str, first: date, last: date) -> pl.DataFrame:
    schema = {"day": pl.Int32(), **SCHEMA}
    zone_id = _zone_id(db, zone)
    rows = []
    if zone_id is not None and first <= last:
        rows = db.execute(_BY_DAY, (zone_id, day_number(first), day_number(last))).fetchall()
    frame = _frame(rows, schema)
    days = (pl.lit(_EPOCH, dtype=pl.Date) + pl.duration(days=pl.col("day"))).cast(pl.Date)
    return frame.with_columns(days.alias("day")).select(*SCHEMA, "day")


def _frame(rows: list[tuple[object, ...]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def put_day(
    db: sqlite3.Connection,
    zone: str,
    day: date,
    frame: pl.DataFrame,
    *,
    exported_at: datetime,
    settled: bool,
    has_tokens: bool | None,
) -> None:
    """Replace the day's rows and its `usage_day` row; the caller's transaction holds both."""
    if exported_at.tzinfo is None:
        raise ValueError("exported_at must be timezone-aware")
    rows = _checked(frame)
    zone_id = _zone_id(db, zone, create=True)
    ids = {
        "key": _intern(db, "key", rows["api_key_id"]),
        "model": _intern(db, "model", rows["model"]),
        "name": _intern(db, "name", rows["api_key_name"]),
    }
    coded = rows.select(
        pl.lit(zone_id, dtype=pl.Int64).alias("zone"),
        pl.lit(day_number(day), dtype=pl.Int64).alias("day"),
        _coded("api_key_id", ids["key"]),
        _coded("model", ids["model"]),
        _coded("api_key_name", ids["name"]),
        "requests",
        "total_cost_usd",
        *TOKEN_COLUMNS,
    )
    number = day_number(day)
    db.execute("DELETE FROM usage_daily WHERE zone = ? AND day = ?", (zone_id, number))
    db.executemany("INSERT INTO usage_daily VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", coded.iter_rows())
    tokens = has_tokens if has_tokens is not None else _reports_tokens(rows)
    db.execute(
        "INSERT OR REPLACE INTO usage_day VALUES (?,?,?,?,?,?)",
        (zone_id, number, _iso(exported_at), int(settled), rows.height, int(tokens)),
    )


def _checked(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` as SCHEMA, refused (ValueError) unless it is one row per key and model."""
    missing = [column for column in SCHEMA if column not in frame.columns]
    if missing:
        raise ValueError(f"a stored day needs the columns {', '.join(missing)}")
    rows = frame.select(pl.col(column).cast(dtype) for column, dtype in SCHEMA.items())
    if rows.get_column("api_key_id").null_count():
        raise ValueError("a stored day's rows need an api_key_id")
    if rows.select(pl.struct("api_key_id", "model").is_duplicated().any()).item():
        raise ValueError("a stored day has one row per api_key_id and model")
    return rows


def _reports_tokens(rows: pl.DataFrame) -> bool:
    return bool(rows.select(pl.any_horizontal(pl.col(TOKEN_COLUMNS).is_not_null()).any()).item())


def _intern(db: sqlite3.Connection, dimension: str, values: pl.Series) -> pl.DataFrame:
    """The ids of `values` (rows made for new ones), as a frame of value and id."""
    insert, select = _INTERN[dimension]
    db.executemany(insert, ((value,) for value in values.drop_nulls().unique(maintain_order=True)))
    known = db.execute(select).fetchall()
    return pl.DataFrame(known, schema={"value": pl.String(), "id": pl.Int64()}, orient="row")


def _coded(column: str, ids: pl.DataFrame) -> pl.Expr:
    """`column` as its interned ids; an empty cell (null) is id 0, which has no row."""
    mapping = pl.col(column).replace_strict(
        ids["value"], ids["id"], default=0, return_dtype=pl.Int64
    )
    return mapping.alias(column)


def delete_before(db: sqlite3.Connection, cutoff: date, sums: Sums | None = None) -> int:
    """Delete the stored days before `cutoff`, zone by zone (each a range scan); rows deleted.
    `sums` forgets what it summed over them."""
    number = day_number(cutoff)
    deleted = 0
    for (zone_id,) in db.execute(
        "SELECT DISTINCT zone FROM usage_day WHERE day < ?", (number,)
    ).fetchall():
        deleted += db.execute(
            "DELETE FROM usage_daily WHERE zone = ? AND day < ?", (zone_id, number)
        ).rowcount
        deleted += db.execute(
            "DELETE FROM usage_day WHERE zone = ? AND day < ?", (zone_id, number)
        ).rowcount
    if deleted and sums is not None:
        sums.clear()
    return deleted


def prune_cutoff(now: datetime, retention: timedelta) -> date:
    """The first day kept: `retention` back from `now`, but never less than a running quarter
    needs in any zone (`KEEP_AT_LEAST`)."""
    return (now - max(retention, KEEP_AT_LEAST)).astimezone(UTC).date()


def mark(db: sqlite3.Connection, name: str) -> datetime | None:
    row = db.execute("SELECT at FROM marks WHERE name = ?", (name,)).fetchone()
    return None if row is None else datetime.fromisoformat(row[0])


def set_mark(db: sqlite3.Connection, name: str, at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError("a mark must be timezone-aware")
    db.execute("INSERT OR REPLACE INTO marks VALUES (?, ?)", (name, _iso(at)))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class Sums:
    """The one writer's memo of `usage_between`: per zone and first day, the sum up to the last
    day asked for. A cycle asks for [period start, yesterday] again and again, a day further
    each day: a repeated range is answered from the memo, a longer one by adding only the new
    days (SQL sums those, `history.combine` adds them on, the same rules), so a daemon sums a
    period's stored days once, not every cycle. A day put (or pruned) through this connection
    inside a remembered range drops that range; a commit by any other connection (a second
    `SqliteState`, another program) changes SQLite's `data_version` and empties the memo.
    """

    def __init__(self) -> None:
        self._sums: dict[tuple[str, date], tuple[date, pl.DataFrame]] = {}
        self._version: object = None  # PRAGMA data_version when the memo was filled

    def between(self, db: sqlite3.Connection, zone: str, first: date, last: date) -> pl.DataFrame:
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:  # another connection has written the file since
            self._sums.clear()
            self._version = version
        known = self._sums.get((zone, first))
        if known is not None and known[0] == last:
            return known[1]
        if known is not None and known[0] < last:
            newer = usage_between(db, zone, known[0] + timedelta(days=1), last)
            frame = history.combine([known[1], newer])
        else:
            frame = usage_between(db, zone, first, last)
        if len(self._sums) >= _MEMO_RANGES:
            self._sums.clear()
        self._sums[(zone, first)] = (last, frame)
        return frame

    def forget(self, zone: str, day: date) -> None:
        """`day` of `zone` changed: drop every remembered range that holds it."""
        for (each, first), (last, _) in list(self._sums.items()):
            if each == zone and first <= day <= last:
                del self._sums[(each, first)]

    def clear(self) -> None:
        self._sums.clear()


class InTransaction(ABC):
    """The history's reads and writes inside an open transaction (`SqliteTransaction`); the
    transaction commits them, with whatever else it writes, or rolls them back."""

    _sums: Sums | None = None  # the writer's memo, told of every day put

    @abstractmethod
    def _usable(self) -> sqlite3.Connection:
        """The open transaction\'s connection (`StateError` once it has ended)."""

    def stored_days(self, zone: str, first: date, last: date) -> dict[date, StoredDay]:
        return stored_days(self._usable(), zone, first, last)

    def usage_between(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return usage_between(self._usable(), zone, first, last)

    def usage_by_day(self, zone: str, first: date, last: date) -> pl.DataFrame:
        return usage_by_day(self._usable(), zone, first, last)

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
        """Replace the day's rows and its `StoredDay`, committed with this transaction."""
        if self._sums is not None:  # before the write: a failed one leaves nothing to trust
            self._sums.forget(zone, day)
        put_day(
            self._usable(),
            zone,
            day,
            frame,
            exported_at=exported_at,
            settled=settled,
            has_tokens=has_tokens,
        )

    def mark(self, name: str) -> datetime | None:
        return mark(self._usable(), name)

    def set_mark(self, name: str, at: datetime) -> None:
        set_mark(self._usable(), name, at)
