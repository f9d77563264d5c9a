"""A whole daemon session with known secrets, scanned for them everywhere they could leak.

`costwatch --log-format json --log-level debug run` runs as a process against the simulator (with
export and download faults, so the error and retry paths run) and the Slack stand-in (with errors),
with a known Langdock key, Slack bot token and metrics basic-auth password. Afterwards every log
line (tracebacks included), every `/metrics` scrape (and a refused one), every request the Slack
stand-in and the simulator's download host received, and the state file are searched for the three
secrets: none may appear. The Langdock key may appear only in the Authorization header the
simulator's API host received, the Slack token only in the one the stand-in received.

Key and model names as markup: Slack mentions are proved inert in test_slackrender.py
(`<!channel>` in a key name never notifies); here, the workspace's hostile key names (a Slack
mention, a double quote, a comma, non-ASCII: `simulator.workspace.KEY_NAMES`) come back intact
from a scrape parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from loopback import free_port, wait_for, write_daemon_config
from prometheus_client.parser import text_string_to_metric_families
from slackstub import SlackStub

from costwatch.simulator import Simulator, Workspace
from costwatch.simulator.workspace import KEY_NAMES

LANGDOCK_KEY = "sk-lang-SESSION-k3y-5ecr3t-77a1"
SLACK_TOKEN = "xoxb-4242-4343-SESSIONs3cr3tT0ken"
PASSWORD = "metrics-PASSW0RD-session-1f2e"
SECRETS = {"langdock key": LANGDOCK_KEY, "slack token": SLACK_TOKEN, "password": PASSWORD}
COMMAND = [sys.executable, "-m", "costwatch", "--log-format", "json", "run"]
KEYS = 12  # every name in simulator.workspace.KEY_NAMES, the hostile ones included


def write_config(path: Path, sim: Simulator, stub: SlackStub, port: int) -> Path:
    budgets = """\
  - name: every-key
    keys: "*"
    limits: {cost_usd: 0.5}
  - name: lost-channel
    keys: "*"
    limits: {requests: 1}
    channel: "#nowhere"
"""
    return write_daemon_config(
        path,
        sim,
        stub,
        port,
        budgets,
        timeout=2,
        shutdown_grace="5s",
        langdock="  failures_before_alert: 1\n",
        metrics="  basic_auth_user: prometheus\n  basic_auth_password: ${METRICS_PASSWORD}\n",
    )


def leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def test_no_secret_appears_in_logs_metrics_slack_requests_downloads_or_state(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = ("prometheus", PASSWORD)
    scrapes: list[str] = []
    with (
        Simulator(Workspace(keys=KEYS), api_key=LANGDOCK_KEY) as sim,
        SlackStub(token=SLACK_TOKEN, retry_after=0) as stub,
    ):
        stub.add_channel("#ai-spend")
        # Error paths first: failed exports (an operational alert after one), broken downloads.
        sim.faults.fail_export(401)
        sim.faults.fail_export(500, times=2)
        sim.faults.reset_export()
        sim.faults.truncate_download()
        sim.faults.fail_download(403)
        stub.fail_next(500, times=3)
        stub.drop_next()
        stub.fail_next(429)
        config = write_config(tmp_path / "costwatch.yaml", sim, stub, port)
        env = {
            **os.environ,
            "LANGDOCK_API_KEY": LANGDOCK_KEY,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "METRICS_PASSWORD": PASSWORD,
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "costwatch",
                "--log-format",
                "json",
                "--log-level",
                "debug",  # every debug line too: slack_sdk's, httpx's and costwatch's own
                "run",
                "--config",
                str(config),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:

            def scrape() -> bool:
                try:
                    response = httpx.get(f"{base}/metrics", auth=auth, timeout=2)
                except httpx.TransportError:
                    return False
                scrapes.append(response.text)
                return 'costwatch_key_spend_usd{api_key_id="' in response.text

            wait_for(scrape, 30, "a scrape with spend")
            wait_for(lambda: len(stub.posts("#ai-spend")) >= 3, 30, "alerts delivered")
            refused = httpx.get(f"{base}/metrics", auth=("prometheus", "wrong"), timeout=2)
            assert refused.status_code == 401
            scrapes += [refused.text, str(refused.headers)]
            scrapes.append(httpx.get(f"{base}/readyz", auth=auth, timeout=2).text)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err
        slack_requests = stub.requests
        sim_requests = sim.requests

    # The session really went through the error paths.
    messages = [json.loads(line)["message"] for line in err.splitlines() if line.strip()]
    assert any("unauthorized" in m for m in messages), messages
    assert any("retrying" in m for m in messages), messages
    assert any(r.status == 500 for r in slack_requests)
    assert any(r.host == "download" for r in sim_requests)

    # Logs and exceptions (tracebacks are in the JSON lines' text).
    assert leaks(out + err) == []
    # Metrics, probes and a refused scrape.
    assert leaks("\n".join(scrapes)) == []
    # Slack: the token only as the bearer of the Web API calls.
    for posted in slack_requests:
        others = {k: v for k, v in posted.headers.items() if k != "authorization"}
        assert leaks(json.dumps([posted.path, others, posted.body], default=str)) == []
        assert posted.headers.get("authorization") == f"Bearer {SLACK_TOKEN}"
    # Langdock: the key only in the API host's Authorization header, never on the download host.
    for request in sim_requests:
        everything = json.dumps(
            [request.path, request.query, request.headers, request.body.decode("latin-1")]
        )
        if request.host == "download":
            assert leaks(everything) == [], request.path
            assert "authorization" not in request.headers
        else:
            others = {k: v for k, v in request.headers.items() if k != "authorization"}
            rest = json.dumps([request.path, request.query, others, request.body.decode()])
            assert leaks(rest) == []
            assert request.headers["authorization"] == f"Bearer {LANGDOCK_KEY}"
    # The state file (outbox errors, payloads), with its WAL.
    for file in tmp_path.glob("state.db*"):
        assert leaks(file.read_bytes().decode("latin-1")) == [], file.name

    # Hostile key names survive the exposition intact (quotes, commas, a mention, non-ASCII).
    good = next(s for s in reversed(scrapes) if "costwatch_key_spend_usd{" in s)
    names = {
        sample.labels["api_key_name"]
        for family in text_string_to_metric_families(good)
        if family.name == "costwatch_key_spend_usd"
        for sample in family.samples
    }
    assert names == set(KEY_NAMES[:KEYS])
