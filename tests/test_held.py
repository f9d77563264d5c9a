"""The days a command holds (`costwatch.held`): over a real SQLite state with some days stored
and the simulator serving the rest, exactly the missing days are exported, in order, and the
state file is left as it was, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from costwatch import fetch, held, history
from costwatch.errors import ExportError
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

KEY = "sim-held-key"
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
FIRST, LAST = date(2026, 11, 1), date(2026, 11, 10)
STORED = [date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 7)]
SPAN = history.closed_days(FIRST, LAST + timedelta(days=1))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=3, hourly_cost_usd=0.5), api_key=KEY, clock=lambda: NOW) as s:
        yield s


@pytest.fixture
def client(sim: Simulator) -> Iterator[LangdockClient]:
    with httpx.Client(timeout=10) as http:
        yield LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )


@pytest.fixture
def state_path(tmp_path: Path, client: LangdockClient) -> Path:
    """A state holding STORED, as the keeper stores them (from the same simulator)."""
    path = tmp_path / "state.db"
    with SqliteState.open(path) as state:
        for day in STORED:
            fetched = fetch.fetch_day(client, BERLIN, day)
            state.put_day(BERLIN.key, day, fetched.usage.frame, exported_at=NOW, settled=True)
    return path


def files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.parent.glob(path.name + "*"))}


def exported_days(sim: Simulator) -> list[date]:
    """The first local day of each export the simulator was asked for, in order."""
    bodies = [json.loads(r.body) for r in sim.requests if r.path.endswith("/export/api-keys")]
    return [date.fromisoformat(body["from"]["date"][:10]) for body in bodies]


def test_only_the_missing_days_are_exported_in_order_and_the_state_is_left_as_it_was(
    sim: Simulator, client: LangdockClient, state_path: Path
) -> None:
    before, asked_before = files(state_path), len(exported_days(sim))
    steps: list[held.Step] = []
    pauses: list[float] = []
    with SqliteState.open(state_path, write=False) as state:
        (days,) = held.read(
            state,
            {BERLIN.key: held.Wanted(FIRST, LAST)},
            client,
            pace=timedelta(seconds=2),
            sleep=pauses.append,
            progress=steps.append,
        ).values()
    missing = [day for day in SPAN if day not in STORED]
    assert exported_days(sim)[asked_before:] == missing
    assert files(state_path) == before
    assert sorted(days.stored) == STORED
    assert list(days.exported) == missing
    assert days.covered == frozenset(SPAN)
    assert sorted(set(days.usage["day"].to_list())) == SPAN
    assert pauses == [2.0] * (len(missing) - 1)  # between two exports, not before the first
    assert [(s.index, s.day, s.fetched is None) for s in steps] == [
        (index, day, before_it) for index, day in enumerate(missing) for before_it in (True, False)
    ]
    assert {s.total for s in steps} == {len(missing)}


def test_a_held_day_is_what_the_export_and_the_store_say_it_is(
    client: LangdockClient, state_path: Path
) -> None:
    with SqliteState.open(state_path, write=False) as state:
        (days,) = held.read(state, {BERLIN.key: held.Wanted(FIRST, LAST)}, client).values()
        stored_day = state.usage_between(BERLIN.key, STORED[0], STORED[0])
    exported = fetch.fetch_day(client, BERLIN, FIRST).usage.frame
    by_key = ["api_key_id", "model"]
    assert days.of(FIRST).sort(by_key).equals(exported.sort(by_key))
    assert days.of(STORED[0]).sort(by_key).equals(stored_day.sort(by_key))
    assert days.of(FIRST)["total_cost_usd"].sum() > 0


def test_only_the_exportable_days_are_exported_the_others_stay_missing(
    sim: Simulator, client: LangdockClient, state_path: Path
) -> None:
    asked_before = len(exported_days(sim))
    later = (date(2026, 11, 9), date(2026, 11, 2), date(2026, 11, 10))  # 2nd is stored
    with SqliteState.open(state_path, write=False) as state:
        (days,) = held.read(state, {BERLIN.key: held.Wanted(FIRST, LAST, later)}, client).values()
    assert exported_days(sim)[asked_before:] == [date(2026, 11, 9), date(2026, 11, 10)]
    assert days.covered == frozenset([*STORED, date(2026, 11, 9), date(2026, 11, 10)])


def test_without_a_client_or_a_state_only_what_there_is_is_held(
    client: LangdockClient, state_path: Path
) -> None:
    with SqliteState.open(state_path, write=False) as state:
        (stored_only,) = held.read(state, {BERLIN.key: held.Wanted(FIRST, LAST)}, None).values()
    assert stored_only.covered == frozenset(STORED)
    assert stored_only.exported == {}
    (exported_only,) = held.read(None, {BERLIN.key: held.Wanted(FIRST, FIRST)}, client).values()
    assert exported_only.covered == frozenset([FIRST])
    assert exported_only.stored == {}


def test_the_days_missing_are_planned_zone_after_zone_before_any_export(state_path: Path) -> None:
    wanted = {BERLIN.key: held.Wanted(FIRST, date(2026, 11, 3)), "UTC": held.Wanted(LAST, LAST)}
    with SqliteState.open(state_path, write=False) as state:
        planned = held.plan(state, wanted)
    assert planned.missing == ((BERLIN, FIRST), (ZoneInfo("UTC"), LAST))
    assert sorted(planned.stored[BERLIN.key]) == STORED[:2]


def test_a_failed_export_raises_as_the_export_does_and_nothing_is_stored(
    sim: Simulator, client: LangdockClient, state_path: Path
) -> None:
    before = files(state_path)
    told: list[date] = []
    sim.faults.fail_export(500, times=1)
    with (
        SqliteState.open(state_path, write=False) as state,
        pytest.raises(ExportError) as failed,
    ):
        held.read(
            state,
            {BERLIN.key: held.Wanted(FIRST, LAST)},
            client,
            progress=lambda step: told.append(step.day),
        )
    assert failed.value.reason
    assert told == [FIRST]  # told before the export, which then failed: nothing after it
    assert files(state_path) == before
