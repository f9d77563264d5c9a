"""Export ranges across DST: fall-back hours (at 02:00, at midnight, 30 minutes long) and
skipped days, as the API reads them.

The API reads `from` and `to` as local wall-clock times, and while a fall-back repeats an hour
a wall time names two instants; which one the API takes is not documented. So each request a
real cycle sends (`fetch.fetch_usage` through the real client to the simulator, split into
parts or not) must name instants that have exactly one reading, whichever occurrence the API
would take, and those instants must tile [period start, now) with no gap and no overlap; and
the usage the cycle loads must be exactly the workspace's usage over that range.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from costwatch import fetch, periods
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.periods import PERIOD_NAMES, PeriodName
from costwatch.simulator import Simulator, Workspace

KEY = "ld-DST-k3y"
TOO_LARGE = b'{"error": "Export too large", "message": "Export too large: 2000001 rows"}'


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# Real transitions (UTC instants) and what they do to the local clock.
TRANSITIONS = [
    ("Europe/Berlin", utc(2025, 10, 26, 1)),  # 03:00 -> 02:00: 02:00-02:59 twice
    ("Europe/Berlin", utc(2025, 3, 30, 1)),  # 02:00 -> 03:00
    ("America/Havana", utc(2024, 11, 3, 5)),  # 01:00 -> 00:00: midnight itself twice
    ("America/Havana", utc(2024, 3, 10, 5)),  # 00:00 -> 01:00: no midnight that day
    ("America/Santiago", utc(2024, 4, 7, 3)),  # 24:00 -> 23:00: the day's last hour twice
    ("America/Santiago", utc(2024, 9, 8, 4)),  # 24:00 -> 01:00
    ("Asia/Beirut", utc(2023, 10, 28, 21)),  # 24:00 -> 23:00
    ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),  # 02:00 -> 01:30: 30 minutes twice
    ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),  # 02:00 -> 02:30
    ("Pacific/Apia", utc(2011, 12, 30, 10)),  # 2011-12-30 never happened
    ("Pacific/Kiritimati", utc(1994, 12, 31, 10)),  # 1994-12-31 never happened
]


def readings(point: dict[str, str]) -> set[datetime]:
    """Every instant the API could read a `{"date", "timezone"}` point as."""
    wall = datetime.fromisoformat(point["date"].removesuffix("Z"))
    zone = ZoneInfo(point["timezone"])
    return {wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Simulator, LangdockClient, list[datetime]]]:
    clock = [utc(2024, 1, 1)]
    workspace = Workspace(keys=3, created=utc(1990, 1, 1), hourly_cost_usd=1.0)
    with (
        Simulator(workspace, api_key=KEY, clock=lambda: clock[0]) as sim,
        httpx.Client(timeout=10) as http,
    ):
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        yield sim, client, clock


def _export(world: Any, name: PeriodName, zone: ZoneInfo, now: datetime, split: bool) -> None:
    sim, client, clock = world
    clock[0] = now
    period = periods.current(name, zone, now)
    end = min(now, period.end.astimezone(UTC))
    seen = len(sim.requests)
    last_day = (end - timedelta(milliseconds=1)).astimezone(zone).date()
    split = split and last_day > period.first_day  # one day cannot be split
    if split:
        sim.faults.fail_export(400, body=TOO_LARGE)
    fetched = fetch.fetch_usage(client, period, now)  # the period check on each part included
    sim.faults.clear()
    if end <= period.start.astimezone(UTC):
        return
    assert fetched.export is not None
    bodies = [
        json.loads(r.body) for r in sim.requests[seen:] if r.host == "api" and r.method == "POST"
    ]
    bodies = bodies[1:] if split else bodies  # the first was answered "too large"
    asked = []
    for body in bodies:
        start, last = readings(body["from"]), readings(body["to"])
        assert len(start) == 1, f"ambiguous from: {body}"
        assert len(last) == 1, f"ambiguous to: {body}"
        asked.append((start.pop(), last.pop() + timedelta(milliseconds=1)))
    # The parts tile [period start, end) in real time: no gap, no overlap.
    assert asked[0][0] == period.start.astimezone(UTC)
    assert asked[-1][1] == end.astimezone(UTC)
    for (_, one_end), (next_start, _) in itertools.pairwise(asked):
        assert one_end == next_start
    # And what was loaded is exactly the usage of that range.
    expected = sum(row.requests for row in sim.workspace.usage(period.start, end))
    assert int(fetched.usage.frame["requests"].sum()) == expected


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(min_value=-3 * 3600_000, max_value=3 * 3600_000),
    name=st.sampled_from(PERIOD_NAMES),
    split=st.booleans(),
)
@example(transition=TRANSITIONS[2], offset=0, name="day", split=False)  # Havana's second 00:00
@example(transition=TRANSITIONS[2], offset=-1, name="week", split=True)  # its first 00:59:59
@example(transition=TRANSITIONS[4], offset=1800_000, name="day", split=False)  # Santiago 23:30
@example(transition=TRANSITIONS[7], offset=600_000, name="month", split=True)  # Lord Howe 01:40
@example(transition=TRANSITIONS[9], offset=1, name="week", split=True)  # Apia, the day after
def test_a_cycle_near_a_transition_asks_for_instants_with_one_reading_that_tile_its_range(
    world: Any, transition: tuple[str, datetime], offset: int, name: PeriodName, split: bool
) -> None:
    zone_name, moment = transition
    now = moment + timedelta(milliseconds=offset)
    _export(world, name, ZoneInfo(zone_name), now, split)


@pytest.mark.parametrize(
    ("zone", "now", "to"),
    [
        # The second 02:30 in Berlin: the request says which instant, in UTC.
        ("Europe/Berlin", utc(2025, 10, 26, 1, 30), {"date": "2025-10-26T01:29:59.999Z"}),
        # The first 02:30 is just as ambiguous in wall-clock terms.
        ("Europe/Berlin", utc(2025, 10, 26, 0, 30), {"date": "2025-10-26T00:29:59.999Z"}),
        # Lord Howe's repeated half hour.
        ("Australia/Lord_Howe", utc(2024, 4, 6, 15, 10), {"date": "2024-04-06T15:09:59.999Z"}),
    ],
    ids=["berlin-second-0230", "berlin-first-0230", "lord-howe-0140"],
)
def test_a_to_inside_a_repeated_hour_is_asked_in_utc(
    world: Any, zone: str, now: datetime, to: dict[str, str]
) -> None:
    sim, _client, _clock = world
    seen = len(sim.requests)
    _export(world, "day", ZoneInfo(zone), now, split=False)
    [body] = [json.loads(r.body) for r in sim.requests[seen:] if r.method == "POST"]
    assert body["to"] == {**to, "timezone": "UTC"}


def test_an_hour_away_from_the_transition_the_request_stays_in_local_time(world: Any) -> None:
    sim, _client, _clock = world
    seen = len(sim.requests)
    _export(world, "day", ZoneInfo("Europe/Berlin"), utc(2025, 10, 26, 3), split=False)
    [body] = [json.loads(r.body) for r in sim.requests[seen:] if r.method == "POST"]
    assert body["from"] == {"date": "2025-10-26T00:00:00.000Z", "timezone": "Europe/Berlin"}
    assert body["to"] == {"date": "2025-10-26T03:59:59.999Z", "timezone": "Europe/Berlin"}


def test_a_skipped_day_has_no_period_and_the_day_before_ends_where_the_next_begins() -> None:
    apia = ZoneInfo("Pacific/Apia")
    before = periods.current("day", apia, utc(2011, 12, 30, 9))
    after = before.next()
    assert before.first_day.isoformat() == before.last_day.isoformat() == "2011-12-29"
    assert after.first_day.isoformat() == "2011-12-31"
    assert before.end == after.start
