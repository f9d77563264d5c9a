"""`check --format json` lists the detectors' findings of its cycle under `detected`: the real
CLI against the simulator over loopback and a real SQLite history the test writes (one key's
own days at a tenth of their spend: today is an anomaly for it; the other keys are not in the
history: new keys). A dry run judges nothing (it records no snapshot, queues nothing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from costwatch.cli import main
from costwatch.periods import local_midnight
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState
from costwatch.usage import SCHEMA

NOW = datetime(2026, 11, 30, 21, tzinfo=UTC)  # Monday 30 November, 22:00 in Berlin
TODAY = date(2026, 11, 30)
BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "sk-lang-DETECTED-0042"
WORKSPACE = Workspace(keys=3, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=6.0)
OWNER = "<!subteam^SOWNER>"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(WORKSPACE, api_key=SECRET, clock=lambda: NOW) as server:
        yield server


def write_config(tmp_path: Path, sim: Simulator, limit: float = 1000000) -> Path:
    owned = WORKSPACE.key_ids()[0][1]
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
langdock:
  base_url: {sim.base_url}
  api_key: {SECRET}
  allow_insecure_download: true
  timeout_seconds: 5
  retry_max_elapsed_seconds: 2
schedule: {{every: 15m, timezone: Europe/Berlin}}
state: {{path: {tmp_path / "state.db"}}}
slack: {{token: xoxb-test, channel: "#ai-spend"}}
budgets:
  - {{name: every-key, keys: "*", limits: {{cost_usd: {limit}}}}}
anomalies: {{metrics: cost_usd}}
unit_cost: {{enabled: false}}
owners:
  - {{keys: ["{owned}"], mention: "{OWNER}", channel: "#owners"}}
""",
        encoding="utf-8",
    )
    return path


def store_history(path: Path, days: int) -> None:
    """The first key's own closed days before today, at a tenth of their spend."""
    key_id, _ = WORKSPACE.key_ids()[0]
    with SqliteState.open(path) as state:
        for back in range(days, 0, -1):
            day = TODAY - timedelta(days=back)
            start, end = (
                local_midnight(day, BERLIN),
                local_midnight(day + timedelta(days=1), BERLIN),
            )
            rows = [
                (r.api_key_id, r.api_key_name, r.model, r.requests, r.total_cost_usd / 10)
                for r in WORKSPACE.usage(start, end)
                if r.api_key_id == key_id
            ]
            frame = pl.DataFrame(
                [(*row, None, None, None, None, None) for row in rows], schema=SCHEMA, orient="row"
            )
            state.put_day("Europe/Berlin", day, frame, exported_at=NOW, settled=True)


def check(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    args = ["check", "--config", str(config), "--now", NOW.isoformat(), "--format", "json"]
    main([*args, "--queue-only", *extra])
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_check_json_lists_the_cycles_anomalies_and_new_keys_with_owner_and_channels(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sim)
    store_history(tmp_path / "state.db", 35)
    document = check(config, capsys)
    detected = document["detected"]
    (_, owned), *others = WORKSPACE.key_ids()
    anomalies = [d for d in detected if d["kind"] == "anomaly" and d["model"] is None]
    assert [a["api_key_name"] for a in anomalies] == [owned]
    (anomaly,) = anomalies
    assert set(anomaly) >= {
        "kind", "day", "metric", "api_key_id", "value", "normal", "ratio", "since", "basis",
        "owner_mention", "owner_channel", "channels",
    }  # fmt: skip
    assert anomaly["day"] == anomaly["since"] == TODAY.isoformat()
    assert 5 < anomaly["ratio"] < 15  # today so far (22 of 24 hours) against a tenth
    assert (anomaly["owner_mention"], anomaly["owner_channel"]) == ([OWNER], "#owners")
    assert anomaly["channels"] == ["#ai-spend", "#owners"]
    new = sorted(d["api_key_name"] for d in detected if d["kind"] == "new_key")
    assert new == sorted(name for _, name in others)
    unowned = next(d for d in detected if d["kind"] == "new_key")
    assert (unowned["owner_mention"], unowned["channels"]) == ([], ["#ai-spend"])
    assert set(unowned) >= {"api_key_id", "cost_usd", "requests", "last_seen", "idle_days"}
    # the existing fields are all still there
    assert {"period", "findings", "alerts", "pending", "keys", "totals"} <= set(document)
    # queued once: the outbox holds one row per finding and channel
    assert len(document["pending"]) == sum(len(d["channels"]) for d in detected)

    again = check(config, capsys)  # the same day: sent already, nothing due
    assert again["detected"] == []


def test_a_dry_run_detects_nothing_and_records_nothing(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sim)
    store_history(tmp_path / "state.db", 35)
    dry = check(config, capsys, "--dry-run")
    assert (dry["detected"], dry["pending"]) == ([], [])
    real = check(config, capsys)  # nothing was recorded: the findings are due now
    assert {d["kind"] for d in real["detected"]} >= {"anomaly", "new_key"}


def test_without_a_history_nothing_is_detected_and_the_field_is_empty(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    document = check(write_config(tmp_path, sim), capsys)
    assert document["detected"] == []


def test_check_json_alerts_carry_their_owner_and_every_channel_they_go_to(
    tmp_path: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    document = check(write_config(tmp_path, sim, limit=1), capsys)
    owned = WORKSPACE.key_ids()[0][1]
    alerts = {a["api_key_name"]: a for a in document["alerts"]}
    assert set(alerts) == {name for _, name in WORKSPACE.key_ids()}
    mine = alerts.pop(owned)
    assert (mine["owner_mention"], mine["owner_channel"]) == ([OWNER], "#owners")
    assert (mine["channel"], mine["channels"]) == ("#ai-spend", ["#ai-spend", "#owners"])
    for other in alerts.values():
        assert (other["owner_mention"], other["owner_channel"]) == ([], None)
        assert other["channels"] == ["#ai-spend"]
