"""The daily usage history in PostgreSQL: the SQL behind `History` (`state/base.py`) for
`PostgresState` and its transactions, the same concepts as SQLite's (`daily.py`).

Tables (`pgschema.HISTORY_SQL`): `usage_day` (which local days of a zone are stored, when exported,
settled or not, how many rows, whether the export carried token columns) and `usage_daily`
(per zone, day, key and model; keys, models, key names and zones interned as integers, id 0
standing for an empty cell), `marks`. Sums are SQL's (`GROUP BY`, cast back to bigint so no
`numeric` crosses into Python); a token sum is null where no day reported it. `put_day`
replaces the day inside the caller's transaction, its rows written with `COPY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date, datetime
from typing import Any

import polars as pl
import psycopg

from costwatch.state.base import StoredDay
from costwatch.state.daily import _checked, _reports_tokens
from costwatch.usage import SCHEMA, TOKEN_COLUMNS

__all__ = ["InTransaction", "delete_before", "mark", "put_day", "set_mark", "stored_days"]

Connection = psycopg.Connection[Any]

_TOKENS = ("prompt", "completion", "cached", "creation", "no_cache")  # TOKEN_COLUMNS, stored
_BETWEEN = f"""
    WITH sums AS (
        SELECT key, model, sum(requests)::bigint AS requests, sum(cost) AS cost,
            {", ".join(f"sum({t})::bigint AS {t}" for t in _TOKENS)}
        FROM usage_daily WHERE zone = %(zone)s AND day BETWEEN %(first)s AND %(last)s
        GROUP BY key, model
    ), latest AS (
        SELECT DISTINCT ON (key) key, name FROM usage_daily
        WHERE zone = %(zone)s AND day BETWEEN %(first)s AND %(last)s ORDER BY key, day DESC
    )
    SELECT k.api_key_id, n.name, m.name, sums.requests, sums.cost,
        {", ".join(f"sums.{t}" for t in _TOKENS)}
    FROM sums JOIN latest USING (key) JOIN usage_key k ON k.id = sums.key
    LEFT JOIN usage_name n ON n.id = latest.name LEFT JOIN usage_model m ON m.id = sums.model
    ORDER BY sums.key, sums.model
"""  # noqa: S608  (the interpolated names are the constant _TOKENS)
_BY_DAY = f"""
    SELECT k.api_key_id, n.name, m.name, d.requests, d.cost,
        {", ".join(f"d.{t}" for t in _TOKENS)}, d.day
    FROM usage_daily d JOIN usage_key k ON k.id = d.key
    LEFT JOIN usage_name n ON n.id = d.name LEFT JOIN usage_model m ON m.id = d.model
    WHERE d.zone = %s AND d.day BETWEEN %s AND %s ORDER BY d.day, d.key, d.model
"""  # noqa: S608
_INTERN = {
    "key": ("usage_key", "api_key_id"),
    "model": ("usage_model", "name"),
    "name": ("usage_name", "name"),
}


def _zone_id(db: Connection, zone: str, *, create: bool = False) -> int | None:
    if create:
        db.execute("INSERT INTO usage_zone (name) VALUES (%s) ON CONFLICT DO NOTHING", (zone,))
    row = db.execute("SELECT id FROM usage_zone WHERE name = %s", (zone,)).fetchone()
    return None if row is None else int(row[0])


def stored_days(db: Connection, zone: str, first: date, last: date) -> dict[date, StoredDay]:
    zone_id = _zone_id(db, zone)
    if zone_id is None:
        return {}
    rows = db.execute(
        "SELECT day, exported_at, settled, rows, has_tokens FROM usage_day"
        " WHERE zone = %s AND day BETWEEN %s AND %s ORDER BY day",
        (zone_id, first, last),
    ).fetchall()
    return {
        day: StoredDay(zone, day, exported_at, bool(settled), int(count), bool(tokens))
        for day, exported_at, settled, count, tokens in rows
    }


def usage_between(db: Connection, zone: str, first: date, last: date) -> pl.DataFrame:
    zone_id = _zone_id(db, zone)
    if zone_id is None or last < first:
        return pl.DataFrame(schema=SCHEMA)
    rows = db.execute(_BETWEEN, {"zone": zone_id, "first": first, "last": last}).fetchall()
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def usage_by_day(db: Connection, zone: str, first: date, last: date) -> pl.DataFrame:
    schema = {**SCHEMA, "day": pl.Date()}
    zone_id = _zone_id(db, zone)
    rows: list[tuple[Any, ...]] = []
    if zone_id is not None and first <= last:
        rows = db.execute(_BY_DAY, (zone_id, first, last)).fetchall()
    return pl.DataFrame(rows, schema=schema, orient="row")


def put_day(
    db: Connection,
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
        _coded("api_key_id", ids["key"]),
        _coded("model", ids["model"]),
        _coded("api_key_name", ids["name"]),
        "requests",
        "total_cost_usd",
        *TOKEN_COLUMNS,
    )
    db.execute("DELETE FROM usage_daily WHERE zone = %s AND day = %s", (zone_id, day))
    columns = ", ".join(("zone", "day", "key", "model", "name", "requests", "cost", *_TOKENS))
    with db.cursor().copy(f"COPY usage_daily ({columns}) FROM STDIN") as copy:
        for row in coded.iter_rows():
            copy.write_row((zone_id, day, *row))
    tokens = has_tokens if has_tokens is not None else _reports_tokens(rows)
    db.execute(
        "INSERT INTO usage_day VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (zone, day) DO UPDATE SET"
        " exported_at = excluded.exported_at, settled = excluded.settled, rows = excluded.rows,"
        " has_tokens = excluded.has_tokens",
        (zone_id, day, exported_at, settled, rows.height, tokens),
    )


def _intern(db: Connection, dimension: str, values: pl.Series) -> pl.DataFrame:
    """The ids of `values` (rows made for new ones), as a frame of value and id."""
    table, column = _INTERN[dimension]
    new = values.drop_nulls().unique(maintain_order=True).to_list()
    db.execute(
        f"INSERT INTO {table} ({column}) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING".encode(),
        (new,),
    )
    known = db.execute(f"SELECT {column}, id FROM {table}".encode()).fetchall()  # noqa: S608
    return pl.DataFrame(known, schema={"value": pl.String(), "id": pl.Int64()}, orient="row")


def _coded(column: str, ids: pl.DataFrame) -> pl.Expr:
    """`column` as its interned ids; an empty cell (null) is id 0, which has no row."""
    mapping = pl.col(column).replace_strict(
        ids["value"], ids["id"], default=0, return_dtype=pl.Int64
    )
    return mapping.alias(column)


def delete_before(db: Connection, cutoff: date) -> int:
    """Delete the stored days before `cutoff`; rows deleted."""
    deleted = db.execute("DELETE FROM usage_daily WHERE day < %s", (cutoff,)).rowcount
    return deleted + db.execute("DELETE FROM usage_day WHERE day < %s", (cutoff,)).rowcount


def mark(db: Connection, name: str) -> datetime | None:
    row = db.execute("SELECT at FROM marks WHERE name = %s", (name,)).fetchone()
    return None if row is None else row[0]


def set_mark(db: Connection, name: str, at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError("a mark must be timezone-aware")
    db.execute(
        "INSERT INTO marks VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET at = excluded.at",
        (name, at),
    )


class InTransaction(ABC):
    """The history's reads and writes inside an open transaction (`PostgresTransaction`)."""

    @abstractmethod
    def _usable(self) -> Connection:
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
