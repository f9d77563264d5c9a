"""Owners on budget alerts: a per-key budget's alert, and a pool's that selects exactly one key,
mention that key's owner (`owners:`) and go to the owner's channel too, once per channel.
Pure (the plan through `owning.with_owners`, `owning.routes`) and end to end: the simulator's
Langdock over real sockets, a real SQLite state, the real slack_sdk against the stand-in."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest
from slackstub import TOKEN, SlackStub

from costwatch import alerts, budgets, cycle, owning
from costwatch.alerts import Alert
from costwatch.cli import main
from costwatch.config import Config, parse_config
from costwatch.context import with_context
from costwatch.detect import Anomaly
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.slack import deliver, sender_from_config
from costwatch.state import SqliteState
from costwatch.usage import SCHEMA, Usage

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
OWNER = "<!subteam^SOWNER>"
BOB = "<@UBOB>"


def config(text: str) -> Config:
    return parse_config("langdock: {api_key: x}\n" + textwrap.dedent(text), env={})


def usage(costs: dict[str, float]) -> Usage:
    rows = [(f"id-{n}", n, "gpt-4o", 10, c, None, None, None, None, None) for n, c in costs.items()]
    frame = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    return Usage(frame=frame, has_tokens=False, model_column="model", rows_read=len(rows))


def planned(cfg: Config, costs: dict[str, float]) -> alerts.Plan:
    rules = budgets.rules(cfg, NOW)
    loaded = usage(costs)
    usages = dict.fromkeys(budgets.export_ranges(rules), loaded)
    frames = {key: u.frame for key, u in usages.items()}
    evaluation = budgets.evaluate(rules, frames, NOW)
    by_name = {rule.name: rule for rule in rules}
    plan = alerts.plan(evaluation.findings, by_name, {}, cfg.silences, NOW)
    plan = with_context(plan, rules, usages, evaluation.selected)
    return owning.with_owners(plan, rules, cfg.owners, usages, evaluation.selected)


OWNERS = """\
slack: {token: xoxb-1, channel: "#ai-spend"}
owners:
  - {keys: "web-*", exclude: web-lab, mention: "<!subteam^SOWNER>", channel: "#owners"}
  - {keys: etl, mention: ["<@UBOB>"]}
budgets:
  - {name: each, keys: "*", limits: {cost_usd: 10}}
  - {name: web-pool, keys: web-prod, scope: shared, limits: {cost_usd: 10}, channel: "#web"}
  - {name: all, keys: "*", scope: shared, limits: {cost_usd: 10}}
"""


def by_subject(plan: alerts.Plan) -> dict[tuple[str, str], Alert]:
    return {(a.budget, a.api_key_name or "*"): a for a in plan.alerts}


def test_each_alert_about_an_owned_key_carries_its_owner_and_a_pool_of_one_key_too() -> None:
    found = by_subject(planned(config(OWNERS), {"web-prod": 50, "etl": 40, "web-lab": 30}))
    owned = {subject: (a.owner_mention, a.owner_channel) for subject, a in found.items()}
    assert owned == {
        ("each", "web-prod"): ((OWNER,), "#owners"),
        ("each", "etl"): ((BOB,), None),
        ("each", "web-lab"): ((), None),  # excluded from the owner's keys: nobody's
        ("web-pool", "*"): ((OWNER,), "#owners"),  # selects exactly web-prod
        ("all", "*"): ((), None),  # three keys: no one owner
    }
    assert found[("each", "web-prod")].spend_usd == 50  # the context is kept
    assert found[("each", "web-prod")].mention == ()  # the budget's own mentions are its own


def test_without_owners_the_plan_is_left_as_it_was() -> None:
    cfg = config(OWNERS.split("owners:", maxsplit=1)[0] + "budgets:" + OWNERS.split("budgets:")[1])
    plan = planned(cfg, {"web-prod": 50})
    assert all(a.owner_mention == () and a.owner_channel is None for a in plan.alerts)


def test_routes_are_the_alerts_own_channel_or_the_default_and_the_owners_once() -> None:
    found = by_subject(planned(config(OWNERS), {"web-prod": 50, "etl": 40}))
    assert owning.routes(found[("each", "web-prod")], "#ai-spend") == ("#ai-spend", "#owners")
    assert owning.routes(found[("web-pool", "*")], "#ai-spend") == ("#web", "#owners")
    assert owning.routes(found[("each", "etl")], "#ai-spend") == ("#ai-spend",)
    same = found[("each", "web-prod")]
    assert owning.routes(same, "#owners") == ("#owners",)  # once per channel
    finding = Anomaly(
        kind="anomaly",
        day=NOW.date(),
        metric="cost_usd",
        api_key_id="id-web-prod",
        api_key_name="web-prod",
        model=None,
        value=50.0,
        normal=5.0,
        ratio=10.0,
        level=10.0,
        basis="same weekday",
        baseline_days=28,
        mention=(OWNER,),
        channel="#owners",
    )
    assert owning.routes(finding, "#ai-spend") == ("#ai-spend", "#owners")
    assert owning.routes(finding, None) == (None, "#owners")


# --- end to end ----------------------------------------------------------------------------

KEY = "ld-OWNERS-k3y"
WORKSPACE = Workspace(keys=3, created=datetime(2024, 1, 1, tzinfo=UTC), hourly_cost_usd=6.0)


@dataclass
class World:
    sim: Simulator
    client: LangdockClient
    state: SqliteState
    slack: SlackStub

    def config(self) -> Config:
        (first, owned), (_, second), _ = WORKSPACE.key_ids()
        return parse_config(
            f"""
langdock: {{api_key: {KEY}, base_url: https://api.langdock.example}}
schedule: {{timezone: Europe/Berlin}}
history: {{enabled: false}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: "{self.slack.api_url}", digest_after: 50}}
unowned: {{enabled: false, new_keys: false, dormant: false}}
owners:
  - {{keys: ["{owned}"], mention: "{OWNER}", channel: "#owners"}}
  - {{keys: ["{first}-nothing", "{second}"], mention: ["{BOB}"]}}
budgets:
  - {{name: every-key, keys: "*", limits: {{cost_usd: 1}}}}
  - {{name: one-key-pool, keys: ["{first}"], scope: shared, limits: {{cost_usd: 1}},
     channel: "#pool"}}
  - {{name: already-theirs, keys: ["{owned}"], limits: {{cost_usd: 1}}, channel: "#owners"}}
  - {{name: workspace, keys: "*", scope: shared, limits: {{cost_usd: 1}}}}
""",
            env={},
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with (
        Simulator(WORKSPACE, api_key=KEY, clock=lambda: NOW) as sim,
        httpx.Client(timeout=10) as http,
        SqliteState.open(tmp_path / "state.db") as state,
        SlackStub() as slack,
    ):
        for channel in ("#ai-spend", "#owners", "#pool"):
            slack.add_channel(channel)
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        yield World(sim, client, state, slack)


def test_budget_alerts_reach_the_owners_channel_once_and_mention_them_in_every_channel(
    world: World,
) -> None:
    cfg = world.config()
    outcome = cycle.run_once(cycle.Deps(cfg, client=world.client, state=world.state), NOW)
    assert outcome.ok, outcome.error
    assert cfg.slack is not None
    sender = sender_from_config(cfg.slack, timeout=5.0, retry_interval=0.01)
    report = deliver(world.state, sender, cfg.slack, now=NOW + timedelta(seconds=1))
    assert report.sent == len(outcome.outbox_ids)

    names = [name for _, name in WORKSPACE.key_ids()]
    owned, bobs, nobody = names
    posts = {c: world.slack.posts(c) for c in ("#ai-spend", "#owners", "#pool")}
    in_owners = sorted(p.text for p in posts["#owners"])
    # every-key (its default channel and the owner's), the one-key pool (#pool and the owner's),
    # already-theirs (the owner's channel is its own: once)
    assert len(in_owners) == 3
    assert all(OWNER in text for text in in_owners)
    assert sum("already-theirs" in text for text in in_owners) == 1
    assert [p for p in posts["#pool"] if OWNER in p.text and "one-key-pool" in p.text]
    default = posts["#ai-spend"]
    assert len(default) == 4  # every-key for each of the three keys, and the workspace pool
    about = {name: [p.text for p in default if f"{name} at " in p.text] for name in names}
    assert all(OWNER in text and "owner:" in text for text in about[owned])
    assert all(BOB in text for text in about[bobs])
    assert not any("owner:" in text for text in about[nobody])
    (pool,) = [p.text for p in default if "workspace" in p.text and "Workspace" not in p.text]
    assert "owner:" not in pool  # three keys: no one owner
    blocks = [b for p in posts["#owners"] for b in p.body.get("blocks", [])]
    assert any(OWNER in str(block) for block in blocks)  # the mention itself, unescaped


def test_test_slack_reaches_the_owners_channels_too_each_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SlackStub() as stub:
        for channel in ("#ai-spend", "#owners", "#team"):
            stub.add_channel(channel)
        path = tmp_path / "costwatch.yaml"
        path.write_text(
            f"""\
langdock: {{api_key: {KEY}}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: "{stub.api_url}"}}
owners:
  - {{keys: web, mention: "{OWNER}", channel: "#owners"}}
  - {{keys: etl, mention: "{BOB}", channel: "#team"}}
budgets:
  - {{name: web, keys: web, limits: {{cost_usd: 1}}, channel: "#owners"}}
""",
            encoding="utf-8",
        )
        code = main(["test-slack", "--config", str(path)])
        out = capsys.readouterr().out
        posted = sorted(str(r.channel) for r in stub.posts())
    assert code == 0, out
    assert posted == ["#ai-spend", "#owners", "#team"]
    assert "3 of 3 channel(s) reached" in out
