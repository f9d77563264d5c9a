"""What `costwatch run` says while it works: one INFO line per cycle, one WARNING per problem.

Real processes (`python -m costwatch --log-format json run`) against the simulator and the
Slack stand-in; their stderr is read as JSON lines, their /metrics scraped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import free_port, wait_for, write_daemon_config
from prometheus_client.parser import text_string_to_metric_families
from slackstub import TOKEN, SlackStub

from costwatch.simulator import Simulator, Workspace

SECRET = "sk-lang-LOGS-SECRET-0042"
EVERY_KEY = """\
  - name: every-key
    keys: "*"
    limits: {cost_usd: 0.5}
"""
TOKENS_ONLY = """\
  - name: tokens-cap
    keys: "*"
    limits: {tokens: 1000000}
"""
SKIPPED = "a cycle is still running (for "  # a run due while one runs: a loaded machine
# What may be said at INFO besides the one line per cycle: starting and stopping.
START_AND_STOP = ("metrics on ", "costwatch started: ", "SIGTERM received", "costwatch stopped")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=6), api_key=SECRET) as server:  # not BYOK: no tokens
        yield server


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(retry_after=0) as server:
        server.add_channel("#ai-spend")
        yield server


def samples(base: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    scrape = httpx.get(f"{base}/metrics", timeout=5).text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == name
    }


def run_daemon(
    config: Path, port: int, until: Callable[[str], bool], seconds: float = 60
) -> tuple[list[dict[str, Any]], dict[str, dict[tuple[tuple[str, str], ...], float]]]:
    """Run `costwatch run` until `until(base_url)`, scrape, SIGTERM; its log lines, scraped."""
    env = {**os.environ, "LANGDOCK_API_KEY": SECRET, "SLACK_BOT_TOKEN": TOKEN}
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "costwatch", "--log-format", "json", "run"]
    process = subprocess.Popen(
        [*command, "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: until(base), seconds, "the daemon to get there")
        scraped = {
            name: samples(base, name)
            for name in ("costwatch_budgets_unevaluated", "costwatch_slack_errors_total")
        }
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    return [json.loads(line) for line in err.splitlines() if line.strip()], scraped


def cycles_done(base: str) -> float:
    try:
        found = samples(base, "costwatch_cycles_total")
    except httpx.TransportError:
        return 0
    return found.get((("outcome", "ok"),), 0)


def test_run_logs_one_info_line_per_cycle_and_a_slack_503_as_one_warning_with_the_status(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    port = free_port()
    budgets = EVERY_KEY + TOKENS_ONLY
    config = write_daemon_config(tmp_path / "costwatch.yaml", sim, stub, port, budgets)
    stub.fail_next(503, times=3)  # the first post and slack_sdk's two retries
    lines, scraped = run_daemon(
        config, port, lambda base: cycles_done(base) >= 4 and len(stub.posts()) >= 1
    )
    # On a loaded machine a cycle can outlast the 1 s interval: the run due meanwhile is
    # skipped, in a line of its own (INFO; WARNING once the running cycle is over an interval
    # old). The machine's doing, not this test's: those lines are left out of what follows.
    lines = [line for line in lines if not line["message"].startswith(SKIPPED)]
    info = [line["message"] for line in lines if line["level"] == "info"]
    cycles = [m for m in info if m.startswith("cycle ok in ")]
    assert len(cycles) >= 4
    # the history's keeper says once that days are missing (it exports them in its own
    # thread, a DEBUG line per day); everything else at INFO is start, cycles and stop
    history = [m for m in info if m.startswith("history: ")]
    assert [m.split(" to export")[0].split()[-2:] for m in history] == [["closed", "day(s)"]]
    # on a loaded machine the SIGTERM may land inside a cycle: that is one INFO line saying
    # so (never an error), and that cycle may have warned already
    cut = [m for m in info if m.startswith("cycle interrupted by shutdown")]
    assert len(cut) <= 1, cut
    others = [m for m in info if m not in cycles and m not in history and m not in cut]
    assert all(m.startswith(START_AND_STOP) for m in others), others
    assert len(others) == len(START_AND_STOP)
    warnings = [line["message"] for line in lines if line["level"] == "warning"]
    unevaluated = [m for m in warnings if "not evaluated" in m]
    # one WARNING per cycle, naming the budget
    assert len(cycles) <= len(unevaluated) <= len(cycles) + len(cut)
    assert "budget 'tokens-cap': its tokens limit is not evaluated" in unevaluated[0]
    problems = [m for m in warnings if "not evaluated" not in m]
    assert len(problems) == 1, problems
    (failed,) = problems
    assert failed.startswith("Slack delivery to #ai-spend failed: http_503")
    assert [line for line in lines if line["level"] == "error"] == []
    assert not any("maximum number of running instances" in line["message"] for line in lines)
    budget = (("budget", "tokens-cap"), ("reason", "export_has_no_tokens"))
    assert scraped["costwatch_budgets_unevaluated"] == {budget: 1.0}
    assert scraped["costwatch_slack_errors_total"][(("error", "http_503"),)] == 1.0
    assert scraped["costwatch_slack_errors_total"][(("error", "timeout"),)] == 0.0


def test_a_slow_slack_never_makes_apscheduler_skip_a_job(
    tmp_path: Path, sim: Simulator, stub: SlackStub
) -> None:
    # The first post takes 3.5 s while cycles and delivery retries are due every second.
    port = free_port()
    config = write_daemon_config(tmp_path / "costwatch.yaml", sim, stub, port, EVERY_KEY)
    stub.delay_next(3.5)
    lines, _ = run_daemon(config, port, lambda base: cycles_done(base) >= 6 and stub.posts() != [])
    messages = [line["message"] for line in lines]
    assert not any("maximum number of running instances" in m for m in messages), messages
    assert [line for line in lines if line["level"] == "error"] == []
