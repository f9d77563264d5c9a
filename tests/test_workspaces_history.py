"""The usage history of several workspaces: `costwatch backfill` and `costwatch check` against
two simulators (one per workspace) with one state file. Each workspace's closed days are kept
in its own partition of the store ("<workspace>:<zone>"), with the ids as Langdock gives them;
a cycle then exports only today in each workspace, and its totals equal the whole period's;
the detectors read every workspace's days with ids "workspace/id", as the cycle's keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from costwatch.cli import main
from costwatch.cli.backfill import run_backfill
from costwatch.config import load_config
from costwatch.simulator import Simulator, Workspace
from costwatch.state.sqlite import SqliteState

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 13:00 in Berlin
MONTH_START = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November in Europe/Berlin
BERLIN = "Europe/Berlin"
KEYS = {"marketing": "sk-marketing-0001", "research": "sk-research-0002"}
COSTS = {"marketing": 0.05, "research": 0.02}  # the same seed: the same key ids, other spend


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def sims(clock: Clock) -> Iterator[dict[str, Simulator]]:
    with (
        Simulator(workspace("marketing"), api_key=KEYS["marketing"], clock=clock) as one,
        Simulator(workspace("research"), api_key=KEYS["research"], clock=clock) as two,
    ):
        yield {"marketing": one, "research": two}


def workspace(name: str, keys: int = 4) -> Workspace:
    return Workspace(keys=keys, hourly_cost_usd=COSTS[name])


@pytest.fixture
def config(tmp_path: Path, sims: dict[str, Simulator], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MARKETING_KEY", KEYS["marketing"])
    monkeypatch.setenv("RESEARCH_KEY", KEYS["research"])
    items = "".join(
        f"  - name: {name}\n    base_url: {sim.base_url}\n    api_key: ${{{name.upper()}_KEY}}\n"
        "    allow_insecure_download: true\n    max_attempts: 1\n    timeout_seconds: 5\n"
        for name, sim in sims.items()
    )
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
workspaces:
{items}schedule: {{every: 15m, timezone: {BERLIN}}}
state: {{path: {tmp_path / "state.db"}}}
budgets:
  - {{name: org-total, keys: "*", scope: shared, limits: {{cost_usd: 100000}}}}
  - {{name: every-key, keys: "*", limits: {{cost_usd: 100000}}}}
""",
        encoding="utf-8",
    )
    return path


def truth(name: str, start: datetime, end: datetime, keys: int = 4) -> dict[str, float]:
    """Each key's spend in workspace `name` over [start, end), as its simulator computes it."""
    totals: dict[str, float] = {}
    for row in workspace(name, keys).usage(start, end):
        totals[row.api_key_id] = totals.get(row.api_key_id, 0.0) + row.total_cost_usd
    return totals


def check(config: Path, now: datetime, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(["check", "--config", str(config), "--now", now.isoformat(), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "failed" not in captured.err, captured.err  # no detector, report nor export failed
    document: dict[str, Any] = json.loads(captured.out)
    return document


def used(document: dict[str, Any], budget: str) -> dict[str, float]:
    return {f["api_key_id"]: f["used"] for f in document["findings"] if f["budget"] == budget}


def stored_spend(path: Path, partition: str, first: date, last: date) -> dict[str, float]:
    with SqliteState.open(path, write=False) as state:
        frame = state.usage_between(partition, first, last)
    totals: dict[str, float] = {}
    for row in frame.iter_rows(named=True):
        totals[row["api_key_id"]] = totals.get(row["api_key_id"], 0.0) + row["total_cost_usd"]
    return totals


def stored_days(path: Path, partition: str) -> list[date]:
    with SqliteState.open(path, write=False) as state:
        return sorted(state.stored_days(partition, date(2026, 10, 1), date(2026, 11, 30)))


def days(first: str, last: str) -> list[date]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def test_backfill_stores_each_workspaces_days_in_its_own_partition_with_its_own_ids(
    config: Path, sims: dict[str, Simulator], tmp_path: Path
) -> None:
    out = tmp_path / "backfill.out"
    with out.open("w") as text:
        code = run_backfill(
            load_config(config),
            days=30,
            pace=timedelta(milliseconds=1),
            out=text,
            clock=lambda: NOW,
        )
    assert code == 0, out.read_text()
    assert sims["marketing"].exports_made() == sims["research"].exports_made() == 30
    said = out.read_text()
    assert "60 closed day(s) of the last 30 to export" in said
    assert "(workspace research, Europe/Berlin)" in said
    state = tmp_path / "state.db"
    assert stored_days(state, BERLIN) == []  # no workspace is "default"
    for name in ("marketing", "research"):
        assert stored_days(state, f"{name}:{BERLIN}") == days("2026-10-21", "2026-11-19")
        first, last = date(2026, 11, 1), date(2026, 11, 19)
        month = truth(name, MONTH_START, MONTH_START + timedelta(days=19))
        stored = stored_spend(state, f"{name}:{BERLIN}", first, last)
        assert set(stored) == set(month)  # bare ids, as Langdock gives them
        assert stored == pytest.approx(month, rel=1e-9)
    # one key id in both workspaces, kept apart: each partition holds its own spend
    marketing = stored_spend(state, f"marketing:{BERLIN}", date(2026, 11, 1), date(2026, 11, 19))
    research = stored_spend(state, f"research:{BERLIN}", date(2026, 11, 1), date(2026, 11, 19))
    assert set(marketing) == set(research)
    assert all(marketing[key] > research[key] for key in marketing)


def test_after_a_backfill_a_cycle_exports_only_today_in_each_workspace_and_equals_the_period(
    config: Path, sims: dict[str, Simulator], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_backfill(
            load_config(config), days=30, pace=timedelta(milliseconds=1), clock=lambda: NOW
        )
        == 0
    )
    capsys.readouterr()
    before = {name: sim.exports_made() for name, sim in sims.items()}
    sims["research"].workspace = workspace("research", keys=5)  # a key new today, there only
    document = check(config, NOW, capsys)
    assert {name: sim.exports_made() - before[name] for name, sim in sims.items()} == {
        "marketing": 1,
        "research": 1,
    }
    assert "19 stored days" in document["source"]
    per_key = used(document, "every-key")
    midnight = datetime(2026, 11, 19, 23, 0, tzinfo=UTC)  # the 20th in Berlin
    whole = {f"marketing/{key}": cost for key, cost in truth("marketing", MONTH_START, NOW).items()}
    for keys, span in ((4, (MONTH_START, midnight)), (5, (midnight, NOW))):  # stored, then today
        for key, cost in truth("research", *span, keys=keys).items():
            whole[f"research/{key}"] = whole.get(f"research/{key}", 0.0) + cost
    assert per_key == pytest.approx(whole, rel=1e-9)
    (org,) = used(document, "org-total").values()
    assert org == pytest.approx(sum(whole.values()), rel=1e-9)
    # the detectors read both workspaces' days with qualified ids: only the new key is new
    new = [f for f in document["detected"] if f["kind"] == "new_key"]
    (fifth, _) = Workspace(keys=5).key_ids()[4]
    assert [f["api_key_id"] for f in new] == [f"research/{fifth}"]


def test_cycles_store_each_workspaces_closed_days_then_export_only_today(
    config: Path,
    sims: dict[str, Simulator],
    clock: Clock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock.now = now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # one closed day in the month
    document = check(config, now, capsys)
    assert {name: sim.exports_made() for name, sim in sims.items()} == {
        "marketing": 2,  # the 1st, stored, and today
        "research": 2,
    }
    state = tmp_path / "state.db"
    for name in ("marketing", "research"):
        assert stored_days(state, f"{name}:{BERLIN}") == [date(2026, 11, 1)]
    assert stored_days(state, BERLIN) == []
    clock.now = now = now + timedelta(minutes=15)
    again = check(config, now, capsys)
    assert {name: sim.exports_made() for name, sim in sims.items()} == {
        "marketing": 3,
        "research": 3,
    }
    whole = {
        f"{name}/{key}": cost
        for name in ("marketing", "research")
        for key, cost in truth(name, MONTH_START, now).items()
    }
    assert used(again, "every-key") == pytest.approx(whole, rel=1e-9)
    assert set(used(document, "every-key")) == set(whole)
    # today's snapshot of each workspace's keys, in its own partition, ids bare
    with SqliteState.open(state) as store, store.transaction() as transaction:
        for name in ("marketing", "research"):
            taken = transaction.snapshots(f"{name}:{BERLIN}", date(2026, 11, 2), date(2026, 11, 2))
            assert taken.recorded(13) == [date(2026, 11, 2)]
            assert set(taken.frame["api_key_id"]) == set(truth(name, MONTH_START, now))
