"""The daily usage history over real SQLite files: days stored whole, sums over days, names,
tokens, zones, marks, pruning, read-only files, and a SIGKILL in the middle of `put_day`."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwatch import history, usage
from costwatch.errors import StateError
from costwatch.state import MIGRATIONS, SqliteState, Store, StoredDay

ROOT = Path(__file__).resolve().parents[2]
BERLIN = "Europe/Berlin"
T0 = datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
D1, D2, D3 = date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19)


def day_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A day's usage as usage.SCHEMA; tokens absent from a row are null."""
    full = [{column: row.get(column) for column in usage.SCHEMA} for row in rows]
    return pl.DataFrame(full, schema=usage.SCHEMA, orient="row")


def row(key: str, model: str | None, requests: int, cost: float, **more: Any) -> dict[str, Any]:
    return {
        "api_key_id": key,
        "api_key_name": more.pop("name", f"name of {key}"),
        "model": model,
        "requests": requests,
        "total_cost_usd": cost,
        **more,
    }


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def state(store: Store) -> Store:
    """Each implementation of the history in turn: the SQLite file and PostgreSQL (conftest)."""
    return store


@pytest.fixture
def sqlite_state(path: Path) -> Any:
    with SqliteState.open(path) as opened:
        yield opened


def sorted_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.sort("api_key_id", "model", nulls_last=True).to_dicts()


def test_a_stored_day_reads_back_as_it_was_put_with_what_is_known_of_it(
    state: SqliteState,
) -> None:
    frame = day_frame([row("k1", "gpt-4o", 10, 1.25), row("k2", "o3-mini", 3, 0.5)])
    state.put_day(BERLIN, D1, frame, exported_at=T0, settled=False)
    assert state.stored_days(BERLIN, D1, D3) == {
        D1: StoredDay(zone=BERLIN, day=D1, exported_at=T0, settled=False, rows=2)
    }
    assert sorted_rows(state.usage_between(BERLIN, D1, D1)) == sorted_rows(frame)
    by_day = state.usage_by_day(BERLIN, D1, D3)
    assert by_day.schema == {**usage.SCHEMA, "day": pl.Date()}
    assert by_day.get_column("day").to_list() == [D1, D1]
    assert by_day.get_column("api_key_id").to_list() == ["k1", "k2"]


def test_a_day_without_usage_is_stored_with_no_rows(state: SqliteState) -> None:
    state.put_day(BERLIN, D1, usage.load([]).frame, exported_at=T0, settled=True)
    (stored,) = state.stored_days(BERLIN, D1, D1).values()
    assert (stored.rows, stored.settled) == (0, True)
    between = state.usage_between(BERLIN, D1, D1)
    assert between.height == 0
    assert between.schema == usage.SCHEMA


def test_putting_a_day_again_replaces_its_rows_and_its_record(state: SqliteState) -> None:
    first = day_frame([row("k1", "gpt-4o", 10, 1.0), row("k2", "gpt-4o", 1, 0.1)])
    state.put_day(BERLIN, D1, first, exported_at=T0, settled=False)
    later = T0 + timedelta(hours=6)
    state.put_day(
        BERLIN, D1, day_frame([row("k1", "gpt-4o", 12, 1.5)]), exported_at=later, settled=True
    )
    assert state.stored_days(BERLIN, D1, D1)[D1] == StoredDay(BERLIN, D1, later, True, 1)
    assert sorted_rows(state.usage_between(BERLIN, D1, D1)) == sorted_rows(
        day_frame([row("k1", "gpt-4o", 12, 1.5)])
    )


def test_sums_over_days_are_per_key_and_model_and_the_name_is_the_latest_days(
    state: SqliteState,
) -> None:
    state.put_day(
        BERLIN,
        D1,
        day_frame(
            [row("k1", "gpt-4o", 10, 1.0, name="old"), row("k1", "o3-mini", 1, 0.25, name="old")]
        ),
        exported_at=T0,
        settled=True,
    )
    state.put_day(
        BERLIN,
        D2,
        day_frame([row("k1", "gpt-4o", 5, 0.5, name="new")]),
        exported_at=T0,
        settled=True,
    )
    state.put_day(
        BERLIN, D3, day_frame([row("k2", "gpt-4o", 7, 0.75)]), exported_at=T0, settled=True
    )
    summed = sorted_rows(state.usage_between(BERLIN, D1, D2))
    assert [(r["api_key_id"], r["api_key_name"], r["model"], r["requests"]) for r in summed] == [
        ("k1", "new", "gpt-4o", 15),
        ("k1", "new", "o3-mini", 1),  # the key's name, even for a model it did not use that day
    ]
    assert summed[0]["total_cost_usd"] == pytest.approx(1.5)
    assert state.usage_between(BERLIN, D3, D3).get_column("api_key_id").to_list() == ["k2"]
    assert state.usage_between(BERLIN, D2, D1).height == 0  # an empty range


def test_token_sums_are_null_only_where_no_day_reported_them(state: SqliteState) -> None:
    state.put_day(
        BERLIN,
        D1,
        day_frame([row("k1", "m", 1, 0.1, sum_prompt_tokens=100, sum_completion_tokens=7)]),
        exported_at=T0,
        settled=True,
    )
    state.put_day(BERLIN, D2, day_frame([row("k1", "m", 1, 0.1)]), exported_at=T0, settled=True)
    (summed,) = state.usage_between(BERLIN, D1, D2).to_dicts()
    assert (summed["sum_prompt_tokens"], summed["sum_completion_tokens"]) == (100, 7)
    assert summed["cached_prompt_tokens"] is None
    days = state.stored_days(BERLIN, D1, D2)
    assert (days[D1].has_tokens, days[D2].has_tokens) == (True, False)


def test_empty_cells_of_name_and_model_stay_empty(state: SqliteState) -> None:
    frame = day_frame([row("k1", None, 1, 0.1, name=None), row("k1", "", 2, 0.2, name=None)])
    state.put_day(BERLIN, D1, frame, exported_at=T0, settled=True)
    read = state.usage_between(BERLIN, D1, D1).sort("model", nulls_last=True)
    assert read.get_column("model").to_list() == ["", None]
    assert read.get_column("api_key_name").to_list() == [None, None]


def test_zones_are_kept_apart(state: SqliteState) -> None:
    state.put_day(BERLIN, D1, day_frame([row("k1", "m", 1, 0.1)]), exported_at=T0, settled=True)
    state.put_day(
        "America/New_York", D1, day_frame([row("k1", "m", 9, 0.9)]), exported_at=T0, settled=True
    )
    assert state.usage_between(BERLIN, D1, D1).get_column("requests").to_list() == [1]
    assert state.usage_between("America/New_York", D1, D1).get_column("requests").to_list() == [9]
    assert state.stored_days("UTC", D1, D1) == {}
    assert state.usage_between("UTC", D1, D1).height == 0
    assert state.usage_by_day("UTC", D1, D1).height == 0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            day_frame([row("k1", "m", 1, 0.1), row("k1", "m", 2, 0.2)]),
            "one row per api_key_id and model",
        ),
        (day_frame([row("k1", "m", 1, 0.1)]).drop("requests"), "needs the columns requests"),
        (day_frame([{**row("k1", "m", 1, 0.1), "api_key_id": None}]), "need an api_key_id"),
    ],
    ids=["repeated-pair", "missing-column", "no-key"],
)
def test_a_frame_that_is_not_one_day_of_usage_is_refused_and_the_day_kept(
    state: SqliteState, frame: pl.DataFrame, message: str
) -> None:
    state.put_day(BERLIN, D1, day_frame([row("k9", "m", 4, 0.4)]), exported_at=T0, settled=True)
    with pytest.raises(ValueError, match=message):
        state.put_day(BERLIN, D1, frame, exported_at=T0, settled=False)
    assert state.usage_between(BERLIN, D1, D1).get_column("api_key_id").to_list() == ["k9"]
    assert state.stored_days(BERLIN, D1, D1)[D1].settled


def test_a_day_put_inside_a_transaction_is_part_of_it(state: SqliteState) -> None:
    frame = day_frame([row("k1", "m", 1, 0.1)])

    def store_then_fail() -> None:
        with state.transaction() as transaction:
            transaction.put_day(BERLIN, D1, frame, exported_at=T0, settled=False)
            transaction.set_mark("reconciled:x", T0)
            assert transaction.stored_days(BERLIN, D1, D1)[D1].rows == 1  # seen inside
            assert transaction.usage_between(BERLIN, D1, D1).height == 1
            raise RuntimeError("the cycle failed after storing the day")

    with pytest.raises(RuntimeError):
        store_then_fail()
    assert state.stored_days(BERLIN, D1, D1) == {}
    assert state.mark("reconciled:x") is None
    with state.transaction() as transaction:
        transaction.put_day(BERLIN, D1, frame, exported_at=T0, settled=False)
    assert state.stored_days(BERLIN, D1, D1)[D1].rows == 1


def test_marks_are_named_instants(state: Store) -> None:
    assert state.mark("reconciled:Europe/Berlin:2026-11") is None
    state.set_mark("reconciled:Europe/Berlin:2026-11", T0)
    state.set_mark("reconciled:Europe/Berlin:2026-11", T0 + timedelta(days=1))
    assert state.mark("reconciled:Europe/Berlin:2026-11") == T0 + timedelta(days=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        state.set_mark("naive", datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


def test_marks_are_read_back_by_a_reader_of_the_file(sqlite_state: SqliteState, path: Path) -> None:
    state = sqlite_state
    assert state.mark("reconciled:Europe/Berlin:2026-11") is None
    state.set_mark("reconciled:Europe/Berlin:2026-11", T0)
    state.set_mark("reconciled:Europe/Berlin:2026-11", T0 + timedelta(days=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        state.set_mark("naive", datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with SqliteState.open(path, write=False) as reader:
        assert reader.mark("reconciled:Europe/Berlin:2026-11") == T0 + timedelta(days=1)


def test_prune_deletes_days_before_the_retention_but_never_those_of_a_running_quarter(
    state: SqliteState,
) -> None:
    now = datetime(2026, 12, 31, 12, tzinfo=UTC)  # the quarter began on 1 October
    days = (date(2026, 1, 5), date(2026, 9, 27), date(2026, 9, 28), date(2026, 10, 1))
    for day in days:
        state.put_day(
            BERLIN, day, day_frame([row("k1", "m", 1, 0.1)]), exported_at=T0, settled=True
        )
        state.put_day("UTC", day, day_frame([]), exported_at=T0, settled=True)
    # retention 30d, but 94 days are kept: 28 September onwards
    assert state.prune(now, timedelta(days=30)) == 2 + 2 + 2  # Berlin's rows and days, UTC's days
    for zone in (BERLIN, "UTC"):
        assert list(state.stored_days(zone, date(2026, 1, 1), now.date())) == list(days[2:])
    assert state.prune(now, timedelta(days=30)) == 0
    assert state.prune(now + timedelta(days=400), timedelta(days=366)) == 2 + 2 + 2


def test_a_dry_run_of_an_older_file_reads_an_empty_history(path: Path) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number in range(2):
            for statement in MIGRATIONS[number].split(";"):
                db.execute(statement)
            db.execute("INSERT INTO schema_version VALUES (?)", (number + 1,))
    before = path.read_bytes()
    with SqliteState.open(path, write=False) as reader:
        assert reader.stored_days(BERLIN, D1, D3) == {}
        assert reader.usage_between(BERLIN, D1, D3).schema == usage.SCHEMA
        assert reader.usage_by_day(BERLIN, D1, D3).height == 0
        assert reader.mark("anything") is None
        with pytest.raises(StateError, match="opened for reading only"):
            reader.put_day(BERLIN, D1, day_frame([]), exported_at=T0, settled=False)
    assert path.read_bytes() == before
    with SqliteState.open(path) as writer:  # migrated: the history is there
        writer.put_day(
            BERLIN, D1, day_frame([row("k1", "m", 1, 0.1)]), exported_at=T0, settled=False
        )
        assert writer.stored_days(BERLIN, D1, D1)[D1].rows == 1


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),  # day offset
            st.sampled_from(["k1", "k2", "k3"]),
            st.sampled_from(["a", "b"]),
            st.integers(0, 10**6),
            st.integers(0, 10**6),  # cost in micro-USD
        ),
        max_size=40,
        unique_by=lambda t: (t[0], t[1], t[2]),
    )
)
def test_the_sum_over_any_range_of_days_is_the_sum_of_the_days(
    cells: list[tuple[int, str, str, int, int]],
) -> None:
    base = date(2026, 3, 25)  # the week of Europe/Berlin's spring DST change
    with (
        tempfile.TemporaryDirectory(prefix="costwatch-history-") as folder,
        SqliteState.open(Path(folder) / "state.db") as state,
    ):
        for offset in range(7):
            rows = [row(k, m, r, c / 1e6) for d, k, m, r, c in cells if d == offset]
            state.put_day(
                BERLIN, base + timedelta(days=offset), day_frame(rows), exported_at=T0, settled=True
            )
        for first, last in ((0, 6), (2, 4), (3, 3)):
            expected: dict[tuple[str, str], tuple[int, int]] = {}
            for d, k, m, r, c in cells:
                if first <= d <= last:
                    before = expected.get((k, m), (0, 0))
                    expected[(k, m)] = (before[0] + r, before[1] + c)
            read = state.usage_between(
                BERLIN, base + timedelta(days=first), base + timedelta(days=last)
            )
            got = {(r["api_key_id"], r["model"]): r for r in read.to_dicts()}
            assert set(got) == set(expected)
            for pair, (requests, micro) in expected.items():
                assert got[pair]["requests"] == requests
                assert got[pair]["total_cost_usd"] == pytest.approx(micro / 1e6, abs=1e-9)


PUT_FOREVER = """
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
import polars as pl
from costwatch import history, usage
from costwatch.state import SqliteState

state = SqliteState.open(Path(sys.argv[1]))
now = datetime(2026, 11, 20, tzinfo=UTC)
n = 0
while True:
    rows = 3000 + n % 7
    frame = pl.DataFrame({
        "api_key_id": [f"key-{i}" for i in range(rows)],
        "api_key_name": [f"run {n}" for i in range(rows)],
        "model": ["gpt-4o"] * rows,
        "requests": [n] * rows,
        "total_cost_usd": [float(n)] * rows,
    }).with_columns(pl.lit(None, dtype=pl.Int64).alias(c) for c in usage.TOKEN_COLUMNS)
    day = date(2026, 11, 1) + timedelta(days=n % 3)
    state.put_day("UTC", day, frame, exported_at=now, settled=False)
    print(n, flush=True)
    n += 1
"""


def test_sigkill_during_put_day_leaves_each_day_whole_as_one_of_its_puts(path: Path) -> None:
    SqliteState.open(path).close()
    for round_ in range(3):
        with subprocess.Popen(
            [sys.executable, "-c", PUT_FOREVER, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        ) as child:
            assert child.stdout is not None
            for _ in range(4 + 3 * round_):
                child.stdout.readline()
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
        with SqliteState.open(path) as state:
            for day, stored in state.stored_days(
                "UTC", date(2026, 11, 1), date(2026, 11, 3)
            ).items():
                frame = state.usage_by_day("UTC", day, day)
                assert frame.height == stored.rows  # the record and the rows of one put
                assert frame.get_column("requests").n_unique() == 1  # all rows of that put
                n = frame.get_column("requests")[0]
                assert stored.rows == 3000 + n % 7
                assert frame.get_column("api_key_name").unique().to_list() == [f"run {n}"]
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_writers_remembered_sums_follow_every_day_put_and_pruned(state: SqliteState) -> None:
    days = [D1 + timedelta(days=n) for n in range(5)]
    for n, day in enumerate(days):
        frame = day_frame(
            [row("k1", "m", n + 1, 0.5, name=f"name {n}"), row(f"k{n + 2}", "m", 1, 0.1)]
        )
        state.put_day(BERLIN, day, frame, exported_at=T0, settled=True)

    def fresh(first: date, last: date) -> list[dict[str, Any]]:
        """The stored days one by one, added up here."""
        each = [
            state.usage_by_day(BERLIN, day, day).drop("day")
            for day in history.closed_days(first, last + timedelta(days=1))
        ]
        return sorted_rows(history.combine(each))

    def same(first: date, last: date) -> None:
        got, want = sorted_rows(state.usage_between(BERLIN, first, last)), fresh(first, last)
        assert [{k: v for k, v in r.items() if k != "total_cost_usd"} for r in got] == [
            {k: v for k, v in r.items() if k != "total_cost_usd"} for r in want
        ]
        assert [r["total_cost_usd"] for r in got] == pytest.approx(
            [r["total_cost_usd"] for r in want]
        )

    same(days[0], days[2])  # remembered
    same(days[0], days[2])  # from the memo
    same(days[0], days[4])  # extended by two days
    state.put_day(
        BERLIN,
        days[1],
        day_frame([row("k1", "m", 100, 9.0, name="renamed")]),
        exported_at=T0,
        settled=True,
    )
    same(days[0], days[4])  # a day inside the range changed: summed afresh
    with state.transaction() as transaction:
        transaction.put_day(BERLIN, days[4], day_frame([]), exported_at=T0, settled=True)
    same(days[0], days[4])
    assert state.usage_between(BERLIN, days[0], days[4]).filter(pl.col("api_key_id") == "k1")[
        "api_key_name"
    ].to_list() == ["name 3"]  # day 4 now has no rows: day 3's name is the latest
    same(days[1], days[3])
    state.put_day(
        BERLIN,
        days[4] + timedelta(days=1),
        day_frame([row("k1", "m", 1, 0.1)]),
        exported_at=T0,
        settled=True,
    )
    same(days[0], days[4] + timedelta(days=1))
    state.prune(datetime(2027, 6, 1, tzinfo=UTC), timedelta(days=30))  # everything goes
    assert state.usage_between(BERLIN, days[0], days[4]).height == 0


def test_a_remembered_sum_follows_what_another_connection_writes(path: Path) -> None:
    frame = day_frame([row("k1", "m", 1, 0.1)])
    with SqliteState.open(path) as first, SqliteState.open(path) as second:  # one process
        first.put_day(BERLIN, D1, frame, exported_at=T0, settled=True)
        assert first.usage_between(BERLIN, D1, D2).get_column("requests").to_list() == [1]
        second.put_day(BERLIN, D2, frame, exported_at=T0, settled=True)
        assert first.usage_between(BERLIN, D1, D2).get_column("requests").to_list() == [2]
        with closing(sqlite3.connect(path)) as other, other:  # another program
            other.execute(
                "UPDATE usage_daily SET requests = 40 WHERE day = ?",
                ((D2 - date(1970, 1, 1)).days,),
            )
        assert first.usage_between(BERLIN, D1, D2).get_column("requests").to_list() == [41]
