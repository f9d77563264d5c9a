"""costwatch.detect.findings: every detector from one configuration, typed findings with their
owners, and the once-per-subject-and-day rule, on a workspace whose answer is known."""

from __future__ import annotations

import dataclasses

import polars as pl
from histories import MONDAY, Row, days_before, frame, steady

from costwatch.config import parse_config
from costwatch.detect import Anomaly, KeyEvent, UnitCost, detect, due, identities
from costwatch.detect.rate import SNAPSHOT

HISTORY = days_before(MONDAY, 30)
CONFIG = parse_config(
    """
langdock: {api_key: x}
slack: {token: t, channel: "#ai-spend"}
budgets:
  - {name: support, keys: "support-*", limits: {cost_usd: 1000}}
  - {name: data, keys: [etl], limits: {cost_usd: 1000}}
  - {name: every-key, keys: "*", limits: {cost_usd: 1000}}
owners:
  - {keys: "support-*", mention: "<!subteam^SSUP>", channel: "#support-eng"}
  - {keys: "*", mention: "<@UFIN>"}
unowned: {enabled: true}
""",
    env={},
)


def workspace() -> list[Row]:
    rows = steady("support-bot", "gpt-4o", 6.0, 100, HISTORY)
    rows += steady("support-bot", "mini", 4.0, 100, HISTORY)
    rows += [
        (MONDAY, "support-bot", "gpt-4o", 76.0, 1266),
        (MONDAY, "support-bot", "mini", 4.0, 100),
    ]
    # etl is big on one model; its other model spikes, but not the key's total
    rows += steady("etl", "claude", 500.0, 1000, [*HISTORY, MONDAY])
    rows += [*steady("etl", "mini", 5.0, 100, HISTORY), (MONDAY, "etl", "mini", 60.0, 1200)]
    rows += [(MONDAY, "stray", "free-model", 0.0, 400), (MONDAY, "stray", "gpt-4o", 9.0, 10)]
    return rows


def test_one_call_finds_each_kind_with_its_owner() -> None:
    found = detect(CONFIG, frame(workspace()), MONDAY, HISTORY)
    anomalies = [f for f in found if isinstance(f, Anomaly)]
    assert [(a.api_key_name, a.model, a.metric) for a in anomalies] == [
        ("support-bot", None, "cost_usd"),  # its gpt-4o row is named as its driver instead
        ("etl", "mini", "cost_usd"),  # the key's total moved 11%: the model says it
        ("support-bot", None, "requests"),
        ("etl", "mini", "requests"),
    ]
    bot = anomalies[0]
    assert (bot.ratio, bot.driver_model, bot.since) == (8.0, "gpt-4o", MONDAY)
    assert (bot.mention, bot.channel) == (("<!subteam^SSUP>",), "#support-eng")
    assert (anomalies[1].mention, anomalies[1].channel) == (("<@UFIN>",), None)
    (unit,) = [f for f in found if isinstance(f, UnitCost)]
    assert (unit.model, unit.change, unit.zero_cost_requests) == ("free-model", "zero_cost", 400)
    events = [(e.kind, e.api_key_name, e.mention) for e in found if isinstance(e, KeyEvent)]
    assert events == [("unowned", "stray", ("<@UFIN>",)), ("new_key", "stray", ("<@UFIN>",))]


def test_each_finding_is_due_once_per_subject_and_day() -> None:
    found = detect(CONFIG, frame(workspace()), MONDAY, HISTORY)
    identities = [f.identity for f in found]
    assert identities[0] == ("", "id-support-bot", "", "cost_usd", "anomaly", "2026-11-30")
    assert len(set(identities)) == len(identities)
    assert due(found, []) == found
    assert due([*found, *found], identities[:1]) == found[1:]
    assert due(found, identities) == ()
    tomorrow = {(*f.identity[:5], "2026-12-01") for f in found}
    assert due(found, tomorrow) == found  # another day: due again


def test_the_spend_rate_comes_with_the_hourly_snapshots() -> None:
    snaps = pl.DataFrame(
        {
            "day": [*HISTORY, MONDAY],
            "hour": [10] * (len(HISTORY) + 1),
            "api_key_id": ["id-support-bot"] * (len(HISTORY) + 1),
            "api_key_name": ["support-bot"] * (len(HISTORY) + 1),
            "requests": [10] * (len(HISTORY) + 1),
            "total_cost_usd": [2.0] * len(HISTORY) + [40.0],
        },
        schema=SNAPSHOT,
    )
    found = detect(CONFIG, frame(workspace()), MONDAY, HISTORY, snapshots=snaps, hour=10)
    (rate,) = [f for f in found if isinstance(f, Anomaly) and f.kind == "spend_rate"]
    assert (rate.hour, rate.value, rate.normal, rate.ratio) == (10, 40.0, 2.0, 20.0)
    assert rate.channel == "#support-eng"
    assert rate.identity == ("", "id-support-bot", "", "cost_usd", "spend_rate", "2026-11-30")


def test_a_keys_anomaly_and_its_spend_rate_are_one_alert_per_key_metric_and_day() -> None:
    bot = Anomaly(
        kind="spend_rate",
        day=MONDAY,
        metric="cost_usd",
        api_key_id="id-bot",
        api_key_name="bot",
        model=None,
        value=40.0,
        normal=2.0,
        ratio=20.0,
        level=6.0,
        basis="same weekday",
        baseline_days=4,
        hour=10,
    )
    day = dataclasses.replace(bot, kind="anomaly", hour=None, since=MONDAY)
    on_model = dataclasses.replace(day, model="gpt-4o")
    requests = dataclasses.replace(bot, metric="requests")
    assert identities(bot) == (bot.identity, day.identity)
    assert identities(day) == (day.identity, bot.identity)
    assert identities(on_model) == (on_model.identity,)
    # found in one cycle: the day's anomaly supersedes the rate (it comes first)
    assert due([day, bot, requests], []) == (day, requests)
    # the rate was sent at ten: the evening's anomaly of the same key and metric is not
    assert due([day, on_model, requests], [bot.identity]) == (on_model, requests)
    assert due([bot], [day.identity]) == ()


def test_a_quiet_workspace_finds_nothing() -> None:
    rows = steady("support-bot", "gpt-4o", 6.0, 100, [*HISTORY, MONDAY])
    assert detect(CONFIG, frame(rows), MONDAY, HISTORY) == ()
