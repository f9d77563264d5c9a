"""The commands that read a span of the usage history (`report`, `suggest`, `backtest`) with
a file of `workspaces:`: two simulators (one per workspace), one state file whose partitions
the test fills with known days (tests/histories.py). Each workspace's days are read from its
own partition, the missing ones exported with its own client, never stored; the org's figures
are every workspace's joined, ids "workspace/id", so one id in both workspaces is two keys. A
backtest's scratch store holds each workspace's partition, and its replayed cycle gathers each
workspace from its own."""

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
from costwatch.cli.backtest import run_backtest
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

    def stored(self, zone: str = ZONE) -> dict[str, set[date]]:
        with SqliteState.open(self.state, write=False) as state:
            first, last = date(2026, 1, 1), date(2026, 12, 31)
            return {
                name: set(state.stored_days(key(name, zone), first, last)) for name in self.sims
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


# -- backtest: the replay's scratch store holds each workspace's partition ----------------------

REPLAYED = """\
schedule: {timezone: UTC, every: 6h}
defaults: {forecast: false}
anomalies: {enabled: false}
unit_cost: {enabled: false}
unowned: {enabled: false, new_keys: false, dormant: false}
budgets:
  - {name: alpha-month, keys: alpha, limits: {cost_usd: 100}}
  - {name: alpha-pool, keys: alpha, scope: shared, thresholds: [100], limits: {cost_usd: 200}}
"""
UTC_ZONE = "UTC"


def replayed_rows(name: str) -> list[Row]:
    """Both workspaces: alpha (the same id) $8 a day in November; research: beta $2 a day,
    $16 on the 10th and the 20th."""
    rows: list[Row] = [(day, "alpha", "m1", 8.0, 80) for day in NOVEMBER[:30]]
    if name == "research":
        rows += [(d, "beta", "m2", 16.0 if d.day in (10, 20) else 2.0, 20) for d in NOVEMBER[:30]]
    return rows


def replay_config(tmp_path: Path, sims: dict[str, Simulator]) -> Path:
    items = "".join(
        f"  - name: {name}\n    base_url: {sim.base_url}\n    api_key: {KEYS[name]}\n"
        "    allow_insecure_download: true\n    max_attempts: 1\n    timeout_seconds: 5\n"
        for name, sim in sims.items()
    )
    own = "    budgets: [{name: beta-day, keys: beta, period: day, thresholds: [100],"
    own += " limits: {cost_usd: 10}}]\n"
    path = tmp_path / "replay.yaml"
    path.write_text(
        f"workspaces:\n{items}{own}state: {{path: {tmp_path / 'state.db'}}}\n{REPLAYED}",
        encoding="utf-8",
    )
    return path


def run_replay(path: Path, *span: str) -> tuple[int, dict[str, Any]]:
    from costwatch.cli import _parser  # the command's own parser: the same checks of dates

    ns = _parser().parse_args(["backtest", "--config", str(path), "--pace", "0s", *span])
    out = StringIO()
    code = run_backtest(
        load_config(path),
        config_path=path,
        first=ns.first,
        last=ns.last,
        at=ns.at,
        output_format="json",
        pace=ns.pace,
        out=out,
        clock=lambda: NOW,
    )
    body: dict[str, Any] = json.loads(out.getvalue()) if out.getvalue() else {}
    return code, body


def test_a_backtest_of_two_workspaces_replays_each_ones_keys_and_the_orgs_pool(
    world: World, tmp_path: Path
) -> None:
    path = replay_config(tmp_path, world.sims)
    with SqliteState.open(world.state) as state:
        for name in world.sims:
            daily = frame(replayed_rows(name))
            for day in NOVEMBER[:30]:
                own = daily.filter(daily["day"] == day).drop("day")
                state.put_day(key(name, UTC_ZONE), day, own, exported_at=NOW, settled=True)
    before = world.stored(UTC_ZONE)
    code, result = run_replay(path, "--from", "2026-11-01", "--to", "2026-11-30")
    assert code == 1
    got = [
        (a["day"], a["budget"], a["api_key_id"], f"{a['threshold']:g}", a["used"])
        for a in result["alerts"]
    ]
    # each day's last cycle is 18:00 UTC: alpha at day d, 8 (d - 1) + 6 in each workspace;
    # the pool of both alphas 16 (d - 1) + 12; research's beta 16 x 3/4 on the 10th and 20th
    assert got == [
        ("2026-11-07", "alpha-month", "marketing/id-alpha", "50", 54.0),
        ("2026-11-07", "alpha-month", "research/id-alpha", "50", 54.0),
        ("2026-11-10", "beta-day", "research/id-beta", "100", 12.0),
        ("2026-11-11", "alpha-month", "marketing/id-alpha", "80", 86.0),
        ("2026-11-11", "alpha-month", "research/id-alpha", "80", 86.0),
        ("2026-11-13", "alpha-month", "marketing/id-alpha", "100", 102.0),
        ("2026-11-13", "alpha-month", "research/id-alpha", "100", 102.0),
        ("2026-11-13", "alpha-pool", None, "100", 204.0),
        ("2026-11-20", "beta-day", "research/id-beta", "100", 12.0),
    ]
    assert result["history"] == {"stored_days": 60, "exported_days": 0}
    assert all(sim.exports_made() == 0 for sim in world.sims.values())
    assert world.stored(UTC_ZONE) == before
    assert before["research"] == set(NOVEMBER[:30])
    # the command takes the file: two days, nothing reached (alpha $14, the pool $28, beta $2)
    span = ["--from", "2026-11-01", "--to", "2026-11-02", "--pace", "0s"]
    assert main(["backtest", "--config", str(path), *span]) == 0


def test_a_backtest_exports_the_days_a_workspace_lacks_with_its_own_client(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = replay_config(tmp_path, world.sims)
    lacking = {date(2026, 11, 3), date(2026, 11, 4)}
    with SqliteState.open(world.state) as state:
        for name in world.sims:
            daily = frame(replayed_rows(name))
            for day in NOVEMBER[:30]:
                if name == "research" and day in lacking:
                    continue
                own = daily.filter(daily["day"] == day).drop("day")
                state.put_day(key(name, UTC_ZONE), day, own, exported_at=NOW, settled=True)
    before = world.stored(UTC_ZONE)
    code, result = run_replay(path, "--from", "2026-11-01", "--to", "2026-11-30")
    assert code == 1, capsys.readouterr().err
    assert result["history"] == {"stored_days": 58, "exported_days": 2}
    assert (world.sims["marketing"].exports_made(), world.sims["research"].exports_made()) == (0, 2)
    err = capsys.readouterr().err
    assert "backtest: 2 day(s) in workspace research not in the state" in err
    assert "[2/2] 2026-11-04 (workspace research, UTC): " in err
    assert world.stored(UTC_ZONE) == before  # the state is only read
    assert lacking.isdisjoint(before["research"])
