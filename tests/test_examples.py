"""The README's three worked budget examples, run through `costwatch check --csv` as written.

The export (config/examples/export-2026-11.csv) is November 2026 up to Nov 20, 13:00 in Berlin:
65.1% of the month has passed, so a linear forecast multiplies spend so far by 1.535.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from costwatch.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "config" / "examples"
NOW = "2026-11-20T12:00:00+00:00"


def run(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(
        [
            "check",
            "--config",
            str(EXAMPLES / name),
            "--csv",
            str(EXAMPLES / "export-2026-11.csv"),
            "--now",
            NOW,
            "--dry-run",
            "--format",
            "json",
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def alerts(document: Any) -> set[tuple[object, ...]]:
    rows = document["alerts"]
    assert isinstance(rows, list)
    return {
        (
            a["budget"],
            a["api_key_name"],
            a["model"],
            a["metric"],
            a["threshold"],
            a["kind"],
            a["severity"],
        )
        for a in rows
    }


@pytest.fixture(autouse=True)
def langdock_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", "not-used-with-csv")


def test_per_key_budgets_with_a_model_limit_and_a_fallback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, document = run("per-key.yaml", capsys)
    assert code == 1
    assert alerts(document) == {
        # $1,100.75 of $1,500 (73%): the 50% alert, which also carries the forecast ($1,690).
        ("support-bot", "support-bot-prod", None, "cost_usd", 50.0, "actual", "info"),
        # $980.50 of the $900 gpt-4o limit.
        ("support-bot", "support-bot-prod", "gpt-4o", "cost_usd", 100.0, "actual", "critical"),
        # 250,000 of 300,000 requests (83%).
        ("search", "search-indexer", None, "requests", 80.0, "actual", "warning"),
        # Keys nobody budgeted, against the $50 fallback.
        ("everyone-else", "data-etl", None, "cost_usd", 100.0, "actual", "critical"),
        ("everyone-else", "data-notebooks", None, "cost_usd", 100.0, "actual", "critical"),
        ("everyone-else", "data-sandbox", None, "cost_usd", 100.0, "actual", "critical"),
        ("everyone-else", 'intern, summer "test"', None, "cost_usd", 50.0, "actual", "info"),
    }
    fallback_keys = {
        f["api_key_name"] for f in document["findings"] if f["budget"] == "everyone-else"
    }
    assert "support-bot-prod" not in fallback_keys
    assert "search-indexer" not in fallback_keys


def test_team_pool_sums_the_teams_keys_without_the_excluded_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, document = run("team-pool.yaml", capsys)
    assert code == 1
    (finding,) = document["findings"]
    assert finding["scope"] == "shared"
    assert finding["api_key_id"] is None
    assert finding["used"] == pytest.approx(1450.0 + 420.0)  # data-etl + data-notebooks
    assert finding["level"] == 50.0
    assert finding["forecast_ratio"] == pytest.approx(1870.0 / 0.6513888 / 3000, rel=1e-4)
    assert alerts(document) == {("data-team", None, None, "cost_usd", 50.0, "actual", "info")}


def test_workspace_total_with_per_model_limits(capsys: pytest.CaptureFixture[str]) -> None:
    code, document = run("workspace.yaml", capsys)
    assert code == 1
    assert alerts(document) == {
        ("workspace", None, None, "cost_usd", 50.0, "actual", "info"),  # $3,413.85 of $5,000
        ("workspace", None, "gpt-4o", "cost_usd", 80.0, "actual", "warning"),  # $1,075.50
        ("workspace", None, "claude-*", "cost_usd", 100.0, "actual", "critical"),  # $1,870
    }


def test_the_example_table_reads_as_the_readme_shows(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "check",
            "--config",
            str(EXAMPLES / "workspace.yaml"),
            "--csv",
            str(EXAMPLES / "export-2026-11.csv"),
            "--now",
            NOW,
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "Budgets: 1 evaluated, 3 findings, 3 at a threshold or forecast to overrun" in out
    assert "Alerts that would be sent (dry run): 3" in out


def test_queued_alerts_carry_the_subjects_spend_requests_and_top_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (EXAMPLES / "workspace.yaml").read_text(encoding="utf-8")
    config = tmp_path / "workspace.yaml"
    config.write_text(text + f"state:\n  path: {tmp_path / 'state.db'}\n", encoding="utf-8")
    csv = str(EXAMPLES / "export-2026-11.csv")
    assert main(["check", "--config", str(config), "--csv", csv, "--now", NOW]) == 1
    capsys.readouterr()
    with sqlite3.connect(tmp_path / "state.db") as db:
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox")]
    db.close()
    pool = next(p for p in payloads if p["model"] is None)
    assert pool["spend_usd"] == pytest.approx(3413.85)
    assert pool["requests"] == 397_200
    assert pool["top_models"] == [
        ["claude-sonnet-4", 1870.0],
        ["gpt-4o", pytest.approx(1075.5)],
        ["gpt-4o-mini", pytest.approx(468.35)],
    ]
