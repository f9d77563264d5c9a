"""Several workspaces in one cycle: `costwatch check` against two simulators (one per
workspace) and the Slack stand-in. An organisation total sums both, a workspace's budget reads
it alone, one key id in both workspaces is two keys, and a workspace whose export fails leaves
exactly the budgets that read it unevaluated."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import free_port, wait_for
from slackstub import TOKEN, SlackStub

from costwatch.cli import main
from costwatch.simulator import Simulator, Workspace

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MONTH_START = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November in Europe/Berlin
KEYS = {"marketing": "sk-marketing-0001", "research": "sk-research-0002"}
# The same seed: both workspaces have the same key ids and names, with different spend.
WORKSPACES = {
    "marketing": Workspace(keys=4, hourly_cost_usd=0.05),
    "research": Workspace(keys=4, hourly_cost_usd=0.02),
}


@pytest.fixture
def sims() -> Iterator[dict[str, Simulator]]:
    with (
        Simulator(WORKSPACES["marketing"], api_key=KEYS["marketing"], clock=lambda: NOW) as one,
        Simulator(WORKSPACES["research"], api_key=KEYS["research"], clock=lambda: NOW) as two,
    ):
        yield {"marketing": one, "research": two}


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(retry_after=0) as server:
        for channel in ("#ai-spend", "#research"):
            server.add_channel(channel)
        yield server


def spend(workspace: str) -> dict[str, float]:
    """Each key's month-to-date spend in `workspace`, as the simulator computes it."""
    totals: dict[str, float] = {}
    for row in WORKSPACES[workspace].usage(MONTH_START, NOW):
        totals[row.api_key_id] = totals.get(row.api_key_id, 0.0) + row.total_cost_usd
    return totals


@pytest.fixture
def config(
    tmp_path: Path, sims: dict[str, Simulator], stub: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("MARKETING_KEY", KEYS["marketing"])
    monkeypatch.setenv("RESEARCH_KEY", KEYS["research"])
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    path = tmp_path / "costwatch.yaml"
    connection = "    allow_insecure_download: true\n    retry_max_elapsed_seconds: 1\n"
    connection += "    max_attempts: 1\n    timeout_seconds: 5\n"
    path.write_text(
        f"""\
workspaces:
  - name: marketing
    base_url: {sims["marketing"].base_url}
    api_key: ${{MARKETING_KEY}}
{connection}  - name: research
    base_url: {sims["research"].base_url}
    api_key: ${{RESEARCH_KEY}}
    channel: "#research"
{connection}    budgets:
      - {{name: research-keys, keys: "*", limits: {{cost_usd: 1}}, thresholds: [100]}}
schedule: {{every: 15m, timezone: Europe/Berlin}}
state: {{path: {tmp_path / "state.db"}}}
slack:
  token: ${{SLACK_BOT_TOKEN}}
  channel: "#ai-spend"
  api_url: {stub.api_url}
  min_interval_seconds: 0
  digest_after: 50
budgets:
  - {{name: org-total, keys: "*", scope: shared, limits: {{cost_usd: 100000}}}}
  - {{name: every-key, keys: "*", limits: {{cost_usd: 1}}, thresholds: [100]}}
  - {{name: marketing-pool, keys: "*", scope: shared, limits: {{cost_usd: 100000}},
      workspaces: [marketing]}}
""",
        encoding="utf-8",
    )
    return path


def check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = main(["check", "--config", str(config), "--now", NOW.isoformat(), "--format", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def findings(document: dict[str, Any], budget: str) -> list[dict[str, Any]]:
    return [f for f in document["findings"] if f["budget"] == budget]


def test_an_organisation_total_sums_every_workspaces_spend(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, document, _ = check(config, capsys)
    assert code == 1  # every-key crossed $1
    (org,) = findings(document, "org-total")
    both = sum(spend("marketing").values()) + sum(spend("research").values())
    assert org["used"] == pytest.approx(both, rel=1e-9)
    (pool,) = findings(document, "marketing-pool")
    assert pool["used"] == pytest.approx(sum(spend("marketing").values()), rel=1e-9)


def test_one_key_id_in_two_workspaces_is_two_keys(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, document, _ = check(config, capsys)
    ids = {row["api_key_id"]: row for row in findings(document, "every-key")}
    raw = set(spend("marketing"))
    assert raw == set(spend("research"))  # the simulators share their key ids
    assert set(ids) == {f"{w}/{key}" for w in ("marketing", "research") for key in raw}
    for key in raw:
        assert ids[f"marketing/{key}"]["used"] == pytest.approx(spend("marketing")[key])
        assert ids[f"research/{key}"]["used"] == pytest.approx(spend("research")[key])


def test_a_workspaces_own_budget_reads_it_alone_and_alerts_to_its_channel(
    config: Path, stub: SlackStub, capsys: pytest.CaptureFixture[str]
) -> None:
    _, document, _ = check(config, capsys)
    subjects = {f["api_key_id"] for f in findings(document, "research-keys")}
    assert subjects == {f"research/{key}" for key in spend("research")}
    research = stub.posts("#research")
    assert len(research) == len([f for f in findings(document, "research-keys") if f["level"]])
    assert research
    assert all("research/" in post.text for post in research)
    # every-key alerts a key id over $1 in both workspaces once per workspace, each alert
    # naming its workspace
    general = [post.text for post in stub.posts("#ai-spend")]
    over = [key for key in spend("marketing") if min(spend(w)[key] for w in KEYS) >= 1]
    assert over
    for key in over:
        assert sum(f"marketing/{key}" in text for text in general) == 1
        assert sum(f"research/{key}" in text for text in general) == 1


def test_a_failed_workspace_fails_only_the_budgets_that_read_it(
    config: Path, sims: dict[str, Simulator], stub: SlackStub, capsys: pytest.CaptureFixture[str]
) -> None:
    sims["research"].faults.fail_export(401, times=1)  # the cycle's one export there
    code, document, err = check(config, capsys)
    assert code == 2  # never "within budget" from missing data
    assert "workspace research: the Langdock export failed" in err
    assert KEYS["research"] not in err
    unevaluated = {(u["budget"], u["reason"]) for u in document["unevaluated"]}
    assert unevaluated == {
        ("org-total", "export_failed"),
        ("every-key", "export_failed"),
        ("research-keys", "export_failed"),
    }
    assert {f["budget"] for f in document["findings"]} == {"marketing-pool"}
    (pool,) = findings(document, "marketing-pool")
    assert pool["used"] == pytest.approx(sum(spend("marketing").values()), rel=1e-9)
    assert stub.posts() == []  # no budget of the failed workspace alerted from partial data
    code, document, _ = check(config, capsys)  # the workspace is back: everything evaluated
    assert code == 1
    assert document["unevaluated"] == []
    assert stub.posts("#research")


# --- the daemon: one process, both workspaces, metrics labelled by workspace ------------------

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>.*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of `name`'s samples in a scrape, each with its value under "value"."""
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match["name"] == name:
            found.append({**dict(LABEL.findall(match["labels"])), "value": match["value"]})
    return found


def workspaces_config(path: Path, sims: dict[str, Simulator], stub: SlackStub, port: int) -> Path:
    items = "".join(
        f"  - name: {name}\n    base_url: {sim.base_url}\n    api_key: {KEYS[name]}\n"
        "    allow_insecure_download: true\n    timeout_seconds: 5\n"
        for name, sim in sims.items()
    )
    path.write_text(
        f"""\
workspaces:
{items}schedule: {{every: 2s, timezone: Europe/Berlin, shutdown_grace: 10s}}
state: {{path: {path.parent / "state.db"}}}
slack: {{token: {TOKEN}, channel: "#ai-spend", api_url: {stub.api_url}, retry_every: 1s}}
metrics: {{listen: "127.0.0.1:{port}"}}
budgets:
  - {{name: every-key, keys: "*", limits: {{cost_usd: 100000}}}}
  - {{name: org-total, keys: "*", scope: shared, limits: {{cost_usd: 100000}}}}
""",
        encoding="utf-8",
    )
    return path


def test_one_daemon_serves_both_workspaces_metrics_labelled_by_workspace(
    tmp_path: Path, stub: SlackStub
) -> None:
    with (
        Simulator(WORKSPACES["marketing"], api_key=KEYS["marketing"]) as one,
        Simulator(WORKSPACES["research"], api_key=KEYS["research"]) as two,
    ):
        port = free_port()
        config = workspaces_config(
            tmp_path / "costwatch.yaml", {"marketing": one, "research": two}, stub, port
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "costwatch", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: ready(f"{base}/readyz"), 60, "/readyz after the first cycle")
            # the keeper plans each workspace's history over its own partition
            wait_for(lambda: kept(base) == {"marketing", "research"}, 60, "the keeper's plan")
            scrape = httpx.get(f"{base}/metrics", timeout=5).text
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert one.exports_made() >= 1
    assert two.exports_made() >= 1
    keys = samples(scrape, "costwatch_key_spend_usd")
    ids = {key_id for key_id, _ in WORKSPACES["marketing"].key_ids()}
    assert {(s["workspace"], s["api_key_id"]) for s in keys} == {
        (w, key) for w in ("marketing", "research") for key in ids
    }
    budget = samples(scrape, "costwatch_budget_used_ratio")
    per_key = {(s["workspace"], s["api_key_id"]) for s in budget if s["budget"] == "every-key"}
    assert per_key == {(w, key) for w in ("marketing", "research") for key in ids}
    (org,) = [s for s in budget if s["budget"] == "org-total"]
    assert (org["workspace"], org["api_key_id"], org["subject"]) == ("", "", "(shared)")
    spent = sum(float(s["value"]) for s in keys)
    assert float(org["value"]) * 100000 == pytest.approx(spent, rel=1e-6)


def kept(base: str) -> set[str]:
    """The workspaces of `costwatch_history_days_stored`'s samples (none before a plan)."""
    try:
        scrape = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.TransportError:
        return set()
    return {s["workspace"] for s in samples(scrape, "costwatch_history_days_stored")}


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_exports_failing_alert_names_the_workspace_whose_export_fails(
    config: Path, sims: dict[str, Simulator], stub: SlackStub, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config.read_text()
    config.write_text(
        text.replace(
            '    channel: "#research"\n', '    channel: "#research"\n    failures_before_alert: 1\n'
        )
    )
    sims["research"].faults.fail_export(401, times=1)
    code, _, _ = check(config, capsys)
    assert code == 2
    (alert,) = stub.posts()
    assert "exports failing" in alert.text.lower()
    assert "unauthorized in workspace research" in alert.text
