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
from io import StringIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from histories import Row, frame, steady

from costwatch.cli import main
from costwatch.cli.suggest import run_suggest
from costwatch.config import load_config
from costwatch.partitions import key
from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState
from costwatch.suggest import Options

BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "Europe/Berlin"
NOW = datetime(2026, 12, 2, 10, tzinfo=BERLIN)  # Wednesday
LAST_WEEK = [date(2026, 11, 23) + timedelta(days=n) for n in range(7)]  # Mon 23 to Sun 29
HISTORY = [date(2026, 10, 19) + timedelta(days=n) for n in range(42)]  # Oct 19 to Nov 29
NOVEMBER = [date(2026, 11, 1) + timedelta(days=n) for n in range(31)]  # suggest's window: to Dec 1
KEYS = {"marketing": "ld-MARKETING-k3y", "research": "ld-RESEARCH-k3y"}
SIMULATED = Workspace(keys=2, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=1.0)


def rows(name: str) -> list[Row]:
    """marketing: alpha $10 a day, beta $5; research: alpha $3 (the same id as marketing's)."""
    days = sorted({*HISTORY, *NOVEMBER})
    if name == "marketing":
        return steady("alpha", "m1", 10.0, 100, days) + steady("beta", "m2", 5.0, 50, days)
    return steady("alpha", "m1", 3.0, 30, days)


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
        + (
            "    budgets:\n      - {name: marketing-keys, keys: '*', period: day,"
            " limits: {cost_usd: 1}}\n"
            if name == "marketing"
            else "    budgets:\n      - {name: research-pool, keys: '*', scope: shared,"
            " period: day, limits: {cost_usd: 1}}\n"
        )
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
  - {{name: org-daily, keys: "*", scope: shared, period: day, limits: {{cost_usd: 1}}}}
  - {{name: research-keys, keys: "*", workspaces: [research], period: day, limits: {{cost_usd: 1}}}}
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


def suggested(world: World) -> tuple[dict[str, Any], str]:
    out, err = StringIO(), StringIO()
    code = run_suggest(
        load_config(world.path), options=Options(months=1), out=out, err=err, clock=lambda: NOW
    )
    assert code == 0, err.getvalue()
    body: dict[str, Any] = yaml.safe_load(out.getvalue())
    return body, out.getvalue() + err.getvalue()


def limits(budgets: list[dict[str, Any]]) -> dict[str, float]:
    return {b["name"]: b["limits"]["cost_usd"] for b in budgets}


def test_suggest_proposes_a_workspaces_own_budgets_from_its_keys_and_the_orgs_from_all(
    world: World,
) -> None:
    for name in world.sims:
        world.store(name, NOVEMBER)
    body, said = suggested(world)
    # the org's day: 10 + 5 + 3; research's keys alone: 3; marketing's highest key: alpha's 10
    assert limits(body["budgets"]) == {
        "org": pytest.approx(30 * 18 * 1.2),  # November, the one full month: 648
        "org-daily": pytest.approx(18 * 1.2),
        "research-keys": pytest.approx(3 * 1.2),
    }
    owned = {item["name"]: limits(item["budgets"]) for item in body["workspaces"]}
    assert owned == {
        "marketing": {"marketing-keys": pytest.approx(10 * 1.2)},
        "research": {"research-pool": pytest.approx(3 * 1.2)},
    }
    assert "of key 'marketing/alpha', the highest of 2 key(s)" in said
    assert "exporting" not in said  # every day was stored in both partitions
    assert all(sim.exports_made() == 0 for sim in world.sims.values())


def test_suggest_exports_the_day_one_workspace_lacks_with_its_client_and_the_paste_loads(
    world: World, tmp_path: Path
) -> None:
    lacking = date(2026, 11, 10)
    world.store("marketing", NOVEMBER)
    world.store("research", [day for day in NOVEMBER if day != lacking])
    before = world.stored()
    body, said = suggested(world)
    assert "1 closed day(s) of Europe/Berlin in workspace research are not stored" in said
    assert (world.sims["marketing"].exports_made(), world.sims["research"].exports_made()) == (0, 1)
    assert world.stored() == before  # nothing is written
    owned = {item["name"]: limits(item["budgets"]) for item in body["workspaces"]}
    # the exported day is counted (31 full days); its simulated spend is research's highest
    assert owned["research"] == {"research-pool": pytest.approx(3 * 1.2)}
    assert "p90 of 31 full days" in said
    assert f"days $3.00 + 20% headroom; highest day 2026-11-10 ${simulated(lacking):.2f}" in said
    # pasted into the file (the top-level budgets and each workspace's own), it loads
    written = yaml.safe_load(world.path.read_text())
    written["budgets"] = body["budgets"]
    for item in written["workspaces"]:
        item["budgets"] = next(
            w["budgets"] for w in body["workspaces"] if w["name"] == item["name"]
        )
    pasted = tmp_path / "pasted.yaml"
    pasted.write_text(yaml.safe_dump(written), encoding="utf-8")
    assert [b.name for b in load_config(pasted).budgets] == [
        "org",
        "org-daily",
        "research-keys",
        "marketing-keys",
        "research-pool",
    ]
