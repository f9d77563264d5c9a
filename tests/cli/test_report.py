"""The check table stays readable at 2,000 keys; names are data, never layout."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from costwatch import fmt, periods
from costwatch.alerts import Alert
from costwatch.budgets import FINDING_SCHEMA
from costwatch.cli import output
from costwatch.cli import table as check_table

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
PERIOD = periods.current("month", ZoneInfo("Europe/Berlin"), NOW)


def make_report(
    names: list[str], costs: list[float], *, all_keys: bool = False
) -> output.UsageReport:
    ids = [f"key_{i:05d}" for i in range(len(names))]
    per_key = pl.DataFrame(
        {
            "api_key_id": ids,
            "api_key_name": names,
            "requests": [int(c * 10) for c in costs],
            "total_cost_usd": costs,
        }
    ).sort("total_cost_usd", descending=True)
    top = pl.DataFrame(
        {
            "api_key_id": ids + ids,
            "model": ["gpt-4o"] * len(ids) + ["gpt-4o-mini"] * len(ids),
            "total_cost_usd": [c * 0.9 for c in costs] + [c * 0.1 for c in costs],
            "requests": [1] * (2 * len(ids)),
        }
    )
    return output.UsageReport(
        period=PERIOD, now=NOW, source="test", per_key=per_key, top_models=top, all_keys=all_keys
    )


def test_table_with_all_at_2000_keys_has_one_line_per_key_bounded_width_and_a_totals_row() -> None:
    names = [f"service-{i}-" + "x" * (i % 80) for i in range(2000)]
    costs = [float((i * 7919) % 5000) / 3 for i in range(2000)]
    text = check_table.render_table(make_report(names, costs, all_keys=True))
    lines = text.splitlines()
    table = lines[lines.index("") + 1 :]
    assert len(table) == 1 + 2000 + 1  # header, keys, total
    assert max(len(line) for line in table) <= 200
    assert table[-1].split()[:3] == ["TOTAL", "(2,000", "keys)"]
    assert fmt.money(sum(costs)) in table[-1]
    # Columns line up: every row's spend ends at the same column as the header's SPEND.
    spend_end = table[0].index("SPEND") + len("SPEND")
    assert all(line[spend_end - 1].isdigit() for line in table[1:-1])


def test_long_names_are_cut_with_an_ellipsis() -> None:
    text = check_table.render_table(make_report(["a" * 100, "short"], [2.0, 1.0]))
    assert "a" * (output.NAME_WIDTH - 1) + "…" in text
    assert "a" * output.NAME_WIDTH not in text


def test_control_characters_in_names_cannot_break_lines() -> None:
    text = check_table.render_table(
        make_report(["evil\nTOTAL (0 keys)\r\x1b[2J", "ok"], [2.0, 1.0])
    )
    rows = text.splitlines()
    assert sum(1 for line in rows if "TOTAL" in line) == 2  # the real one, and the name's text
    assert "\x1b" not in text
    assert rows[-1].lstrip().startswith("TOTAL (2 keys)")


def test_empty_usage_says_no_usage() -> None:
    text = check_table.render_table(make_report([], []))
    assert "No usage in this period." in text


def test_json_keeps_names_verbatim_and_top_models_by_spend() -> None:
    document = json.loads(output.render_json(make_report(["<!channel> *urgent*"], [10.0])))
    (key,) = document["keys"]
    assert key["api_key_name"] == "<!channel> *urgent*"
    assert [m["model"] for m in key["top_models"]] == ["gpt-4o", "gpt-4o-mini"]
    assert document["period"]["timezone"] == "Europe/Berlin"


def test_people_formats() -> None:
    assert fmt.money(1234.5) == "$1,234.50"
    assert fmt.money(19600) == "$19,600"
    assert fmt.percent(0.823) == "82%"
    assert fmt.percent(0.035) == "3.5%"
    assert fmt.count(1234567) == "1,234,567"
    assert fmt.day(datetime(2026, 11, 30, tzinfo=UTC)) == "Nov 30"
    assert fmt.cut("abcdef", 4) == "abc…"


def money_in(line: str) -> float:
    return float(line.split("$")[1].split(maxsplit=1)[0].replace(",", ""))


@pytest.mark.parametrize("keys", [1, output.TOP_KEYS, output.TOP_KEYS + 1, 20_000])
def test_the_table_lists_the_top_spenders_then_the_rest_in_one_line_then_the_totals(
    keys: int,
) -> None:
    costs = [float((i * 7919) % 5000) / 4 + 0.25 for i in range(keys)]  # whole cents
    text = check_table.render_table(make_report([f"key-{i}" for i in range(keys)], costs))
    table = text.splitlines()[text.splitlines().index("") + 1 :]
    shown = min(keys, output.TOP_KEYS)
    rows, rest = table[1 : 1 + shown], table[1 + shown : -1]
    assert [money_in(row) for row in rows] == sorted(costs, reverse=True)[:shown]
    assert table[-1].split()[:2] == ["TOTAL", f"({keys:,}"]
    assert fmt.money(sum(costs)) in table[-1]
    if keys == shown:
        assert rest == []
        return
    (more,) = rest
    assert f"... {keys - shown:,} more key" in more
    assert "(--all lists every key)" in more
    assert fmt.money(sum(sorted(costs)[: keys - shown])) in more


def alert(budget: str, **changes: Any) -> Alert:
    values: dict[str, Any] = {
        "budget": budget, "scope": "key", "api_key_id": "key_1", "api_key_name": "bot",
        "model": None, "metric": "cost_usd", "threshold": 80.0, "kind": "actual",
        "severity": "warning", "used": 85.0, "limit": 100.0, "ratio": 0.85, "projected": None,
        "forecast_ratio": None, "overrun_at": None, "period": "month:2026-11-01@Europe/Berlin",
        "channel": None, "mention": (),
    }  # fmt: skip
    return Alert(**{**values, **changes})


def section(text: str, head: str) -> list[str]:
    """The indented lines under the line starting with `head`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(head)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def findings_report(**fields: Any) -> output.UsageReport:
    base = make_report(["bot"], [85.0])
    return dataclasses.replace(base, findings=pl.DataFrame(schema=FINDING_SCHEMA), **fields)


def test_alert_lines_name_their_budget_so_five_budgets_on_one_key_read_apart() -> None:
    five = [alert(f"budget-{i}") for i in range(5)]
    pool = alert("workspace", scope="shared", api_key_id=None, api_key_name=None, model="claude-*")
    text = check_table.render_table(findings_report(alerts=(*five, pool), default_channel="#ai"))
    lines = section(text, "Alerts planned in this run: 6")
    assert len(set(lines)) == 6
    assert lines[0] == (
        "  -> #ai  bot (budget budget-0): cost $85.00 of $100.00 (85%), 80% reached [warning]"
    )
    assert lines[5].startswith("  -> #ai  pool workspace on claude-*: cost $85.00")


def test_long_alert_silence_and_outbox_lists_are_capped_unless_all() -> None:
    many = tuple(alert(f"b{i}") for i in range(output.MAX_FINDING_ROWS + 7))
    until = datetime(2026, 12, 1, tzinfo=UTC)
    quiet = tuple(
        dataclasses.replace(a, silenced_by="backfill", silenced_until=until) for a in many
    )
    waiting = tuple(output.Pending(i, "alert", "#x", f"row {i}", 2, "http_503") for i in range(60))
    fields = {"alerts": many, "silenced": quiet, "pending": waiting}
    text = check_table.render_table(findings_report(**fields))
    for head, total in (("Alerts planned", 57), ("Silenced:", 57), ("Waiting in", 60)):
        lines = section(text, head)
        assert len(lines) == output.MAX_FINDING_ROWS + 1
        assert lines[-1] == f"  ... and {total - 50} more (--all or --format json lists all)"
    assert "(silenced until 2026-12-01T00:00:00+00:00: backfill)" in text
    assert "(2 attempts, last error: http_503)" in text
    everything = check_table.render_table(findings_report(**fields, all_keys=True))
    assert len(section(everything, "Silenced:")) == 57
    document = json.loads(output.render_json(findings_report(**fields)))
    assert len(document["alerts"]) == len(document["silenced"]) == 57
    assert document["pending"][0] == {
        "id": 0, "kind": "alert", "channel": "#x", "summary": "row 0", "attempts": 2,
        "last_error": "http_503",
    }  # fmt: skip


def test_the_table_says_how_its_forecasts_were_made_and_forecast_alerts_name_the_method() -> None:
    def finding(key: str, method: str | None) -> dict[str, Any]:
        return {
            "budget": "b", "scope": "key", "api_key_id": key, "api_key_name": key,
            "model": None, "metric": "cost_usd", "used": 85.0, "limit": 100.0, "ratio": 0.85,
            "level": 80.0, "projected": 120.0, "forecast_ratio": 1.2, "forecast_due": True,
            "overrun_at": None, "forecast_method": method, "period": PERIOD.key(),
        }  # fmt: skip

    def rendered(*methods: str | None, **fields: Any) -> list[str]:
        rows = [finding(f"k{i}", method) for i, method in enumerate(methods)]
        frame = pl.DataFrame(rows, schema=FINDING_SCHEMA)
        report = dataclasses.replace(findings_report(**fields), findings=frame)
        return check_table.render_table(report).splitlines()

    same = rendered("trailing 14-day rate", "trailing 14-day rate")
    assert "Forecast: trailing 14-day rate" in same
    mixed = rendered("weekday/weekend rates", "trailing 9-day rate", "weekday/weekend rates", None)
    assert "Forecasts: weekday/weekend rates (2), trailing 9-day rate (1)" in mixed
    assert not [line for line in rendered(None) if line.startswith("Forecast")]
    due = alert("b", kind="forecast", threshold=100.0, forecast_method="weekday/weekend rates")
    (line,) = section("\n".join(rendered(alerts=(due,))), "Alerts planned in this run: 1")
    assert line.endswith("forecast to overrun (weekday/weekend rates) [warning]")
