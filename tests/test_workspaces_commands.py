"""The commands that read a span of the usage history (`report`, `suggest`) with a file of
`workspaces:`: two simulators (one per workspace), one state file whose partitions the test
fills with known days (tests/histories.py). Each workspace's days are read from its own
partition, the missing ones exported with its own client, never stored; the org's figures are
every workspace's joined, ids "workspace/id", so one id in both workspaces is two keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from histories import Row, frame, steady

from costwatch.cli import main
from costwatch.partitions import key
from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "Europe/Berlin"
NOW = datetime(2026, 12, 2, 10, tzinfo=BERLIN)  # Wednesday
LAST_WEEK = [date(2026, 11, 23) + timedelta(days=n) for n in range(7)]  # Mon 23 to Sun 29
HISTORY = [date(2026, 10, 19) + timedelta(days=n) for n in range(42)]  # Oct 19 to Nov 29
KEYS = {"marketing": "ld-MARKETING-k3y", "research": "ld-RESEARCH-k3y"}
SIMULATED = Workspace(keys=2, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=1.0)


def rows(name: str) -> list[Row]:
    """marketing: alpha $10 a day, beta $5; research: alpha $3 (the same id as marketing's)."""
    if name == "marketing":
        return steady("alpha", "m1", 10.0, 100, HISTORY) + steady("beta", "m2", 5.0, 50, HISTORY)
    return steady("alpha", "m1", 3.0, 30, HISTORY)


@dataclass
class World:
    sims: dict[str, Simulator]
    path: Path

    @property
    def state(self) -> Path:
        return self.path.parent / "state.db"

    def store(self, name: str, days: list[date]) -> None:
        with SqliteState.open(self.state) as state:
            for day in days:
                own = frame(r for r in rows(name) if r[0] == day).drop("day")
                state.put_day(key(name, ZONE), day, own, exported_at=NOW, settled=True)

    def stored(self) -> dict[str, set[date]]:
        with SqliteState.open(self.state, write=False) as state:
            first, last = date(2026, 1, 1), date(2026, 12, 31)
            return {
                name: set(state.stored_days(key(name, ZONE), first, last)) for name in self.sims
            }

    def run(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        code = main([*args, "--config", str(self.path), "--now", NOW.isoformat()])
        captured = capsys.readouterr()
        return code, captured.out, captured.err


def write_config(tmp_path: Path, sims: dict[str, Simulator]) -> Path:
    items = "".join(
        f"  - name: {name}\n    base_url: {sim.base_url}\n    api_key: {KEYS[name]}\n"
        "    allow_insecure_download: true\n    max_attempts: 1\n    timeout_seconds: 5\n"
        for name, sim in sims.items()
    )
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
workspaces:
{items}schedule: {{timezone: {ZONE}}}
state: {{path: {tmp_path / "state.db"}}}
budgets:
  - {{name: org, keys: "*", scope: shared, limits: {{cost_usd: 1000000}}}}
anomalies: {{enabled: false}}
unit_cost: {{enabled: false}}
unowned: {{enabled: false, new_keys: false, dormant: false}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with (
        Simulator(SIMULATED, api_key=KEYS["marketing"], clock=lambda: NOW) as one,
        Simulator(SIMULATED, api_key=KEYS["research"], clock=lambda: NOW) as two,
    ):
        sims = {"marketing": one, "research": two}
        yield World(sims, write_config(tmp_path, sims))


def simulated(day: date) -> float:
    start, end = local_midnight(day, BERLIN), local_midnight(day + timedelta(days=1), BERLIN)
    return sum(row.total_cost_usd for row in SIMULATED.usage(start, end))


def report(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    code, out, err = world.run(capsys, "report", "--period", "last-week", "--format", "json")
    assert code == 0, err
    body: dict[str, Any] = json.loads(out)
    return body, err


def test_a_report_of_two_workspaces_has_the_orgs_totals_and_names_each_key_with_its_workspace(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in world.sims:
        world.store(name, HISTORY)
    body, err = report(world, capsys)
    assert body["cost_usd"] == pytest.approx(7 * (10 + 5 + 3))  # 126
    assert body["requests"] == 7 * (100 + 50 + 30)
    assert body["previous"]["cost_usd"] == pytest.approx(126)
    assert [(k["api_key_name"], k["api_key_id"], k["cost_usd"]) for k in body["top_keys"]] == [
        ("marketing/alpha", "marketing/id-alpha", pytest.approx(70.0)),
        ("marketing/beta", "marketing/id-beta", pytest.approx(35.0)),
        ("research/alpha", "research/id-alpha", pytest.approx(21.0)),  # the same id, apart
    ]
    assert [(m["model"], m["cost_usd"]) for m in body["top_models"]] == [
        ("m1", pytest.approx(91.0)),
        ("m2", pytest.approx(35.0)),
    ]
    assert body["keys"] == 3
    assert "exported" not in err  # every day was stored in both partitions


def test_a_day_one_workspace_lacks_is_exported_with_its_own_client_and_not_stored(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    lacking = date(2026, 11, 25)
    world.store("marketing", HISTORY)
    world.store("research", [day for day in HISTORY if day != lacking])
    before = world.stored()
    exports = {name: sim.exports_made() for name, sim in world.sims.items()}
    body, err = report(world, capsys)
    assert body["cost_usd"] == pytest.approx(126 - 3 + simulated(lacking))
    assert "report: 2026-11-25 in workspace research is not stored: exporting it" in err
    assert "1 day(s) exported (not stored)" in err
    assert "in workspace marketing" not in err
    made = {name: sim.exports_made() - exports[name] for name, sim in world.sims.items()}
    assert made["research"] == made["marketing"] + 1  # the cycle's alike, plus the day
    assert world.stored() == before  # the command writes no state


def test_a_report_refuses_when_a_workspaces_export_fails_naming_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in world.sims:
        world.store(name, HISTORY)
    world.sims["research"].faults.fail_export(401, times=5)
    code, out, err = world.run(capsys, "report", "--period", "last-week", "--format", "json")
    assert code == 2
    assert out == ""
    assert "costwatch: workspace research: the Langdock export failed" in err
