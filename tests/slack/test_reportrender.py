"""Spend reports as Slack messages: each case reads as its reviewed snapshot, keeps names from
the export inert, fits Slack's limits, and reads back from the outbox as it was written.

Snapshots live in tests/slack/snapshots/report_*.json (blocks, fallback text, how the message
reads); review them by eye when they change.
`COSTWATCH_UPDATE_SNAPSHOTS=1 pytest tests/slack/test_reportrender.py` rewrites them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slacksnapshots import assert_matches_snapshot, assert_valid_for_slack

from costwatch import notices
from costwatch.cli.output import notice_summary
from costwatch.detect import Anomaly, KeyEvent, UnitCost
from costwatch.reports import AtRisk, Line, Report, Span
from costwatch.slack import blocks as slackblocks
from costwatch.slack.render import Rendered, as_terminal_text, render

AT = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
TEAM = "<!subteam^S0123ABCD>"
INJECTIONS = (
    "<!channel> *urgent*",
    "<@U123>",
    "<https://evil.example|click>",
    "<!here|here> _x_ ~y~ `z` ```w```",
    "a & b &amp; <c>",
    "line one\nline two\r\u2028three",
)
WEEK = Span("week", "Europe/Berlin", date(2026, 11, 23), date(2026, 11, 29))
ANOMALY = Anomaly(
    kind="anomaly",
    day=date(2026, 11, 26),
    metric="cost_usd",
    api_key_id="key_7f3a",
    api_key_name="support-bot-prod",
    model=None,
    value=200.0,
    normal=10.0,
    ratio=20.0,
    level=30.0,
    basis="same weekday",
    baseline_days=5,
    since=date(2026, 11, 26),
    driver_model="gpt-4o",
    driver_share=0.97,
)
REPORT = Report(
    name="weekly",
    span=WEEK,
    cost_usd=1_234.5,
    requests=45_210,
    previous=WEEK.previous(),
    previous_cost_usd=1_000.0,
    previous_requests=40_000,
    keys=14,
    models=5,
    top_keys=(
        Line("support-bot-prod", "key_7f3a", 800.0, 30_000, 600.0),
        Line("data-pipeline", "key_11aa", 300.0, 10_000, 350.0),
        Line("new-agent", "key_22bb", 100.0, 5_000, 0.0),
    ),
    top_models=(
        Line("gpt-4o", "gpt-4o", 1_000.0, 20_000, 800.0),
        Line("claude-sonnet-4", "claude-sonnet-4", 234.5, 25_210, 200.0),
    ),
    at_risk=(
        AtRisk(
            "support-bot",
            "key_7f3a",
            "support-bot-prod",
            None,
            "cost_usd",
            1_640.0,
            1_500.0,
            1.093,
            100.0,
            1_900.0,
            1.267,
            "month:2026-11-01@Europe/Berlin",
        ),
        AtRisk(
            "workspace",
            None,
            None,
            None,
            "cost_usd",
            12_000.0,
            20_000.0,
            0.6,
            None,
            21_000.0,
            1.05,
            "month:2026-11-01@Europe/Berlin",
        ),
    ),
    findings=(
        ANOMALY,
        UnitCost(
            day=date(2026, 11, 27),
            model="gpt-4o",
            change="drift",
            basis="per request",
            requests=5_000,
            cost_usd=150.0,
            rate=0.03,
            normal=0.01,
            ratio=3.0,
            baseline_days=28,
            zero_cost_requests=0,
            zero_cost_keys=0,
        ),
        KeyEvent(
            kind="new_key",
            day=date(2026, 11, 28),
            api_key_id="key_22bb",
            api_key_name="new-agent",
            cost_usd=40.0,
            requests=2_000,
        ),
    ),
    findings_count=3,
    at=AT,
    channel="#ai-spend",
    mention=(TEAM,),
)
CASES: dict[str, Report] = {
    "weekly": REPORT,
    "monthly_without_comparison": dataclasses.replace(
        REPORT,
        name="monthly",
        span=Span("month", "Europe/Berlin", date(2026, 11, 1), date(2026, 11, 30)),
        previous=Span("month", "Europe/Berlin", date(2026, 10, 1), date(2026, 10, 31)),
        previous_cost_usd=None,
        previous_requests=None,
        top_keys=tuple(dataclasses.replace(k, previous_cost_usd=None) for k in REPORT.top_keys),
        top_models=tuple(dataclasses.replace(m, previous_cost_usd=None) for m in REPORT.top_models),
        at_risk=(),
        findings=(),
        findings_count=0,
        mention=(),
    ),
    "so_far_on_demand": dataclasses.replace(
        REPORT,
        name="",
        span=Span("week", "Europe/Berlin", date(2026, 11, 30), date(2026, 12, 1), whole=False),
        previous=Span("week", "Europe/Berlin", date(2026, 11, 23), date(2026, 11, 24), whole=False),
        previous_cost_usd=0.0,
        findings=(ANOMALY,),
        findings_count=31,
        mention=(),
    ),
}
RENDERED = {name: render(report, now=AT) for name, report in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_report_renders_exactly_as_its_reviewed_snapshot(name: str) -> None:
    assert_matches_snapshot(f"report_{name}.json", RENDERED[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_report_is_within_slack_limits_and_valid_for_slack_sdk(name: str) -> None:
    rendered = RENDERED[name]
    assert_valid_for_slack(rendered)


def test_the_header_says_the_spend_and_its_change_in_one_line() -> None:
    def header(name: str) -> str:
        return str(RENDERED[name].blocks[0]["text"]["text"])

    assert header("weekly") == ":bar_chart: Weekly spend: $1,234, +23% on the week before"
    assert header("monthly_without_comparison") == ":bar_chart: Monthly spend: $1,234"
    assert header("so_far_on_demand") == (
        ":bar_chart: Weekly spend: $1,234, +$1,234.50 on the same days before"
    )


def all_text(rendered: Rendered) -> str:
    return json.dumps(rendered.blocks, ensure_ascii=False) + rendered.text


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(INJECTIONS) | st.text(max_size=300),
    model=st.sampled_from(INJECTIONS) | st.text(max_size=300),
)
def test_names_from_the_export_stay_inert_and_within_limits(name: str, model: str) -> None:
    changed = dataclasses.replace(
        REPORT,
        name=name,
        top_keys=tuple(dataclasses.replace(k, name=name) for k in REPORT.top_keys * 10),
        top_models=tuple(dataclasses.replace(m, name=model) for m in REPORT.top_models * 25),
        at_risk=tuple(
            dataclasses.replace(r, budget=name, api_key_name=name, model=model)
            for r in REPORT.at_risk * 10
        ),
        findings=(dataclasses.replace(ANOMALY, api_key_name=name, model=model),) * 20,
    )
    rendered = render(changed, now=AT)
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    text = all_text(rendered)
    for live in ("<!channel>", "<@U123>", "<https://evil", "<!here"):
        assert live not in text


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_report_reads_back_from_the_outbox_as_it_was_written_and_renders_so(name: str) -> None:
    report = CASES[name]
    assert notices.kind(report) == "report"
    stored = json.loads(json.dumps(notices.payload(report)))
    back = notices.read("report", stored, written_at=AT)
    assert back == report
    assert render(back, now=AT) == RENDERED[name]


def test_an_outbox_row_of_a_report_without_its_fields_is_refused() -> None:
    stored = notices.payload(REPORT)
    del stored["span"]
    with pytest.raises(ValueError, match="report notice without its fields"):
        notices.read("report", stored, written_at=AT)


def test_check_lists_a_waiting_report_in_one_line() -> None:
    assert notice_summary(REPORT) == "weekly: week:2026-11-23@Europe/Berlin, $1,234.50 [report]"


def test_the_docs_page_shows_the_current_rendering_of_the_weekly_report() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "slack-message.md").read_text()
    assert as_terminal_text(RENDERED["weekly"]) in page
    assert RENDERED["weekly"].text in page
