"""`costwatch validate`, `check` and `demo`, end to end over loopback against the simulator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from slackstub import TOKEN, SlackStub

from costwatch.cli import main
from costwatch.simulator import Simulator, Workspace

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SECRET = "sk-lang-VERY-SECRET-0042"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=8), api_key=SECRET, clock=lambda: NOW) as server:
        yield server


def write_config(tmp_path: Path, base_url: str, *, extra: str = "", limit: int = 200) -> Path:
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
langdock:
  base_url: {base_url}
  api_key: ${{LANGDOCK_API_KEY}}
  allow_insecure_download: true
  timeout_seconds: 5
  retry_max_elapsed_seconds: 2
schedule:
  every: 15m
  timezone: Europe/Berlin
state:
  path: {tmp_path / "state.db"}
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: {limit}}}
{extra}""",
        encoding="utf-8",
    )
    return path


def key_table(out: str) -> tuple[list[str], str]:
    """The per-key rows of check's table, and its totals row."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#  KEY"))
    end = next(i for i in range(header, len(lines)) if "TOTAL (" in lines[i])
    return lines[header + 1 : end], lines[end]


@pytest.fixture
def config(tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    return write_config(tmp_path, sim.base_url)


def test_check_prints_spend_per_key_sorted_with_totals(
    config: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", "--config", str(config), "--now", NOW.isoformat()])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert out.startswith("Month to date in Europe/Berlin: 2026-11-01 00:00 to 2026-11-20 13:00")
    body, total_line = key_table(out)
    assert len(body) == 8
    spends = [float(line.split("$")[1].split()[0].replace(",", "")) for line in body]
    assert spends == sorted(spends, reverse=True)
    assert total_line.lstrip().startswith("TOTAL (8 keys)")
    total = float(total_line.split("$")[1].split()[0].replace(",", ""))
    assert total == pytest.approx(sum(spends), abs=0.01 * len(spends))
    assert sim.exports_made() == 1


def test_check_exports_the_month_to_date_in_the_configured_zone(
    config: Path, sim: Simulator
) -> None:
    assert main(["check", "--config", str(config), "--now", NOW.isoformat()]) == 0
    (export,) = [r for r in sim.requests if r.path == "/export/api-keys"]
    body = json.loads(export.body)
    assert body == {
        "from": {"date": "2026-11-01T00:00:00.000Z", "timezone": "Europe/Berlin"},
        "to": {"date": "2026-11-20T12:59:59.999Z", "timezone": "Europe/Berlin"},
        "group_by": "model",
    }


def test_check_json_is_one_object_with_period_findings_alerts_and_keys(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", "--config", str(config), "--now", NOW.isoformat(), "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    assert code == (1 if any(f["level"] is not None for f in document["findings"]) else 0)
    assert document["period"] == {
        "start": "2026-11-01T00:00:00+01:00",
        "end": "2026-12-01T00:00:00+01:00",
        "timezone": "Europe/Berlin",
    }
    # One budget, $200 per key: a finding per key for cost, with the DESIGN.md fields.
    assert len(document["findings"]) == 8
    assert set(document["findings"][0]) >= DESIGN_FINDING_FIELDS
    assert {f["metric"] for f in document["findings"]} == {"cost_usd"}
    for alert in document["alerts"]:
        assert set(alert) >= DESIGN_ALERT_FIELDS
    assert len(document["keys"]) == 8
    first = document["keys"][0]
    assert set(first) >= {"api_key_id", "api_key_name", "requests", "total_cost_usd", "top_models"}
    assert 1 <= len(first["top_models"]) <= 3


# The fields `check --format json` had first: they may be added to, never removed or renamed.
DESIGN_FINDING_FIELDS = {
    "budget", "scope", "api_key_id", "api_key_name", "model", "metric", "used", "limit",
    "ratio", "level", "forecast_ratio",
}  # fmt: skip
DESIGN_ALERT_FIELDS = {
    "budget", "api_key_id", "api_key_name", "model", "metric", "threshold", "kind", "severity",
}  # fmt: skip


def test_check_json_findings_alerts_silences_and_pending_rows_carry_what_scripts_need(
    tight: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tight.write_text(
        tight.read_text()
        + "    channel: '#team'\n"
        + "  - {name: quiet, keys: '*', limits: {cost_usd: 50}}\n"
        + "silences:\n"
        + "  - {budget: quiet, until: '2026-12-01T00:00:00+00:00', reason: migration}\n"
    )
    args = ["check", "--config", str(tight), "--now", NOW.isoformat(), "--format", "json"]
    assert main(args) == 1  # no slack section: planned, and waiting in the outbox
    document = json.loads(capsys.readouterr().out)
    finding = next(f for f in document["findings"] if f["level"] is not None)
    assert set(finding) >= DESIGN_FINDING_FIELDS | {"period", "projected", "overrun_at"}
    assert finding["period"] == "month:2026-11-01@Europe/Berlin"
    assert finding["projected"] == pytest.approx(finding["used"] * 30 / (19 + 13 / 24))
    assert finding["forecast_method"] == "linear since the period's start"  # no days stored
    alert = document["alerts"][0]
    assert set(alert) >= DESIGN_ALERT_FIELDS | {"channel", "used", "limit", "forecast_method"}
    assert (alert["channel"], alert["limit"]) == ("#team", 50.0)
    assert alert["used"] >= 25.0
    (silenced, *_) = document["silenced"]
    assert (silenced["reason"], silenced["until"]) == ("migration", "2026-12-01T00:00:00+00:00")
    assert len(document["pending"]) == len(document["alerts"])  # queued, not delivered
    assert {(p["attempts"], p["last_error"]) for p in document["pending"]} == {(0, None)}
    assert document["delivery"]["attempted"] is False
    assert document["totals"]["keys"] == len(document["keys"]) == 8


def test_naive_now_is_read_in_the_schedule_time_zone(
    config: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--config", str(config), "--now", "2026-11-20T13:00:00"]) == 0
    (export,) = [r for r in sim.requests if r.path == "/export/api-keys"]
    assert json.loads(export.body)["to"]["date"] == "2026-11-20T12:59:59.999Z"
    capsys.readouterr()


@pytest.mark.parametrize("now", ["9999-12-31T23:00:00+00:00", "0001-01-01T00:00:00", "1969-07-20"])
def test_a_now_whose_period_cannot_be_computed_is_refused_before_anything_runs(
    config: Path, sim: Simulator, capsys: pytest.CaptureFixture[str], now: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "--config", str(config), "--now", now])
    assert exited.value.code == 2  # argparse's usage error
    assert "is outside the years 1971 to 9998" in capsys.readouterr().err
    assert sim.requests == []


def test_check_with_a_wrong_key_exits_2_naming_the_scope_without_the_key(
    tmp_path: Path,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", "sk-lang-WRONG-KEY-777")
    config = write_config(tmp_path, sim.base_url)
    code = main(["check", "--config", str(config), "--now", NOW.isoformat()])
    captured = capsys.readouterr()
    assert code == 2
    assert "USAGE_EXPORT_API" in captured.err
    assert "sk-lang-WRONG-KEY-777" not in captured.err + captured.out


def test_check_when_langdock_keeps_failing_exits_2_with_the_reason(
    config: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.faults.fail_export(503, times=100)
    code = main(["check", "--config", str(config), "--now", NOW.isoformat()])
    captured = capsys.readouterr()
    assert code == 2
    assert "export failed (server_error)" in captured.err
    assert captured.out == ""  # nothing that could read as "within budget"


def test_check_with_no_usage_in_the_period_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = Workspace(keys=3, created=datetime(2026, 11, 19, tzinfo=UTC))
    with Simulator(workspace, api_key=SECRET, clock=lambda: NOW) as sim:
        monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
        config = write_config(tmp_path, sim.base_url)
        code = main(["check", "--config", str(config), "--now", "2026-11-10T12:00:00+00:00"])
    assert code == 0
    assert "No usage in this period." in capsys.readouterr().out


def test_check_csv_reads_a_saved_export_and_calls_no_api(
    config: Path, sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        "period_start,period_end,org_id,api_key_id,api_key_name,model,requests,total_cost_usd\r\n"
        '2026-11-01,2026-11-20,org,k1,"bot, prod",gpt-4o,10,12.5\r\n'
        '2026-11-01,2026-11-20,org,k1,"bot, prod",gpt-4o-mini,5,0.5\r\n'
        "2026-11-01,2026-11-20,org,k2,Zürich-Ops,gpt-4o,1,30\r\n",
        encoding="utf-8-sig",
    )
    code = main(["check", "--config", str(config), "--csv", str(export), "--now", NOW.isoformat()])
    out = capsys.readouterr().out
    assert code == 0  # $30 and $13 of $200 each: within budget
    assert sim.exports_made() == 0
    body, total = key_table(out)
    assert "Zürich-Ops" in body[0]  # sorted by spend: $30 first
    assert "bot, prod" in body[1]
    assert "gpt-4o $12.50, gpt-4o-mini $0.50" in body[1]
    assert total.split() == ["TOTAL", "(2", "keys)", "$43.00", "16"]


def test_check_csv_that_does_not_parse_exits_2_naming_column_and_row(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "bad.csv"
    export.write_text(
        "api_key_id,api_key_name,model,requests,total_cost_usd\n"
        "k1,a,gpt-4o,1,1.0\n"
        "k2,b,gpt-4o,2,lots\n",
        encoding="utf-8",
    )
    code = main(["check", "--config", str(config), "--csv", str(export)])
    captured = capsys.readouterr()
    assert code == 2
    assert "total_cost_usd" in captured.err
    assert "row 2" in captured.err
    assert captured.out == ""


def test_check_with_a_broken_config_exits_2_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "langdock:\n  api_key: x\nbudgets:\n  - name: a\n    keys: '*'\n    limts: {cost_usd: 1}\n",
        encoding="utf-8",
    )
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "budgets[0].limts (line 6)" in err


def test_missing_config_file_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_validate_summarises_a_good_file_and_counts_matched_keys(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        "api_key_id,api_key_name,model,requests,total_cost_usd\nk1,a,m,1,1\nk2,b,m,1,1\n",
        encoding="utf-8",
    )
    assert main(["validate", "--config", str(config), "--csv", str(export)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "every-key" in out
    assert "Europe/Berlin" in out
    assert "2" in out
    assert SECRET not in out


def test_demo_runs_one_cycle_against_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--once"]) == 0
    captured = capsys.readouterr()
    assert "to date in Europe/Berlin" in captured.out
    assert "TOTAL (12 keys)" in captured.out
    assert "Slack:" not in captured.out  # one cycle, printed: the demo delivers nothing
    assert "simulated Langdock workspace" in captured.err


def test_python_dash_m_costwatch_runs_check_as_a_real_process(config: Path, sim: Simulator) -> None:
    env = {**os.environ, "LANGDOCK_API_KEY": SECRET}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "costwatch",
            "--log-level",
            "info",
            "check",
            "--config",
            str(config),
            "--now",
            NOW.isoformat(),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "TOTAL (8 keys)" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert "model column 'model'" in done.stdout


def state_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the state's tables, to compare a file before and after."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}  # noqa: S608
    db.close()
    return rows


@pytest.fixture
def tight(tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config whose $50 per key the busiest simulated keys have crossed."""
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    return write_config(tmp_path, sim.base_url, limit=50)


def test_dry_run_plans_but_leaves_the_state_as_it_was(
    tight: Path, sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tight
    first = main(["check", "--config", str(config), "--now", NOW.isoformat()])
    before = state_rows(tmp_path / "state.db")
    # Half the limit: more thresholds are crossed, and a dry run must record none of them.
    tighter = write_config(tmp_path, sim.base_url, limit=20)
    second = main(["check", "--config", str(tighter), "--now", NOW.isoformat(), "--dry-run"])
    out = capsys.readouterr().out
    assert (first, second) == (1, 1)
    assert "Alerts that would be sent (dry run):" in out
    assert state_rows(tmp_path / "state.db") == before


def test_dry_run_without_a_state_file_creates_none(
    tight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tight
    assert main(["check", "--config", str(config), "--now", NOW.isoformat(), "--dry-run"]) == 1
    assert not (tmp_path / "state.db").exists()
    capsys.readouterr()


def test_three_failed_exports_queue_one_failing_alert_and_a_success_one_recovered(
    tight: Path, sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tight
    sim.faults.fail_export(401, times=3)
    for _ in range(3):
        assert main(["check", "--config", str(config), "--now", NOW.isoformat()]) == 2
    kinds = [
        k for (k,) in sqlite3.connect(tmp_path / "state.db").execute("SELECT kind FROM outbox")
    ]
    assert kinds == ["exports_failing"]
    assert main(["check", "--config", str(config), "--now", NOW.isoformat()]) == 1
    out = capsys.readouterr().out
    with sqlite3.connect(tmp_path / "state.db") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM outbox ORDER BY id")]
    db.close()
    assert kinds[:2] == ["exports_failing", "exports_recovered"]
    assert "Langdock exports failing since" in out  # listed while it waits for delivery


def test_silenced_alerts_are_shown_with_their_end_and_not_queued(
    tight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tight
    config.write_text(
        config.read_text()
        + "silences:\n  - budget: every-*\n    until: 2026-12-01T00:00:00Z\n"
        + "    reason: load test until December\n"
    )
    assert main(["check", "--config", str(config), "--now", NOW.isoformat()]) == 1
    out = capsys.readouterr().out
    assert "Alerts planned in this run: 0" in out
    assert "Silenced: " in out
    assert "(silenced until 2026-12-01T00:00:00+00:00: load test until December)" in out
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    db.close()


def test_test_slack_reports_each_channel_and_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SlackStub() as stub:
        stub.add_channel("#ai-spend")
        stub.add_channel("#archived", archived=True)
        monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        config = write_config(
            tmp_path,
            "https://api.langdock.com",
            extra=(
                '    channel: "#archived"\n'
                "slack:\n  token: ${SLACK_BOT_TOKEN}\n"
                f'  channel: "#ai-spend"\n  api_url: {stub.api_url}\n'
            ),
        )
        code = main(["test-slack", "--config", str(config)])
        out = capsys.readouterr().out
        posted = [r.channel for r in stub.posts()]
    assert code == 1
    assert "ok      #ai-spend" in out
    assert "FAILED  #archived: is_archived" in out
    assert "1 of 2 channel(s) reached" in out
    assert posted == ["#ai-spend"]
    assert TOKEN not in out


def saved_export(path: Path, start: str, end: str) -> Path:
    path.write_text(
        "period_start,period_end,org_id,api_key_id,api_key_name,model,requests,total_cost_usd\n"
        f"{start},{end},org,k1,bot,gpt-4o,10,12.5\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("start", "end", "now", "refused"),
    [
        ("2026-11-01", "2026-11-30", "2026-12-03T10:00:00+01:00", True),  # November on Dec 3
        ("2026-11-01", "2026-11-30", "2026-12-01T00:30:00+01:00", True),  # December just begun
        ("2026-09-01", "2026-09-30", "2026-11-20T13:00:00+01:00", True),  # an old export
        ("2026-11-01", "2026-11-30", "2026-11-20T13:00:00+01:00", True),  # ends after --now
        ("2026-11-01", "2026-11-20", "2026-11-20T13:00:00+01:00", False),  # the month to date
        ("2026-11-01", "2026-11-30", "2026-11-30T23:00:00+01:00", False),  # the whole month
    ],
)
def test_check_csv_for_another_period_than_now_exits_2_naming_both_periods(  # noqa: PLR0917
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    start: str,
    end: str,
    now: str,
    refused: bool,
) -> None:
    export = saved_export(tmp_path / "export.csv", start, end)
    code = main(["check", "--config", str(config), "--csv", str(export), "--now", now])
    captured = capsys.readouterr()
    if not refused:
        assert code == 0, captured.err
        return
    assert code == 2
    assert captured.out == ""  # nothing that could read as "within budget"
    assert f"export covers {start}..{end}" in captured.err
    month = now[:8] + "01"
    assert f"but {month}..{now[:10]} was requested" in captured.err
    assert "month to date" in captured.err


def export_health(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT * FROM export_health").fetchall()
    db.close()
    return rows


def test_check_csv_never_touches_export_health(
    config: Path, sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.faults.fail_export(401, times=2)
    for _ in range(2):
        assert main(["check", "--config", str(config), "--now", NOW.isoformat()]) == 2
    before = export_health(tmp_path / "state.db")
    assert before[0][1] == 2  # two failed exports in a row
    good = saved_export(tmp_path / "good.csv", "2026-11-01", "2026-11-20")
    bad = saved_export(tmp_path / "bad.csv", "2026-10-01", "2026-10-31")
    for export, code in ((good, 0), (bad, 2), (tmp_path / "missing.csv", 2)):
        args = ["check", "--config", str(config), "--csv", str(export), "--now", NOW.isoformat()]
        assert main(args) == code
        assert export_health(tmp_path / "state.db") == before
    capsys.readouterr()


TOKENS_ONLY = "  - {name: tokens-cap, keys: '*', limits: {tokens: 1000000}}\n"


def test_a_tokens_budget_on_an_export_without_tokens_is_reported_never_within_budget(
    tmp_path: Path,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    config = tmp_path / "tokens.yaml"
    text = write_config(tmp_path, sim.base_url).read_text()
    config.write_text(text.split("budgets:")[0] + "budgets:\n" + TOKENS_ONLY)
    # Only a tokens limit, and the (non-BYOK) export has no tokens: nothing was evaluated.
    assert main(["check", "--config", str(config), "--now", NOW.isoformat()]) == 2
    captured = capsys.readouterr()
    assert "Budgets: 0 evaluated" in captured.out
    assert "Not evaluated: 1 limit" in captured.out
    message = "budget 'tokens-cap': its tokens limit is not evaluated: the export reports no tokens"
    assert message in captured.out
    assert message in captured.err  # the cycle's WARNING
    assert "nothing was evaluated" in captured.err
    # Beside a budget that is evaluated, it is still reported; the exit code is that budget's.
    config.write_text(text + TOKENS_ONLY)
    args = ["check", "--config", str(config), "--now", NOW.isoformat(), "--format", "json"]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["unevaluated"] == [
        {
            "budget": "tokens-cap",
            "metric": "tokens",
            "model": None,
            "reason": "export_has_no_tokens",
            "message": message + " (only BYOK workspaces do)",
        }
    ]
    # validate --csv says so before anything runs.
    export = saved_export(tmp_path / "export.csv", "2026-11-01", "2026-11-20")
    assert main(["validate", "--config", str(config), "--csv", str(export)]) == 0
    assert f"warning   {message}" in capsys.readouterr().out


def test_validate_warns_about_an_expired_silence(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text(
        config.read_text()
        + "silences:\n"
        + "  - {budget: every-key, until: '2020-01-01T00:00:00+00:00', reason: old backfill}\n"
        + "  - {budget: every-key, until: '2999-01-01T00:00:00+00:00', reason: far future}\n"
    )
    assert main(["validate", "--config", str(config)]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warn")]
    assert warnings == [
        "warning   silences[0] ended 2020-01-01T00:00:00+00:00 and is ignored: remove it"
        " (old backfill)"
    ]


# --- check delivers, so a cron job can replace the daemon ---------------------------------------


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(retry_after=0) as server:
        server.add_channel("#ai-spend")
        yield server


@pytest.fixture
def slack_config(
    tmp_path: Path, sim: Simulator, stub: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """$50 per key (the busiest simulated keys have crossed it), alerts to the stand-in."""
    monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    slack = (
        "slack:\n  token: ${SLACK_BOT_TOKEN}\n"
        f'  channel: "#ai-spend"\n  api_url: {stub.api_url}\n  min_interval_seconds: 0\n'
    )
    return write_config(tmp_path, sim.base_url, limit=50, extra=slack)


def outbox(path: Path) -> list[tuple[object, ...]]:
    """(id, sent, attempts, last_error) of every outbox row."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT id, sent_at IS NOT NULL, attempts, last_error FROM outbox ORDER BY id"
        ).fetchall()
    db.close()
    return rows


def check(config: Path, *extra: str, now: datetime = NOW) -> list[str]:
    return ["check", "--config", str(config), "--now", now.isoformat(), *extra]


def test_a_check_posts_each_alert_it_plans_once_and_a_second_check_posts_nothing_new(
    slack_config: Path, stub: SlackStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(check(slack_config, "--format", "json")) == 1
    document = json.loads(capsys.readouterr().out)
    planned = len(document["alerts"])
    assert planned >= 1
    assert len(stub.posts("#ai-spend")) == planned
    assert document["pending"] == []
    assert document["delivery"] == {
        "attempted": True, "sent": planned, "messages": planned, "failed": 0, "pending": 0,
        "errors": {}, "timed_out": False, "note": None,
    }  # fmt: skip
    assert all(sent for _, sent, _, _ in outbox(tmp_path / "state.db"))
    later = NOW + timedelta(minutes=15)
    assert main(check(slack_config, now=later)) == 1  # still over: the exit code says so
    out = capsys.readouterr().out
    assert "Alerts planned in this run: 0" in out
    assert "Slack: 0 rows delivered in 0 messages; nothing waiting" in out
    assert len(stub.posts()) == planned


def test_rows_a_failing_slack_left_in_the_outbox_go_out_with_the_next_check(
    slack_config: Path, stub: SlackStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub.fail_next(503, times=100)
    assert main(check(slack_config)) == 1  # Slack's trouble does not change the exit code
    out = capsys.readouterr().out
    rows = outbox(tmp_path / "state.db")
    assert rows
    assert {(sent, attempts, error) for _, sent, attempts, error in rows} == {
        (0, 1, "http_503: Slack is failing; trying again later")
    }
    assert f"Waiting in the outbox for delivery: {len(rows)}" in out
    assert "(1 attempt, last error: http_503" in out
    assert "still waiting in the outbox (the next run retries them)" in out
    stub._faults.clear()  # Slack is back
    later = NOW + timedelta(minutes=15)  # past slack.retry_every
    assert main(check(slack_config, "--format", "json", now=later)) == 1
    document = json.loads(capsys.readouterr().out)
    assert (document["alerts"], document["pending"]) == ([], [])
    assert document["delivery"]["sent"] == len(rows)
    assert len(stub.posts()) == len(rows)
    assert all(sent for _, sent, _, _ in outbox(tmp_path / "state.db"))


def test_queue_only_plans_into_the_outbox_and_posts_nothing(
    slack_config: Path, stub: SlackStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(check(slack_config, "--queue-only")) == 1
    out = capsys.readouterr().out
    rows = outbox(tmp_path / "state.db")
    assert rows
    assert stub.requests == []
    assert "Slack: nothing delivered (--queue-only)" in out
    assert f"Waiting in the outbox for delivery: {len(rows)}" in out
    assert main(check(slack_config)) == 1  # the next check delivers them
    assert len(stub.posts()) == len(rows)
    capsys.readouterr()


def test_a_dry_run_posts_nothing(
    slack_config: Path, stub: SlackStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(check(slack_config)) == 1
    capsys.readouterr()
    tighter = slack_config.read_text().replace("cost_usd: 50", "cost_usd: 20")
    slack_config.write_text(tighter)
    posts = len(stub.requests)
    assert main(check(slack_config, "--dry-run")) == 1
    assert "Alerts that would be sent (dry run):" in capsys.readouterr().out
    assert len(stub.requests) == posts


@pytest.mark.parametrize("fault", ["no answer", "Retry-After: 60"])
def test_a_stuck_slack_cannot_hold_check_past_its_delivery_timeout(
    slack_config: Path,
    stub: SlackStub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fault: str,
) -> None:
    # $20 per key: several alerts for one channel.
    slack_config.write_text(slack_config.read_text().replace("cost_usd: 50", "cost_usd: 20"))
    if fault == "no answer":
        stub.delay_next(60, times=100)  # each post times out at the time delivery has left
    else:
        stub.retry_after = 60  # longer than the delivery has left: not waited out at all
        stub.fail_next(429, times=100)
    started = time.monotonic()
    code = main(check(slack_config, "--delivery-timeout", "2s"))
    took = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 1
    assert took < 2 + 10  # the timeout plus the cycle itself, far below the 60 s Slack takes
    if fault == "no answer":  # the post timed out within the 2 s; the channel rests
        assert "failed (timeout x1)" in out
    else:  # a Retry-After past the time left is not slept: the rows wait for the next run
        assert "failed (ratelimited x1)" in out
    rows = outbox(tmp_path / "state.db")
    assert len(rows) > 1
    assert not any(sent for _, sent, _, _ in rows)  # nothing marked sent that Slack did not take
    assert f"{len(rows)} still waiting in the outbox" in out


def test_a_check_whose_export_fails_still_delivers_the_exports_failing_notice(
    slack_config: Path, sim: Simulator, stub: SlackStub, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.faults.fail_export(401, times=3)
    for _ in range(3):
        assert main(check(slack_config)) == 2  # the exit code is the export's
    (notice,) = stub.posts("#ai-spend")
    assert "fail" in notice.text.lower()
    err = capsys.readouterr().err
    assert "Slack: 1 row delivered in 1 message; nothing waiting" in err


def test_test_slack_through_a_webhook_names_the_webhooks_channel_not_an_empty_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SlackStub() as stub:
        monkeypatch.setenv("LANGDOCK_API_KEY", SECRET)
        monkeypatch.setenv("SLACK_WEBHOOK_URL", stub.webhook_url)
        config = write_config(
            tmp_path,
            "https://api.langdock.com",
            extra="slack:\n  webhook_url: ${SLACK_WEBHOOK_URL}\n",
        )
        assert main(["test-slack", "--config", str(config)]) == 0
        (post,) = stub.posts()
    assert "ok      the webhook's channel" in capsys.readouterr().out
    assert "costwatch can post to the webhook's channel." in post.text
    assert "post to ." not in post.text
    assert post.body["text"] == "costwatch test message for the webhook's channel"


def test_check_from_a_saved_csv_loads_neither_httpx_nor_psycopg(tmp_path: Path) -> None:
    """`check --csv` (cron on SQLite) starts without the export client's nor PostgreSQL's
    libraries: each costs a tenth of a second or more of every run's start."""
    export = tmp_path / "export.csv"
    export.write_text(
        "api_key_id,api_key_name,model,requests,total_cost_usd\nk1,bot,gpt-4o,3,1.5\n",
        encoding="utf-8",
    )
    config = tmp_path / "costwatch.yaml"
    config.write_text(
        f"langdock: {{api_key: x}}\nstate: {{path: {tmp_path / 'state.db'}}}\n"
        'budgets:\n  - {name: b, keys: "*", limits: {cost_usd: 100}}\n',
        encoding="utf-8",
    )
    script = (
        "import sys\n"
        "from costwatch.cli import main\n"
        f"code = main(['check', '--config', {str(config)!r}, '--csv', {str(export)!r}])\n"
        "loaded = sorted(m for m in ('httpx', 'psycopg') if m in sys.modules)\n"
        "print('loaded:', loaded, 'exit:', code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.splitlines()[-1] == "loaded: [] exit: 0"
