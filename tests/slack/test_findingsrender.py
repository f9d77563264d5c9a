"""The detectors' findings as Slack messages: each kind reads as its reviewed snapshot, keeps
names from the export inert and fits Slack's limits.

Snapshots live in tests/slack/snapshots/finding_*.json (blocks, fallback text, how the message
reads); review them by eye when they change.
`COSTWATCH_UPDATE_SNAPSHOTS=1 pytest tests/slack/test_findingsrender.py` rewrites them.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slacksnapshots import assert_matches_snapshot, assert_valid_for_slack

from costwatch import notices
from costwatch.cli.output import notice_summary
from costwatch.detect import Anomaly, Finding, KeyEvent, UnitCost
from costwatch.slack import blocks as slackblocks
from costwatch.slack.findings import render_finding
from costwatch.slack.render import Rendered, as_terminal_text, render, render_digest

MONDAY = date(2026, 11, 30)
TEAM = "<!subteam^S0123ABCD>"
INJECTIONS = (
    "<!channel> *urgent*",
    "<@U123>",
    "<https://evil.example|click>",
    "<!here|here> _x_ ~y~ `z` ```w```",
    "a & b &amp; <c>",
    "line one\nline two\r\u2028three",
)

ANOMALY = Anomaly(
    kind="anomaly",
    day=MONDAY,
    metric="cost_usd",
    api_key_id="key_7f3a",
    api_key_name="support-bot-prod",
    model=None,
    value=80.0,
    normal=10.0,
    ratio=8.0,
    level=30.0,
    basis="same weekday",
    baseline_days=4,
    since=date(2026, 11, 28),
    driver_model="gpt-4o",
    driver_share=0.97,
    mention=(TEAM,),
    channel="#support-eng",
)
UNIT = UnitCost(
    day=MONDAY,
    model="gpt-4o",
    change="drift",
    basis="per 1k tokens",
    requests=12_000,
    cost_usd=300.0,
    rate=0.01,
    normal=0.0025,
    ratio=4.0,
    baseline_days=28,
    zero_cost_requests=0,
    zero_cost_keys=0,
)
EVENT = KeyEvent(
    kind="unowned",
    day=MONDAY,
    api_key_id="key_9c1d",
    api_key_name="stray-script",
    cost_usd=42.5,
    requests=3_100,
)
CASES: dict[str, Finding] = {
    "anomaly": ANOMALY,
    "anomaly_model_requests": dataclasses.replace(
        ANOMALY,
        model="gpt-4o",
        metric="requests",
        value=12_000,
        normal=1_000,
        ratio=12.0,
        level=3_000,
        since=MONDAY,
        driver_model=None,
        driver_share=None,
        basis="weekday/weekend",
        baseline_days=20,
    ),
    "anomaly_normally_nothing": dataclasses.replace(
        ANOMALY, normal=0.0, ratio=None, level=5.0, basis="all days", baseline_days=28
    ),
    "spend_rate": dataclasses.replace(
        ANOMALY, kind="spend_rate", hour=10, value=72.0, normal=9.0, since=None, driver_model=None
    ),
    "unit_cost_drift": UNIT,
    "unit_cost_cheaper": dataclasses.replace(
        UNIT, basis="per request", rate=0.002, normal=0.03, ratio=0.0667
    ),
    "unit_cost_zero": dataclasses.replace(
        UNIT,
        change="zero_cost",
        basis="per request",
        cost_usd=0.0,
        rate=0.0,
        normal=0.03,
        ratio=0.0,
        zero_cost_requests=12_000,
        zero_cost_keys=3,
    ),
    "unowned": EVENT,
    "new_key": dataclasses.replace(EVENT, kind="new_key", mention=(TEAM,)),
    "dormant_key": dataclasses.replace(
        EVENT, kind="dormant_key", last_seen=date(2026, 10, 21), idle_days=40
    ),
}
RENDERED = {name: render_finding(finding) for name, finding in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_finding_renders_exactly_as_its_reviewed_snapshot(name: str) -> None:
    assert_matches_snapshot(f"finding_{name}.json", RENDERED[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_finding_is_within_slack_limits_and_valid_for_slack_sdk(name: str) -> None:
    rendered = RENDERED[name]
    assert_valid_for_slack(rendered)
    assert len(rendered.text) <= 500


def test_the_headers_say_how_far_above_normal_in_one_line() -> None:
    def header(name: str) -> str:
        return str(RENDERED[name].blocks[0]["text"]["text"])

    assert header("anomaly") == (
        ":chart_with_upwards_trend: support-bot-prod at 8.0x its normal spend today"
    )
    assert header("spend_rate") == ":stopwatch: support-bot-prod at 8.0x its normal spend by 10:00"
    assert header("anomaly_normally_nothing") == (
        ":chart_with_upwards_trend: support-bot-prod at $80 today, normally nothing"
    )
    assert (
        header("unit_cost_cheaper")
        == ":money_with_wings: gpt-4o costs 15.0x less per request than normal"
    )
    assert header("dormant_key") == ":zzz: stray-script is back after 40 days: $42.50 today"


def all_text(rendered: Rendered) -> str:
    return json.dumps(rendered.blocks, ensure_ascii=False) + rendered.text


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(INJECTIONS) | st.text(max_size=300),
    model=st.sampled_from(INJECTIONS) | st.text(max_size=300),
    case=st.sampled_from(sorted(CASES)),
)
def test_names_from_the_export_stay_inert_and_within_limits(
    name: str, model: str, case: str
) -> None:
    finding = CASES[case]
    if isinstance(finding, UnitCost):
        changed: Finding = dataclasses.replace(finding, model=model)
    elif isinstance(finding, Anomaly):
        changed = dataclasses.replace(finding, api_key_name=name, driver_model=model, model=model)
    else:
        changed = dataclasses.replace(finding, api_key_name=name)
    rendered = render_finding(changed)
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    text = all_text(rendered)
    for live in ("<!channel>", "<@U123>", "<https://evil", "<!here"):
        assert live not in text


# --- through the outbox ----------------------------------------------------------------------


def through_the_outbox(finding: Finding) -> notices.Notice:
    """The finding as delivery reads it: its payload written as JSON and read back."""
    stored = json.loads(json.dumps(notices.payload(finding)))
    return notices.read(
        notices.kind(finding), stored, written_at=datetime(2026, 11, 30, tzinfo=UTC)
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_finding_reads_back_from_the_outbox_as_it_was_written_and_renders_so(name: str) -> None:
    finding = CASES[name]
    assert notices.kind(finding) in notices.FINDING_KINDS
    back = through_the_outbox(finding)
    assert back == finding
    assert render(back, now=datetime(2026, 11, 30, tzinfo=UTC)) == RENDERED[name]


def test_an_outbox_row_of_a_finding_without_its_fields_is_refused() -> None:
    stored = notices.payload(ANOMALY)
    del stored["value"]
    with pytest.raises(ValueError, match="anomaly notice without its fields"):
        notices.read("anomaly", stored, written_at=datetime(2026, 11, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="day is not a day"):
        notices.read("unowned", {**notices.payload(EVENT), "day": 3}, written_at=datetime.now(UTC))


def test_check_lists_a_waiting_finding_in_one_line() -> None:
    lines = {name: notice_summary(finding) for name, finding in CASES.items()}
    assert lines["anomaly"] == "support-bot-prod: cost $80.00, normally $10.00 [anomaly]"
    assert lines["unit_cost_zero"] == "gpt-4o: zero_cost per request [unit_cost]"
    assert lines["dormant_key"] == "stray-script: $42.50 [dormant_key]"


def test_a_digest_that_holds_a_finding_gives_it_its_header_line() -> None:
    digest = render_digest([ANOMALY, EVENT], now=datetime(2026, 11, 30, tzinfo=UTC))
    readable = as_terminal_text(digest)
    assert "support-bot-prod at 8.0x its normal spend today" in readable
    assert "stray-script spent $42.50 today and no budget names it" in readable
