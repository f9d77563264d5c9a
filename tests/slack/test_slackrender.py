"""Slack messages read in five seconds, keep names from the export inert and fit Slack's limits.

Every message is built from an `Alert` whose outbox payload went through JSON and was read
back (`costwatch.notices`), the path delivery uses. Snapshots live in
tests/slack/snapshots/slack_*.json with the blocks, the fallback text and how the message reads
(`reads_as`); review them by eye when they change.
`COSTWATCH_UPDATE_SNAPSHOTS=1 pytest tests/slack/test_slackrender.py` rewrites them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slacksnapshots import assert_matches_snapshot, assert_valid_for_slack

from costwatch import notices
from costwatch.alerts import Alert
from costwatch.notices import Notice
from costwatch.slack import blocks as slackblocks
from costwatch.slack.render import (
    Rendered,
    as_terminal_text,
    escape,
    render,
    render_digest,
    render_test,
)

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
PERIOD = "month:2026-11-01@Europe/Berlin"
TEAM = "<!subteam^S0123ABCD>"
ONCALL = "<@U0456EFGH>"
OWNER = "<!subteam^S0OWNERS|support-team>"
INJECTIONS = (
    "<!channel> *urgent*",
    "<@U123>",
    "<https://evil.example|click>",
    "<!here|here> _x_ ~y~ `z` ```w```",
    "a & b &amp; <c>",
    "line one\nline two\r\u2028three",
)


def make_alert(**changes: Any) -> Alert:
    alert = Alert(
        budget="support-bot",
        scope="key",
        api_key_id="key_7f3a",
        api_key_name="support-bot-prod",
        model=None,
        metric="cost_usd",
        threshold=80,
        kind="actual",
        severity="warning",
        used=1230.0,
        limit=1500.0,
        ratio=0.82,
        projected=1960.4,
        forecast_ratio=1.307,
        overrun_at=datetime(2026, 11, 27, 15, 0, tzinfo=UTC),
        period=PERIOD,
        channel="#support-eng",
        mention=(),
        spend_usd=1230.0,
        requests=48120,
        top_models=(("gpt-4o", 812.0), ("claude-3-5-sonnet", 301.12), ("mistral-large", 40.0)),
        forecast_method="trailing 14-day rate",
    )
    return dataclasses.replace(alert, **changes)


def as_item(alert: Alert) -> Notice:
    """The alert as delivery renders it: through its outbox row's JSON, read back."""
    payload = json.loads(json.dumps(dataclasses.asdict(alert), default=datetime.isoformat))
    return notices.read("alert", payload, written_at=NOW)


def operational_item(kind: str, payload: dict[str, Any] | None = None) -> Notice:
    """An operational outbox row's notice, as delivery reads it."""
    return notices.read(kind, payload or {}, written_at=NOW)


FAILING = {
    "kind": "exports_failing",
    "at": "2026-11-25T09:30:00+00:00",
    "failures": 3,
    "failing_since": "2026-11-25T08:45:00+00:00",
    "last_success": "2026-11-25T08:30:00+00:00",
    "reason": "timeout",
}


def snapshot_cases() -> dict[str, Rendered]:
    base = make_alert(projected=1400.0, forecast_ratio=0.93, overrun_at=None)
    digest_alerts = [
        make_alert(api_key_name="etl-nightly", severity="info", threshold=50, ratio=0.61,
                   used=122.0, limit=200.0, budget="every-key", api_key_id="key_1"),
        make_alert(severity="critical", threshold=100, ratio=1.12, used=1680.0, mention=(TEAM,)),
        make_alert(api_key_name="search-indexer", api_key_id="key_2", budget="every-key",
                   used=171.0, limit=200.0, ratio=0.855, mention=(ONCALL,)),
        make_alert(kind="forecast", threshold=100, api_key_name="chat-web", api_key_id="key_3",
                   budget="every-key", used=120.0, limit=200.0, ratio=0.6, forecast_ratio=1.18),
        make_alert(scope="shared", api_key_id=None, api_key_name=None, budget="workspace",
                   severity="critical", threshold=100, used=20_450.0, limit=20_000.0,
                   ratio=1.0225, mention=(TEAM,)),
        make_alert(model="gpt-4o", severity="critical", threshold=100, used=950.0, limit=900.0,
                   ratio=1.0556),
    ]  # fmt: skip
    return {
        "info_50": render(
            as_item(
                base_info := dataclasses.replace(
                    base,
                    severity="info",
                    threshold=50,
                    used=760.0,
                    ratio=0.5067,
                    projected=1090.0,
                    forecast_ratio=0.727,
                    spend_usd=760.0,
                    requests=30_410,
                    top_models=(("gpt-4o", 512.0), ("claude-3-5-sonnet", 208.4), ("o3-mini", 39.6)),
                    forecast_method="linear since the period's start",
                )
            ),
            now=NOW,
        ),
        "warning_80": render(as_item(base), now=NOW),
        "critical_100": render(
            as_item(
                dataclasses.replace(
                    base,
                    severity="critical",
                    threshold=100,
                    used=1560.0,
                    ratio=1.04,
                    projected=1890.0,
                    forecast_ratio=1.26,
                )
            ),
            now=NOW,
        ),
        "forecast": render(
            as_item(
                make_alert(kind="forecast", threshold=100, forecast_method="weekday/weekend rates")
            ),
            now=NOW,
        ),
        "repeat": render(
            as_item(
                dataclasses.replace(
                    base,
                    severity="critical",
                    threshold=100,
                    used=1680.0,
                    ratio=1.12,
                    repeat=True,
                    previous_used=1560.0,
                    projected=2010.0,
                    forecast_ratio=1.34,
                )
            ),
            now=NOW,
        ),
        "per_model": render(
            as_item(
                dataclasses.replace(
                    base,
                    model="gpt-4o",
                    severity="critical",
                    threshold=100,
                    used=950.0,
                    limit=900.0,
                    ratio=1.0556,
                    projected=1190.0,
                    forecast_ratio=1.32,
                )
            ),
            now=NOW,
        ),
        "shared_pool": render(
            as_item(
                dataclasses.replace(
                    base,
                    scope="shared",
                    budget="data-team",
                    api_key_id=None,
                    api_key_name=None,
                    used=4100.0,
                    limit=5000.0,
                    ratio=0.82,
                    spend_usd=4100.0,
                    requests=190_300,
                    projected=4800.0,
                    forecast_ratio=0.96,
                )
            ),
            now=NOW,
        ),
        "requests_metric": render(
            as_item(
                dataclasses.replace(
                    base_info,
                    metric="requests",
                    used=52_000,
                    limit=100_000,
                    ratio=0.52,
                    projected=93_000,
                    forecast_ratio=0.93,
                    requests=52_000,
                )
            ),
            now=NOW,
        ),
        "with_mentions": render(
            as_item(dataclasses.replace(base, mention=(TEAM, ONCALL))), now=NOW
        ),
        "with_previous_used": render(
            as_item(dataclasses.replace(base, previous_used=920.0)), now=NOW
        ),
        "docs_example": render(as_item(make_alert(mention=(TEAM,), previous_used=920.0)), now=NOW),
        "exports_failing": render(operational_item("exports_failing", FAILING), now=NOW),
        "exports_recovered": render(
            operational_item(
                "exports_recovered", {**FAILING, "kind": "exports_recovered", "failures": 4}
            ),
            now=NOW + timedelta(minutes=15),
        ),
        "digest": render_digest([as_item(a) for a in digest_alerts], now=NOW),
        "owner": render(as_item(dataclasses.replace(base, owner_mention=(OWNER,))), now=NOW),
        "owner_and_mentions": render(
            as_item(dataclasses.replace(base, mention=(TEAM,), owner_mention=(OWNER, TEAM))),
            now=NOW,
        ),
        "owner_digest": render_digest(
            [as_item(dataclasses.replace(a, owner_mention=(OWNER,))) for a in digest_alerts[:3]],
            now=NOW,
        ),
        "test_message": render_test("#ai-spend", now=NOW),
    }


CASES = snapshot_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_message_kind_renders_exactly_as_its_reviewed_snapshot(name: str) -> None:
    assert_matches_snapshot(f"slack_{name}.json", CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_message_kind_is_within_slack_limits_and_valid_for_slack_sdk(name: str) -> None:
    rendered = CASES[name]
    assert_valid_for_slack(rendered)
    assert len(rendered.text) <= 500


def test_headers_say_severity_subject_level_and_budget_in_one_line() -> None:
    def header(name: str) -> str:
        return str(CASES[name].blocks[0]["text"]["text"])

    assert header("warning_80") == ":warning: support-bot-prod at 82% of its $1,500 monthly budget"
    assert header("info_50") == (
        ":information_source: support-bot-prod at 51% of its $1,500 monthly budget"
    )
    assert header("critical_100") == (
        ":rotating_light: support-bot-prod at 104% of its $1,500 monthly budget"
    )
    assert header("forecast") == (
        ":chart_with_upwards_trend: support-bot-prod is on course for $1,960 by Nov 30, "
        "over its $1,500 monthly budget"
    )
    assert header("repeat") == (
        ":rotating_light: support-bot-prod is still over its $1,500 monthly budget, at 112%"
    )
    assert header("per_model") == (
        ":rotating_light: support-bot-prod on gpt-4o at 106% of its $900 monthly budget"
    )
    assert (
        header("shared_pool")
        == ":warning: Shared pool data-team at 82% of its $5,000 monthly budget"
    )
    assert header("requests_metric") == (
        ":information_source: support-bot-prod at 52% of its monthly limit of 100,000 requests"
    )


def test_fields_show_spend_requests_period_with_zone_and_days_left_forecast_and_change() -> None:
    reads = as_terminal_text(CASES["with_previous_used"])
    assert "Spend: $1,230.00 of $1,500.00 (82%)" in reads
    assert "Requests: 48,120" in reads
    assert "Period: Nov 1 to Nov 30 (Europe/Berlin); 5.6 days left" in reads
    assert "Forecast: On course for $1,400 by Nov 30 (93%)" in reads
    assert "Since the last alert: +$310 (was $920)" in reads
    assert "Top models by spend: gpt-4o $812.00 · claude-3-5-sonnet $301.12" in reads


def test_days_left_count_from_now_and_a_finished_period_says_so() -> None:
    item = as_item(make_alert())
    one_day_before = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert "1440 min left" not in as_terminal_text(render(item, now=one_day_before))
    assert "24 h left" in as_terminal_text(render(item, now=one_day_before))
    assert "period ended" in as_terminal_text(render(item, now=NOW + timedelta(days=10)))


def test_overrun_day_is_the_local_day_of_the_period_zone() -> None:
    late_utc = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)  # Nov 27 00:30 in Berlin
    reads = as_terminal_text(render(as_item(make_alert(overrun_at=late_utc)), now=NOW))
    assert "over the limit around Nov 27" in reads


def test_configured_mentions_reach_blocks_and_notification_text_unescaped() -> None:
    rendered = CASES["with_mentions"]
    assert rendered.blocks[1]["text"]["text"] == f"{TEAM} {ONCALL}"
    assert rendered.text.endswith(f" {TEAM} {ONCALL}")


def test_a_mention_that_is_not_mention_syntax_is_left_out() -> None:
    rendered = render(as_item(make_alert(mention=("<https://evil|x>", "@here", TEAM))), now=NOW)
    assert rendered.blocks[1]["text"]["text"] == TEAM
    assert "evil" not in json.dumps(rendered.blocks) + rendered.text


def test_fallback_text_reads_without_block_kit() -> None:
    assert CASES["warning_80"].text == (
        "Warning: support-bot-prod at 82% of its $1,500 monthly budget "
        "(budget support-bot, 5.6 days left)"
    )
    assert CASES["exports_failing"].text.startswith(
        "Langdock exports failing since 2026-11-25 08:45"
    )


def test_exports_failing_says_since_when_how_often_why_and_that_budgets_are_unchecked() -> None:
    line = CASES["exports_failing"].blocks[1]["text"]["text"]
    assert line == (
        "Langdock exports failing since 2026-11-25 08:45 UTC (45 min ago), 3 cycles in a row "
        "(timeout); last good data 2026-11-25 08:30 UTC (60 min ago); "
        "budgets are not being checked."
    )


# --- names are data --------------------------------------------------------------------------


def all_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_strings(item)


def assert_inert(rendered: Rendered, allowed: tuple[str, ...] = ()) -> None:
    """No markup survives but the configured mentions: no <, >, bare & or line from data."""
    for original in [rendered.text, *all_strings(rendered.blocks)]:
        text = original
        for mention in allowed:
            text = text.replace(mention, "")
        assert "<" not in text
        assert ">" not in text
        assert re.sub(r"&(amp|lt|gt);", "", text).count("&") == 0
    for block in rendered.blocks:
        if block["type"] == "header":
            assert "\n" not in block["text"]["text"]


@pytest.mark.parametrize("name", INJECTIONS)
def test_markup_in_a_key_name_renders_literally_mentions_nobody_links_nothing(name: str) -> None:
    rendered = render(as_item(make_alert(api_key_name=name)), now=NOW)
    assert_inert(rendered)
    header = rendered.blocks[0]["text"]
    assert header["type"] == "plain_text"
    flat = " ".join(name.replace("\r", " ").replace("\u2028", " ").split("\n"))
    assert header["text"] == f":warning: {escape(flat)} at 82% of its $1,500 monthly budget"


def test_channel_mention_in_a_key_name_is_escaped_and_its_stars_defused_in_mrkdwn() -> None:
    rendered = render(as_item(make_alert(api_key_name="<!channel> *urgent*")), now=NOW)
    header = rendered.blocks[0]["text"]["text"]
    assert header == ":warning: &lt;!channel&gt; *urgent* at 82% of its $1,500 monthly budget"
    z = slackblocks.ZWSP
    assert rendered.text.startswith(f"Warning: &lt;!channel&gt; {z}*{z}urgent{z}*{z} at 82%")
    assert "<!" not in json.dumps(rendered.blocks) + rendered.text
    assert "<@" not in json.dumps(rendered.blocks) + rendered.text
    assert "<http" not in json.dumps(rendered.blocks) + rendered.text


@pytest.mark.parametrize("name", INJECTIONS)
def test_markup_in_model_budget_and_silence_names_renders_literally(name: str) -> None:
    alert = make_alert(
        budget=name, model=name, silenced_by=name, api_key_id=name, top_models=((name, 1.0),)
    )
    assert_inert(render(as_item(alert), now=NOW))
    assert_inert(
        render(as_item(dataclasses.replace(alert, scope="shared", api_key_id=None)), now=NOW)
    )
    assert_inert(render_digest([as_item(alert), as_item(alert)], now=NOW))


def test_emoji_codes_in_names_stay_text() -> None:
    rendered = render(as_item(make_alert(api_key_name=":rotating_light: fake")), now=NOW)
    header = rendered.blocks[0]["text"]["text"]
    assert header.startswith(f":warning: :{slackblocks.ZWSP}rotating_light: fake at")


def test_names_never_reach_a_mrkdwn_object() -> None:
    def mrkdwn_texts(rendered: Rendered) -> list[str]:
        return [obj["text"] for obj in _text_objects(rendered.blocks) if obj["type"] == "mrkdwn"]

    plain = make_alert(model="gpt-4o", silenced_by="freeze")
    hostile = make_alert(
        api_key_name="*bold*", model="<@U1>", budget="_it_", silenced_by="`x`",
        top_models=(("~s~", 1.0),),
    )  # fmt: skip
    assert mrkdwn_texts(render(as_item(plain), now=NOW)) == mrkdwn_texts(
        render(as_item(hostile), now=NOW)
    )


def _text_objects(blocks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for block in blocks:
        if "text" in block:
            yield block["text"]
        yield from block.get("fields", [])
        yield from block.get("elements", [])


# --- limits ----------------------------------------------------------------------------------


def test_a_1000_character_key_name_is_cut_with_an_ellipsis_within_every_limit() -> None:
    rendered = render(as_item(make_alert(api_key_name="k" * 1000, model="m" * 1000)), now=NOW)
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    header = rendered.blocks[0]["text"]["text"]
    assert len(header) <= 150
    assert "k…" in header
    assert "m…" in header
    assert header.endswith(" at 82% of its $1,500 monthly budget")


def test_a_cut_never_splits_an_escape_sequence() -> None:
    for n in range(140, 160):
        rendered = render(as_item(make_alert(api_key_name="&" * n)), now=NOW)
        assert_inert(rendered)
        assert "&…" not in json.dumps(rendered.blocks) + rendered.text
    assert slackblocks.plain("a&b", 4) == "a…"
    assert slackblocks.plain("a&b", 6) == "a…"
    assert slackblocks.plain("a&b", 7) == "a&amp;b"
    assert slackblocks.plain("a&bc", 7) == "a&amp;…"


def test_lengths_count_utf16_units_as_slack_does() -> None:
    rendered = render(as_item(make_alert(api_key_name="\N{PILE OF POO}" * 200)), now=NOW)
    header = rendered.blocks[0]["text"]["text"]
    assert slackblocks.width(header) <= 150 < len(header) * 2


def test_a_digest_of_5000_alerts_fits_slack_worst_first_with_mentions_once() -> None:
    alerts = [
        make_alert(
            api_key_id=f"key_{n}",
            api_key_name=f"service-{n}-" + "x" * (n % 120),
            severity=("info", "warning", "critical")[n % 3],
            ratio=0.5 + (n % 97) / 100,
            mention=(TEAM,) if n % 2 else (ONCALL, TEAM),
        )
        for n in range(5000)
    ]
    rendered = render_digest([as_item(a) for a in alerts], now=NOW)
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    assert len(rendered.blocks) <= 50
    head = rendered.blocks[0]["text"]["text"]
    assert head == ":rotating_light: 5,000 budget alerts: 1,666 critical, 1,667 warning, 1,667 info"
    assert rendered.blocks[1]["text"]["text"] == f"{ONCALL} {TEAM}"
    listed = "\n".join(b["text"]["text"] for b in rendered.blocks[2:-1])
    assert listed.count("\n") + 1 == 50
    first = listed.splitlines()[0]
    assert first.startswith(":rotating_light: service-")
    assert " · 146% · " in first  # the highest ratio among the critical ones
    assert rendered.blocks[-1]["elements"][0]["text"].startswith("…and 4,950 more")
    assert rendered.text.count(TEAM) == 1
    assert len(rendered.text) < 600


def test_digest_orders_by_severity_then_share_of_the_limit() -> None:
    lines = [line for line in CASES["digest"].blocks[2]["text"]["text"].splitlines()]
    assert [line.split(" ", 1)[0] for line in lines] == [
        ":rotating_light:",
        ":rotating_light:",
        ":rotating_light:",
        ":warning:",
        ":chart_with_upwards_trend:",
        ":information_source:",
    ]
    assert " · 112% · " in lines[0]
    assert " · 106% · " in lines[1]


# --- property ---------------------------------------------------------------------------------

names = st.text(max_size=300)
some_mentions = st.lists(
    st.sampled_from([TEAM, ONCALL, "<!here>", "<!subteam^S9|@ops>"])
    | st.from_regex(r"<@[A-Z0-9]{1,40}>", fullmatch=True),
    max_size=120,
)


@st.composite
def hostile_alerts(draw: st.DrawFn) -> Alert:
    shared = draw(st.booleans())
    return make_alert(
        budget=draw(names),
        scope="shared" if shared else "key",
        api_key_id=None if shared else draw(names),
        api_key_name=draw(st.none() | names),
        model=draw(st.none() | names),
        severity=draw(st.sampled_from(["info", "warning", "critical"])),
        kind=draw(st.sampled_from(["actual", "forecast"])),
        repeat=draw(st.booleans()),
        silenced_by=draw(st.none() | names),
        mention=tuple(draw(some_mentions)),
        previous_used=draw(st.none() | st.floats(0, 1e7)),
        ratio=draw(st.floats(0, 100)),
        used=draw(st.floats(0, 1e9)),
        top_models=tuple(draw(st.lists(st.tuples(names, st.floats(0, 1e6)), max_size=3))),
    )


def assert_fits(rendered: Rendered, allowed: tuple[str, ...]) -> None:
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    assert json.loads(json.dumps({"text": rendered.text, "blocks": rendered.blocks})) == {
        "text": rendered.text,
        "blocks": rendered.blocks,
    }
    assert_inert(rendered, allowed)


@settings(max_examples=300, deadline=None)
@given(hostile_alerts())
def test_any_names_yield_a_message_within_limits_with_no_markup_but_mentions(alert: Alert) -> None:
    assert_fits(render(as_item(alert), now=NOW), alert.mention)


@settings(max_examples=50, deadline=None)
@given(st.lists(hostile_alerts(), min_size=1, max_size=60))
def test_any_names_yield_a_digest_within_limits(alerts: list[Alert]) -> None:
    items = [as_item(a) for a in alerts]
    allowed = tuple(m for a in alerts for m in a.mention)
    assert_fits(render_digest(items, now=NOW), allowed)


@settings(max_examples=100, deadline=None)
@given(names, st.text(max_size=50))
def test_any_channel_and_reason_yield_test_and_operational_messages_within_limits(
    channel: str, reason: str
) -> None:
    assert_fits(render_test(channel, now=NOW), ())
    payload = {**FAILING, "reason": reason}
    assert_fits(render(operational_item("exports_failing", payload), now=NOW), ())
    assert_fits(render(operational_item("exports_recovered", payload), now=NOW), ())


# --- the outbox path ---------------------------------------------------------------------------


def test_payload_decodes_to_the_same_alert_as_the_cycle_does() -> None:
    alert = make_alert(mention=(TEAM,), previous_used=920.0, repeat=True)
    payload = json.loads(json.dumps(notices.payload(alert)))
    assert notices.read("alert", payload, written_at=NOW) == alert
    assert as_item(alert) == alert


def test_an_unknown_outbox_kind_is_an_error_not_a_message() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        render(operational_item("mystery"), now=NOW)


def test_terminal_text_shows_emoji_mentions_and_literal_names() -> None:
    rendered = render(
        as_item(make_alert(api_key_name="a & <b>", mention=("<!subteam^S1|@data-team>", ONCALL))),
        now=NOW,
    )
    lines = as_terminal_text(rendered).splitlines()
    assert lines[0] == "\N{WARNING SIGN}\ufe0f a & <b> at 82% of its $1,500 monthly budget"
    assert lines[1] == "  @data-team @U0456EFGH"


def test_the_docs_page_shows_the_current_rendering_of_its_examples() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "slack-message.md").read_text()
    for name in ("docs_example", "digest"):
        rendered = CASES[name]
        assert json.dumps(rendered.blocks, indent=2, ensure_ascii=False) in page, name
        assert as_terminal_text(rendered) in page, name
        assert rendered.text in page, name
    first_lines = {as_terminal_text(rendered).splitlines()[0] for rendered in CASES.values()}
    table = [line.split(" | ")[1].rstrip(" |") for line in page.splitlines() if line[:2] == "| "]
    assert len(table) == 10
    assert set(table[1:]) <= first_lines


def test_more_mentions_than_fit_keep_whole_mentions_within_the_section_limit() -> None:
    many = tuple(f"<@U{n:010d}>" for n in range(400))
    rendered = render(as_item(make_alert(mention=many)), now=NOW)
    assert slackblocks.problems(rendered.blocks, rendered.text) == []
    tags = rendered.blocks[1]["text"]["text"].split(" ")
    assert tags == list(many[: len(tags)])
    assert len(tags) == 200  # 200 mentions of 14 characters and 199 spaces: 2,999


def test_exports_failing_before_any_good_export_says_there_is_no_good_data_yet() -> None:
    payload = {**FAILING, "last_success": None}
    line = render(operational_item("exports_failing", payload), now=NOW).blocks[1]["text"]["text"]
    assert "; last good data none yet; budgets are not being checked." in line


def test_an_alert_names_its_owner_after_the_budgets_mentions_each_once() -> None:
    rendered = render(
        as_item(make_alert(mention=(TEAM,), owner_mention=(OWNER, TEAM, ONCALL))), now=NOW
    )
    section = rendered.blocks[1]["text"]
    assert section["text"] == f"{TEAM} · owner: {OWNER} {ONCALL}"
    assert rendered.text.endswith(f" {TEAM} {OWNER} {ONCALL}")  # the notification pings them


@pytest.mark.parametrize("name", INJECTIONS)
def test_an_owner_mention_that_is_not_mention_syntax_reaches_no_message(name: str) -> None:
    rendered = render(as_item(make_alert(owner_mention=(name, OWNER))), now=NOW)
    shown = json.dumps(rendered.blocks) + rendered.text
    assert rendered.blocks[1]["text"]["text"].endswith(f"{OWNER}")
    assert rendered.blocks[1]["text"]["text"].startswith("owner: ")
    if name != "<@U123>":  # that one is real mention syntax, as config validates it
        assert name not in shown
        assert "<!channel>" not in shown
        assert "<!here" not in shown
