"""The hourly snapshots of today so far (`Hourly`, `state/hourly.py`, `state/pghourly.py`), on
both engines: a snapshot read back as it was put, an hour replaced by its later snapshot, an
hour without use still taken, the window kept and the rest let go, bad frames refused, pruned
with the days, carried by `migrate-state`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from costwatch.detect.rate import SNAPSHOT
from costwatch.state import PostgresState, SqliteState, Store
from costwatch.state.transfer import sqlite_to_postgres

ZONE = "Europe/Berlin"
DAY = date(2026, 12, 2)
T0 = datetime(2026, 12, 2, 9, 15, tzinfo=UTC)  # 10:15 in Berlin


def keys(*rows: tuple[str, str | None, int, float]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "api_key_id": pl.String(),
            "api_key_name": pl.String(),
            "requests": pl.Int64(),
            "total_cost_usd": pl.Float64(),
        },
        orient="row",
    )


def put(store: Store, day: date, hour: int, frame: pl.DataFrame, keep: int = 28) -> None:
    with store.transaction() as transaction:
        transaction.put_snapshot(
            ZONE, day, hour, frame, taken_at=T0, keep_from=day - timedelta(days=keep)
        )


def read(
    store: Store, first: date, last: date
) -> tuple[list[tuple[object, ...]], list[tuple[date, int]]]:
    with store.transaction() as transaction:
        taken = transaction.snapshots(ZONE, first, last)
    assert taken.frame.schema == SNAPSHOT
    return taken.frame.rows(), sorted(taken.taken)


def test_a_snapshot_reads_back_as_it_was_put_with_its_hour_taken(store: Store) -> None:
    put(store, DAY, 10, keys(("k1", "bot", 120, 7.5), ("k2", None, 3, 0.01)))
    rows, taken = read(store, DAY, DAY)
    assert rows == [(DAY, 10, "k1", "bot", 120, 7.5), (DAY, 10, "k2", None, 3, 0.01)]
    assert taken == [(DAY, 10)]


def test_a_later_snapshot_of_the_same_hour_replaces_it_and_other_hours_stay(store: Store) -> None:
    put(store, DAY, 9, keys(("k1", "bot", 50, 2.0)))
    put(store, DAY, 10, keys(("k1", "bot", 100, 5.0), ("k2", "etl", 1, 0.5)))
    put(store, DAY, 10, keys(("k1", "bot", 130, 6.5)))
    rows, taken = read(store, DAY, DAY)
    assert rows == [(DAY, 9, "k1", "bot", 50, 2.0), (DAY, 10, "k1", "bot", 130, 6.5)]
    assert taken == [(DAY, 9), (DAY, 10)]


def test_an_hour_by_which_nothing_was_used_is_taken_with_no_rows(store: Store) -> None:
    put(store, DAY, 3, keys())
    rows, taken = read(store, DAY, DAY)
    assert (rows, taken) == ([], [(DAY, 3)])
    with store.transaction() as transaction:
        assert transaction.snapshots(ZONE, DAY, DAY).recorded(3) == [DAY]
        assert transaction.snapshots(ZONE, DAY, DAY).recorded(4) == []
        assert transaction.snapshots("UTC", DAY, DAY).taken == frozenset()  # another zone


def test_only_the_window_is_kept(store: Store) -> None:
    for back in range(40, -1, -1):
        put(store, DAY - timedelta(days=back), 10, keys(("k1", "bot", back, 1.0)), keep=28)
    rows, taken = read(store, DAY - timedelta(days=60), DAY)
    assert [day for day, _ in taken] == [DAY - timedelta(days=b) for b in range(28, -1, -1)]
    assert len(rows) == 29


def test_a_frame_that_is_not_a_snapshot_is_refused_and_nothing_written(store: Store) -> None:
    put(store, DAY, 10, keys(("k1", "bot", 1, 1.0)))
    for frame, hour, problem in [
        (keys(("k1", "bot", 1, 1.0), ("k1", "bot", 2, 2.0)), 10, "one row per api_key_id"),
        (keys((None, "bot", 1, 1.0)), 10, "need an api_key_id"),  # type: ignore[arg-type]
        (keys(("k1", "bot", 1, 1.0)).drop("requests"), 10, "needs the columns requests"),
        (keys(("k1", "bot", 1, 1.0)), 24, "hour is 0-23"),
    ]:
        with pytest.raises(ValueError, match=problem):
            put(store, DAY, hour, frame)
    assert read(store, DAY, DAY)[0] == [(DAY, 10, "k1", "bot", 1, 1.0)]


def test_prune_lets_snapshots_go_with_the_days(store: Store) -> None:
    old = DAY - timedelta(days=200)
    put(store, old, 10, keys(("k1", "bot", 1, 1.0)), keep=400)
    put(store, DAY, 10, keys(("k1", "bot", 1, 1.0)), keep=400)
    assert store.prune(T0, timedelta(days=100)) == 2  # the old day's row and its hour
    assert read(store, old, DAY)[1] == [(DAY, 10)]


def test_migrate_state_carries_the_snapshots(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        put(state, DAY - timedelta(days=1), 10, keys(("k1", "bot", 9, 1.5)))
        put(state, DAY, 10, keys(("k1", "bot", 12, 2.0), ("k2", None, 1, 0.1)))
        put(state, DAY, 11, keys())
        before = read(state, DAY - timedelta(days=1), DAY)
    with PostgresState.open(pg_url, where="test database") as target:
        sqlite_to_postgres(path, target)
        assert read(target, DAY - timedelta(days=1), DAY) == before


def test_one_hours_read_holds_that_hour_and_where_each_keys_days_begin(store: Store) -> None:
    """What the spend rate reads of a window: the hour's snapshots, and each key's row in the
    last snapshot of its first day (a key that starts at 14:00 had $0 by 10:00 after it)."""
    day1, day2, day3 = DAY - timedelta(days=2), DAY - timedelta(days=1), DAY
    put(store, day1, 10, keys(("early", "e", 1, 1.0)))
    put(store, day1, 15, keys(("early", "e", 2, 2.0), ("late", "l", 5, 9.0)))
    put(store, day2, 10, keys(("early", "e", 1, 1.5)))
    put(store, day2, 23, keys(("early", "e", 3, 3.0), ("new", "n", 1, 0.5)))
    put(store, day3, 10, keys(("early", "e", 1, 4.0), ("late", "l", 1, 8.0)))
    with store.transaction() as transaction:
        read = transaction.snapshots(ZONE, day1, day3, hour=10)
        whole = transaction.snapshots(ZONE, day1, day3)
    assert read.frame.rows() == [
        (day1, 10, "early", "e", 1, 1.0),
        (day1, 15, "early", "e", 2, 2.0),  # each key's first day's last snapshot
        (day1, 15, "late", "l", 5, 9.0),
        (day2, 10, "early", "e", 1, 1.5),
        (day2, 23, "new", "n", 1, 0.5),
        (day3, 10, "early", "e", 1, 4.0),
        (day3, 10, "late", "l", 1, 8.0),
    ]
    assert read.taken == whole.taken
    assert read.recorded(10) == [day1, day2, day3]
    assert whole.frame.height == 8
