"""The check table stays readable at 2,000 keys; names are data, never layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import polars as pl

from costwatch import fmt, periods, report

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
PERIOD = periods.current("month", ZoneInfo("Europe/Berlin"), NOW)


def make_report(names: list[str], costs: list[float]) -> report.UsageReport:
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
    return report.UsageReport(
        period=PERIOD, now=NOW, source="test", per_key=per_key, top_models=top
    )


def test_table_at_2000_keys_has_one_line_per_key_bounded_width_and_a_totals_row() -> None:
    names = [f"service-{i}-" + "x" * (i % 80) for i in range(2000)]
    costs = [float((i * 7919) % 5000) / 3 for i in range(2000)]
    text = report.render_table(make_report(names, costs))
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
    text = report.render_table(make_report(["a" * 100, "short"], [2.0, 1.0]))
    assert "a" * (report.NAME_WIDTH - 1) + "…" in text
    assert "a" * report.NAME_WIDTH not in text


def test_control_characters_in_names_cannot_break_lines() -> None:
    text = report.render_table(make_report(["evil\nTOTAL (0 keys)\r\x1b[2J", "ok"], [2.0, 1.0]))
    rows = text.splitlines()
    assert sum(1 for line in rows if "TOTAL" in line) == 2  # the real one, and the name's text
    assert "\x1b" not in text
    assert rows[-1].lstrip().startswith("TOTAL (2 keys)")


def test_empty_usage_says_no_usage() -> None:
    text = report.render_table(make_report([], []))
    assert "No usage in this period." in text


def test_json_keeps_names_verbatim_and_top_models_by_spend() -> None:
    document = json.loads(report.render_json(make_report(["<!channel> *urgent*"], [10.0])))
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
