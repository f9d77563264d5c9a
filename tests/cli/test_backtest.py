"""`costwatch backtest` end to end: the real command over a real state file and the simulator
over loopback. A history the test builds gives known alerts (dates, channels, totals); the
daemon's own cycle run day by day over the simulator's days gives exactly the alerts (and the
detectors' findings) the backtest gives; the days the state lacks come from the API and
nothing is written; the three formats; exit codes; errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pgserver
import psycopg
import pytest
from histories import Row, frame

from costwatch import cycle, fetch, history
from costwatch.cli import main
from costwatch.cli.backtest import run_backtest
from costwatch.config import Config, load_config
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.state import PostgresState, SqliteState

KEY = "sim-backtest-key"
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)  # the test's "today": 2 December 2026
UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NOVEMBER = [date(2026, 11, 1) + timedelta(days=n) for n in range(30)]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=4, hourly_cost_usd=0.5), api_key=KEY, clock=lambda: NOW) as s:
        yield s


def write(tmp_path: Path, base_url: str, body: str, name: str = "costwatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"""\
langdock:
  base_url: {base_url}
  api_key: {KEY}
  allow_insecure_download: true
  timeout_seconds: 5
  max_attempts: 1
state:
  path: {tmp_path / "state.db"}
{body}""",
        encoding="utf-8",
    )
    return path


def backtest(path: Path, *args: str) -> tuple[int, str]:
    """The command as `main` runs it, with the test's clock: exit code and stdout."""
    out = io.StringIO()
    parsed = _args(path, *args)
    config = load_config(path)
    code = run_backtest(config, config_path=path, out=out, clock=lambda: NOW, **parsed)
    return code, out.getvalue()


def _args(path: Path, *args: str) -> dict[str, Any]:
    from costwatch.cli import _parser  # the command's own parser: the same checks of dates

    ns = _parser().parse_args(["backtest", "--config", str(path), "--pace", "0s", *args])
    return {
        "first": ns.first,
        "last": ns.last,
        "at": ns.at,
        "output_format": ns.format,
        "pace": ns.pace,
    }


# -- a history whose answer is known ------------------------------------------------------------

KNOWN = """\
schedule: {timezone: UTC, every: 6h}
defaults: {forecast: false}
anomalies: {enabled: false}
unit_cost: {enabled: false}
slack: {token: xoxb-test-token, channel: "#costs"}
budgets:
  - name: alpha-month
    keys: alpha
    channel: "#ai-spend"
    limits: {cost_usd: 100}
  - name: beta-day
    keys: "beta*"
    period: day
    thresholds: [100]
    limits: {cost_usd: 10}
"""


def known_rows() -> list[Row]:
    """alpha: $8 a day; "beta|ops": $2 a day, $16 on 10 and 20 November."""
    rows: list[Row] = [(day, "alpha", "gpt-4o", 8.0, 80) for day in NOVEMBER]
    rows += [
        (day, "beta|ops", "gpt-4o-mini", 16.0 if day.day in (10, 20) else 2.0, 20)
        for day in NOVEMBER
    ]
    return rows


def store(path: Path, rows: list[Row], zone: ZoneInfo = UTC_ZONE) -> None:
    daily = frame(rows)
    with SqliteState.open(path) as state:
        for day in sorted({row[0] for row in rows}):
            part = daily.filter(daily["day"] == day).drop("day")
            state.put_day(zone.key, day, part, exported_at=NOW, settled=True)


@pytest.fixture
def known(tmp_path: Path) -> Path:
    store(tmp_path / "state.db", known_rows())
    # No API is needed: every day the replay reads is stored (the URL answers nothing).
    return write(tmp_path, "http://127.0.0.1:9", KNOWN)


def test_a_known_history_gives_exactly_its_alerts_with_dates_channels_and_totals(
    known: Path,
) -> None:
    code, text = backtest(known, "--from", "2026-11-01", "--to", "2026-11-30", "--format", "json")
    assert code == 1
    result = json.loads(text)
    # Each day's last cycle is 18:00 UTC: three quarters of the day are in (pro rata).
    got = [
        (a["day"], a["at"], a["budget"], a["api_key_name"], f"{a['threshold']:g}", a["channel"])
        for a in result["alerts"]
    ]
    assert got == [
        ("2026-11-07", "2026-11-07T18:00:00+00:00", "alpha-month", "alpha", "50", "#ai-spend"),
        ("2026-11-10", "2026-11-10T18:00:00+00:00", "beta-day", "beta|ops", "100", "#costs"),
        ("2026-11-11", "2026-11-11T18:00:00+00:00", "alpha-month", "alpha", "80", "#ai-spend"),
        ("2026-11-13", "2026-11-13T18:00:00+00:00", "alpha-month", "alpha", "100", "#ai-spend"),
        ("2026-11-20", "2026-11-20T18:00:00+00:00", "beta-day", "beta|ops", "100", "#costs"),
    ]
    # alpha at 18:00 on day d: 8 (d - 1) + 6; beta: 16 x 3/4
    assert [a["used"] for a in result["alerts"]] == [54.0, 12.0, 86.0, 102.0, 12.0]
    assert {a["kind"] for a in result["alerts"]} == {"actual"}
    totals = result["totals"]
    assert totals["alerts"] == 5
    assert totals["by_channel"] == [
        {"channel": "#ai-spend", "alerts": 3},
        {"channel": "#costs", "alerts": 2},
    ]
    assert totals["by_budget"] == [
        {"budget": "alpha-month", "alerts": 3},
        {"budget": "beta-day", "alerts": 2},
    ]
    assert totals["first_100"] == {
        "at": "2026-11-10T18:00:00+00:00",
        "day": "2026-11-10",
        "budget": "beta-day",
    }
    assert (result["points"], result["at"], result["timezone"]) == (30, "day-end", "UTC")
    assert result["history"] == {"stored_days": 30, "exported_days": 0}
    assert result["findings"] == []
    assert result["silenced"] == []


def test_with_the_history_off_the_periods_are_summed_whole_and_fire_alike(
    tmp_path: Path,
) -> None:
    """`history.enabled: false`: the cycle exports each period whole; the replay's held days
    answer those ranges too (the forecasts are off here, so nothing else differs)."""
    store(tmp_path / "state.db", known_rows())
    path = write(tmp_path, "http://127.0.0.1:9", KNOWN + "history: {enabled: false}\n")
    code, text = backtest(path, "--from", "2026-11-01", "--to", "2026-11-30", "--format", "json")
    assert code == 1
    alerts = json.loads(text)["alerts"]
    assert [(a["day"], a["budget"], a["used"]) for a in alerts] == [
        ("2026-11-07", "alpha-month", 54.0),
        ("2026-11-10", "beta-day", 12.0),
        ("2026-11-11", "alpha-month", 86.0),
        ("2026-11-13", "alpha-month", 102.0),
        ("2026-11-20", "beta-day", 12.0),
    ]


def test_the_table_and_markdown_say_the_same_with_the_totals_in_a_sentence(known: Path) -> None:
    span = ("--from", "2026-11-01", "--to", "2026-11-30")
    code, table = backtest(known, *span)
    assert code == 1
    headline = (
        "This file would have sent 5 alerts from 2026-11-01 to 2026-11-30, 3 of them to"
        " #ai-spend; the first 100% on 2026-11-10."
    )
    assert headline in table.splitlines()
    assert "Per channel: #ai-spend 3, #costs 2" in table
    (row,) = [line for line in table.splitlines() if line.startswith("2026-11-13 18:00")]
    assert row.split() == [
        *("2026-11-13", "18:00", "alpha-month", "alpha", "-", "cost_usd", "100%"),
        *("$102.00", "/", "$100.00", "(102%)", "#ai-spend"),
    ]
    assert "share of the day gone by" in table  # said in words for people
    code, markdown = backtest(known, *span, "--format", "markdown")
    assert code == 1
    assert f"**{headline}**" in markdown
    assert "| 2026-11-10 18:00 | beta-day | beta\\|ops |" in markdown  # the pipe escaped
    assert markdown.count("\n| 2026-11-") == 5


def test_hourly_points_see_the_day_so_far_and_fire_at_the_hour(known: Path) -> None:
    code, text = backtest(
        known, "--from", "2026-11-10", "--to", "2026-11-10", "--at", "hourly", "--format", "json"
    )
    assert code == 1
    result = json.loads(text)
    assert result["points"] == 24
    # beta: $16 pro rata reaches $10 at 15:00 (10/16 of the day); alpha's month stays < 80 %
    (alert,) = [a for a in result["alerts"] if a["budget"] == "beta-day"]
    assert alert["at"] == "2026-11-10T15:00:00+00:00"
    assert alert["used"] == pytest.approx(10.0)


def test_nothing_firing_exits_0_and_says_so(tmp_path: Path) -> None:
    store(tmp_path / "state.db", known_rows())
    path = write(tmp_path, "http://127.0.0.1:9", KNOWN.replace("{cost_usd: 10", "{cost_usd: 1000"))
    path.write_text(path.read_text().replace("{cost_usd: 100}", "{cost_usd: 100000}"))
    code, table = backtest(path, "--from", "2026-11-01", "--to", "2026-11-30")
    assert code == 0
    assert "This file would have sent no budget alert from 2026-11-01 to 2026-11-30." in table


def test_a_silence_holds_alerts_until_it_ends_and_then_the_level_reached_fires(
    tmp_path: Path,
) -> None:
    store(tmp_path / "state.db", known_rows())
    silence = """silences:
  - budget: alpha-month
    keys: alpha
    until: 2026-11-12T00:00:00+00:00
    reason: approved overspend
"""
    path = write(tmp_path, "http://127.0.0.1:9", KNOWN + silence)
    code, text = backtest(path, "--from", "2026-11-01", "--to", "2026-11-30", "--format", "json")
    assert code == 1
    result = json.loads(text)
    alpha = [(a["day"], a["threshold"]) for a in result["alerts"] if a["budget"] == "alpha-month"]
    # held (not recorded) from the 7th to the 11th; on the 12th 80 % is due, 50 % inhibited
    assert alpha == [("2026-11-12", 80.0), ("2026-11-13", 100.0)]
    held = [(s["day"], s["threshold"], s["silenced_by"]) for s in result["silenced"]]
    assert held == [
        *((f"2026-11-{day:02d}", 50.0, "approved overspend") for day in range(7, 11)),
        ("2026-11-11", 80.0, "approved overspend"),
    ]
    _, table = backtest(path, "--from", "2026-11-01", "--to", "2026-11-30")
    assert "Held by silences: 5 alerts" in table


def test_limits_the_history_cannot_evaluate_are_said_and_alone_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store(tmp_path / "state.db", known_rows())  # no day reports tokens
    tokens = '  - {name: tokens, keys: "*", limits: {tokens: 1000}}\n'
    both = write(tmp_path, "http://127.0.0.1:9", KNOWN + tokens, name="both.yaml")
    code, _ = backtest(both, "--from", "2026-11-01", "--to", "2026-11-30")
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("budget 'tokens': its tokens limit is not evaluated") == 1
    alone = KNOWN[: KNOWN.index("budgets:")] + "budgets:\n" + tokens
    only = write(tmp_path, "http://127.0.0.1:9", alone, name="only.yaml")
    code, out = backtest(only, "--from", "2026-11-01", "--to", "2026-11-30")
    assert (code, out) == (2, "")
    assert "nothing was evaluated" in capsys.readouterr().err


# -- the same code decides both -----------------------------------------------------------------

EQUIVALENCE = """\
schedule: {timezone: Europe/Berlin, cron: "0 0 * * *"}
slack: {token: xoxb-test-token, channel: "#ai-spend"}
defaults: {forecast: {method: trailing, min_spend_usd: 0}}
budgets:
  - name: per-key
    keys: "*"
    limits: {cost_usd: 250}
  - name: pool-week
    keys: "*"
    scope: shared
    period: week
    channel: "#pool"
    thresholds: [80, 100]
    repeat: 24h
    limits: {cost_usd: 150}
"""


def live_cycles(sim: Simulator, path: Path, config: Config, points: list[datetime]) -> list[Any]:
    """The daemon's cycle at each point over a state the keeper filled with the simulator's
    days: what each queued, as the backtest's JSON says it."""
    fired: list[Any] = []
    with (
        httpx.Client(timeout=10) as http,
        SqliteState.open(path) as state,
    ):
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        for day in history.closed_days(date(2026, 9, 1), date(2026, 11, 26)):
            fetched = fetch.fetch_day(client, BERLIN, day)
            state.put_day(BERLIN.key, day, fetched.usage.frame, exported_at=NOW, settled=True)
        for now in points:
            outcome = cycle.run_once(cycle.Deps(config, client=client, state=state), now)
            assert outcome.ok, outcome.error
            ids = set(outcome.outbox_ids)
            for item in sorted((i for i in state.pending() if i.id in ids), key=lambda i: i.id):
                fired.append((now.isoformat(), item.kind, item.channel, item.payload))
            state.mark_sent(ids, now)
    return fired


ALERT_FIELDS = (
    *("budget", "api_key_id", "model", "metric", "kind", "threshold", "repeat"),
    *("used", "limit", "projected", "forecast_method", "period", "previous_used"),
)


def rounded(value: Any) -> Any:
    """`value` with every float to 12 significant digits: the state's and the scratch store's
    SQL may add a key's rows in another order (their keys and models are interned in the order
    first seen), which moves the last bit of a sum; nothing else may differ."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


def as_alert(at: str, channel: str | None, alert: dict[str, Any]) -> tuple[Any, ...]:
    return (at, channel, *(rounded(alert[name]) for name in ALERT_FIELDS))


def test_the_backtest_gives_exactly_what_the_daemons_cycle_gives_over_the_same_days(
    tmp_path: Path, sim: Simulator
) -> None:
    path = write(tmp_path, sim.base_url, EQUIVALENCE)
    config = load_config(path)
    first, last = date(2026, 10, 20), date(2026, 11, 25)  # a month's end and a DST change
    points = [
        datetime.combine(first + timedelta(days=n), datetime.min.time(), BERLIN).astimezone(UTC)
        for n in range((last - first).days + 1)
    ]
    live = live_cycles(sim, tmp_path / "live.db", config, points)
    code, text = backtest(path, "--from", str(first), "--to", str(last), "--format", "json")
    result = json.loads(text)
    live_alerts = [
        as_alert(at, ch, json.loads(json.dumps(p))) for at, kind, ch, p in live if kind == "alert"
    ]
    replayed = [as_alert(a["at"], a["channel"], a) for a in result["alerts"]]
    assert replayed == live_alerts
    live_findings = [
        (at, kind, ch, json.loads(json.dumps(p))) for at, kind, ch, p in live if kind != "alert"
    ]
    replayed_findings = [
        (f["at"], f["kind"], f["channel"], f["finding"]) for f in result["findings"]
    ]
    assert replayed_findings == live_findings
    # The series is worth comparing: thresholds, forecasts and repeats, to two channels.
    kinds = {(a[2], a[6], a[8]) for a in replayed}
    assert {("per-key", "actual", False), ("per-key", "forecast", False)} <= kinds
    assert ("pool-week", "actual", True) in kinds
    assert {a[1] for a in replayed} == {"#ai-spend", "#pool"}
    assert code == 1


# -- the state is only read ---------------------------------------------------------------------


def files(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.parent.glob(path.name + "*"))}


def test_missing_days_come_from_the_api_and_nothing_is_written(
    tmp_path: Path,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, sim.base_url, EQUIVALENCE)
    config = load_config(path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # All from the API first (no state file at all: none is created) ...
    span = ("--from", "2026-11-05", "--to", "2026-11-15", "--format", "json")
    code, text = backtest(path, *span)
    assert code == 1
    everything = json.loads(text)
    assert not config.state.path.exists()
    needed = everything["history"]["exported_days"]
    assert everything["history"]["stored_days"] == 0
    assert needed == len(exports(sim))
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert len(progress) == needed
    assert progress[-1].startswith(f"[{needed}/{needed}] 2026-11-15 (Europe/Berlin): ")
    # ... then with part of it stored: only the rest is exported, and the file is unchanged.
    with httpx.Client(timeout=10) as http:
        client = LangdockClient(
            http, base_url=sim.base_url, api_key=KEY, allow_insecure_download=True
        )
        with SqliteState.open(config.state.path) as state:
            for day in history.closed_days(date(2026, 10, 20), date(2026, 11, 12)):  # to the 11th
                fetched = fetch.fetch_day(client, BERLIN, day)
                state.put_day(BERLIN.key, day, fetched.usage.frame, exported_at=NOW, settled=True)
    before_files = files(config.state.path)
    before_exports = len(exports(sim))
    code, text = backtest(path, *span)
    assert code == 1
    partly = json.loads(text)
    assert files(config.state.path) == before_files
    stored = partly["history"]["stored_days"]
    assert stored == (date(2026, 11, 11) - date(2026, 10, 20)).days + 1
    assert partly["history"]["exported_days"] == needed - stored
    assert len(exports(sim)) - before_exports == needed - stored
    assert rounded(partly["alerts"]) == rounded(everything["alerts"])  # wherever the days were
    assert list(scratch.iterdir()) == []  # the scratch store is gone


def test_a_postgresql_state_is_read_and_left_as_it_was(tmp_path: Path) -> None:
    daily = frame(known_rows())
    with pgserver.database() as url:
        with PostgresState.open(url, where="test database") as state:
            for day in NOVEMBER:
                part = daily.filter(daily["day"] == day).drop("day")
                state.put_day("UTC", day, part, exported_at=NOW, settled=True)
        path = write(tmp_path, "http://127.0.0.1:9", KNOWN)
        path.write_text(path.read_text().replace(f"path: {tmp_path / 'state.db'}", f"url: {url}"))
        tables = ("ledger", "outbox", "usage_day", "usage_daily")
        before = pg_counts(url, tables)
        code, text = backtest(
            path, "--from", "2026-11-01", "--to", "2026-11-30", "--format", "json"
        )
        assert code == 1
        result = json.loads(text)
        assert result["history"] == {"stored_days": 30, "exported_days": 0}
        assert [a["day"] for a in result["alerts"]] == [
            *("2026-11-07", "2026-11-10", "2026-11-11", "2026-11-13", "2026-11-20")
        ]
        assert pg_counts(url, tables) == before
        assert before["ledger"] == before["outbox"] == 0
        assert not (tmp_path / "state.db").exists()


def pg_counts(url: str, tables: tuple[str, ...]) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as db:
        counts = {}
        for table in tables:
            row = db.execute(f"SELECT count(*) FROM costwatch.{table}").fetchone()  # noqa: S608
            assert row is not None
            counts[table] = int(row[0])
        return counts


def exports(sim: Simulator) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in sim.requests if r.path.endswith("/export/api-keys")]


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--from", "2026-11-31", "--to", "2026-12-01"),
            "not a date: '2026-11-31' (give YYYY-MM-DD",
        ),
        (("--from", "yesterday", "--to", "2026-12-01"), "not a date: 'yesterday'"),
    ],
)
def test_a_bad_date_is_refused_by_name(
    known: Path, args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["backtest", "--config", str(known), *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2026-11-10", "2026-11-01", "--from 2026-11-10 is after --to 2026-11-01"),
        (
            "2026-11-10",
            "2026-12-05",
            "--to 2026-12-05 is in the future (today is 2026-12-02 in UTC)",
        ),
        ("2026-11-10", "2026-12-02", "--to 2026-12-02 is today, which is not over in UTC"),
        (
            "2025-06-01",
            "2025-06-30",
            "the replay needs are not in the state and older than the export API's 12 months",
        ),
    ],
)
def test_a_range_that_cannot_be_replayed_exits_2_saying_why(
    known: Path, first: str, last: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = backtest(known, "--from", first, "--to", last)
    assert (code, out) == (2, "")
    assert message in capsys.readouterr().err


def test_the_command_runs_as_a_process_and_its_exit_code_is_checks(known: Path) -> None:
    """`python -m costwatch backtest` itself, with the real clock (the range is in the past)."""
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "costwatch", "backtest", "--config", str(known)),
            *("--from", "2026-11-01", "--to", "2026-11-30", "--format", "json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 1, completed.stderr
    assert json.loads(completed.stdout)["totals"]["alerts"] == 5


def test_scheduled_reports_are_listed_by_their_name_and_period(tmp_path: Path) -> None:
    """A weekly report due Mondays 09:00 is sent at the first cycle after (every 6 h: 12:00),
    once per week of the replay, named as configured."""
    store(tmp_path / "state.db", known_rows())
    weekly = 'reports:\n  - {name: weekly, every: week, at: "Mon 09:00"}\n'
    path = write(tmp_path, "http://127.0.0.1:9", KNOWN + weekly)
    code, table = backtest(path, "--from", "2026-11-01", "--to", "2026-11-30", "--at", "cycles")
    assert code == 1
    rows = [line.split() for line in table.splitlines() if "report (week)" in line]
    assert rows == [
        [monday, "12:00", "report", "(week)", "weekly", "#costs"]
        for monday in ("2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30")
    ]
