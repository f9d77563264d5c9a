"""deploy/prometheus and deploy/grafana: promtool, a real Prometheus scraping costwatch, Grafana.

The live tests share one stack for the module: the Langdock simulator, a Slack stand-in,
costwatch's daemon in a thread (cycles every second) and Debian's `prometheus` server on
loopback, started from a copy of `deploy/prometheus/prometheus.yml` whose target is rewritten
to the running costwatch and whose intervals are 1 s. costwatch is made to produce every
metric the rules and the dashboard use: budgets small enough to cross 100%, the default Slack
channel archived in the stand-in (a Slack error at every retry, alerts left pending; a budget
with its own channel still gets its alerts sent) and, once Prometheus has scraped the failure
counters at 0, one cycle whose export fails (an export failure with reason server_error).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from loopback import free_port, write_daemon_config
from prometheus_client.parser import text_string_to_metric_families
from promtool import promtool
from slackstub import TOKEN, SlackStub

from costwatch.daemon import Daemon
from costwatch.simulator import Simulator, Workspace

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "costwatch_rules.yml"
RULES_TEST = PROMETHEUS_DIR / "costwatch_rules_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "costwatch.json"
DATASOURCE_PROVISIONING = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVISIONING = GRAFANA_DIR / "provisioning" / "dashboards" / "costwatch.yml"
COMPOSE_DASHBOARD_DIR = "/var/lib/grafana/dashboards"  # where Compose mounts dashboards/

SECRET = "sk-lang-MONITORING-SECRET-0042"
LIVE_TIMEOUT = 45.0  # seconds to wait for Prometheus to have every series
NEVER = "0001-01-01T00:00:00Z"  # lastEvaluation of a rule Prometheus has not evaluated yet
# Grafana's variables, replaced by what Grafana would send for a short range at a 1 s scrape.
GRAFANA_VARIABLES = {
    "${datasource}": "Prometheus",
    "$datasource": "Prometheus",
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_NAME = re.compile(r"\bcostwatch_[a-zA-Z0-9_]+")
# A rule whose expression is a condition `<metric part> <op> <number>`.
CONDITION = re.compile(r"(?P<lhs>.+?)\s*(?:==|!=|>=|<=|>|<)\s*(?P<rhs>[0-9][0-9.eE+]*)", re.S)
ABSENT = re.compile(r"absent\((?P<inner>.+)\)", re.S)


# --- reading the deploy files ---------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    groups = load_yaml(RULES)["groups"]
    assert [group["name"] for group in groups] == ["costwatch"]
    found: list[dict[str, Any]] = groups[0]["rules"]
    return found


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[str]:
    """Every panel's PromQL with Grafana's variables replaced by concrete values."""
    queries = []
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            assert "$" not in query, f"unreplaced variable in {panel['title']!r}: {query}"
            queries.append(query)
    return queries


def metric_part(expr: str) -> str:
    """The part of a rule expression that must return series while costwatch runs.

    A condition (`up{job="costwatch"} == 0`, `costwatch_alerts_pending > 0`) is empty while
    all is well, which proves nothing about the metric; its left-hand side returns the
    metric's series whatever their value. `absent(x)` is empty while x exists: query x.
    """
    expr = expr.strip()
    absent = ABSENT.fullmatch(expr)
    if absent is not None:
        return absent["inner"]
    condition = CONDITION.fullmatch(expr)
    return condition["lhs"] if condition is not None else expr


def referenced_metrics() -> dict[str, str]:
    """Every costwatch_* name in panel expressions and rule expressions/annotations -> where."""
    names: dict[str, str] = {}
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            for name in METRIC_NAME.findall(target["expr"]):
                names.setdefault(name, f"panel {panel['title']!r}")
    for rule in rules():
        texts = [rule["expr"], *rule.get("annotations", {}).values()]
        for name in METRIC_NAME.findall(" ".join(texts)):
            names.setdefault(name, f"rule {rule['alert']}")
    return names


# --- promtool -------------------------------------------------------------------------------


def run_promtool(*arguments: str) -> None:
    done = subprocess.run(
        [str(promtool()), *arguments],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"promtool {' '.join(arguments)}:\n{done.stdout}\n{done.stderr}"


def test_promtool_check_config_accepts_the_scrape_config_and_its_rule_file() -> None:
    run_promtool("check", "config", PROMETHEUS_CONFIG.name)


def test_promtool_check_rules_accepts_the_alert_rules() -> None:
    run_promtool("check", "rules", RULES.name)


def test_promtool_test_rules_passes_every_rule_unit_test() -> None:
    run_promtool("test", "rules", RULES_TEST.name)


def test_every_rule_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    tests = load_yaml(RULES_TEST)["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for rule in rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{rule['alert']} never fires"
        assert any(not check["exp_alerts"] for check in mine), f"{rule['alert']} always fires"


def test_every_rule_has_a_severity_summary_and_a_runbook_hint() -> None:
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts)) == 9
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert "Runbook:" in rule["annotations"]["description"], rule["alert"]


def test_prometheus_config_scrapes_costwatch_in_compose_every_30s_with_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["costwatch_rules.yml"]
    assert config["global"]["scrape_interval"] == "30s"
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "costwatch"
    assert job["scrape_interval"] == "30s"
    assert job["static_configs"] == [{"targets": ["costwatch:9108"]}]


# --- Grafana files --------------------------------------------------------------------------


def test_provisioning_points_at_prometheus_and_the_dashboard_folder_compose_mounts() -> None:
    datasources = load_yaml(DATASOURCE_PROVISIONING)
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["name"] == "Prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"

    providers = load_yaml(DASHBOARD_PROVISIONING)
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == COMPOSE_DASHBOARD_DIR
    assert DASHBOARD.parent.name == Path(COMPOSE_DASHBOARD_DIR).name


def test_dashboard_uses_the_datasource_variable_on_every_panel_and_query() -> None:
    board = dashboard()
    assert 39 <= board["schemaVersion"] <= 41
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


# --- the live stack -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    costwatch: str  # http://127.0.0.1:port of costwatch's metrics server
    prometheus: str  # http://127.0.0.1:port of Prometheus


def wait_until_ready(url: str, seconds: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {url}")


def write_costwatch_config(path: Path, sim: Simulator, stub: SlackStub, port: int) -> Path:
    # every-key: cost over 0.5 USD per key, alerts to #team (delivered: alerts sent).
    # pool: all keys share 1 request (far over 100%), alerts to slack.channel, which the
    # stand-in says is archived: refused at every retry (Slack errors), left pending.
    budgets = """\
  - name: every-key
    keys: "*"
    limits: {cost_usd: 0.5}
    channel: "#team"
  - name: pool
    keys: "*"
    scope: shared
    limits: {requests: 1}
"""
    return write_daemon_config(path, sim, stub, port, budgets)


def prometheus_binary() -> Path:
    """Debian's `prometheus` package ships the server beside promtool."""
    beside = promtool().parent / "prometheus"
    if beside.exists():
        return beside
    found = shutil.which("prometheus")
    assert found is not None, "the prometheus package installed promtool but no server"
    return Path(found)


def write_prometheus_config(directory: Path, target: str) -> Path:
    """deploy/prometheus/prometheus.yml scraping `target` every second, rules by absolute path."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [target]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("monitoring")
    with (
        pytest.MonkeyPatch.context() as env,
        Simulator(Workspace(keys=6), api_key=SECRET) as sim,
        SlackStub() as stub,
    ):
        env.setenv("LANGDOCK_API_KEY", SECRET)
        env.setenv("SLACK_BOT_TOKEN", TOKEN)
        stub.add_channel("#ai-spend", archived=True)
        stub.add_channel("#team")
        port = free_port()
        daemon = Daemon.from_path(
            write_costwatch_config(directory / "costwatch.yaml", sim, stub, port)
        )
        runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        runner.start()
        try:
            costwatch = f"http://127.0.0.1:{port}"
            wait_until_ready(f"{costwatch}/readyz", 30, None)
            with run_prometheus(directory, f"127.0.0.1:{port}") as prometheus:
                # increase() needs the counter seen before the failure: wait for a scrape at 0,
                # then fail one cycle's export (both attempts).
                wait_for_data(prometheus, ["costwatch_export_failures_total == 0"])
                sim.faults.fail_export(500, times=2)
                yield Stack(costwatch=costwatch, prometheus=prometheus)
        finally:
            daemon.stop()
            runner.join(timeout=30)
    assert not runner.is_alive()


@contextlib.contextmanager
def run_prometheus(directory: Path, target: str) -> Iterator[str]:
    """The Prometheus server on a free loopback port, its output in a log file, always stopped."""
    config = write_prometheus_config(directory, target)
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(prometheus_binary()),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(f"{url}/-/ready", 30, process)
        except AssertionError as error:
            raise AssertionError(
                f"{error}\n{log_path.read_text(errors='replace')[-3000:]}"
            ) from None
        yield url
    finally:
        stop_process(process)


def query(client: httpx.Client, prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = client.get(f"{prometheus}/api/v1/query", params={"query": promql})
    body = response.json()
    assert response.status_code == 200, f"{promql}: {body}"
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for_data(prometheus: str, queries: list[str]) -> None:
    """Poll until every query returns at least one series; fail naming those that never did."""
    missing = list(dict.fromkeys(queries))
    deadline = time.monotonic() + LIVE_TIMEOUT
    with httpx.Client(timeout=5.0) as client:
        while missing and time.monotonic() < deadline:
            missing = [promql for promql in missing if not query(client, prometheus, promql)]
            if missing:
                time.sleep(0.5)
    assert not missing, f"no data after {LIVE_TIMEOUT}s for:\n" + "\n".join(missing)


def test_prometheus_scrapes_costwatch_and_every_dashboard_query_returns_data(
    stack: Stack,
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    wait_for_data(stack.prometheus, queries)


def test_every_rule_expressions_metric_part_returns_data_from_live_costwatch(
    stack: Stack,
) -> None:
    # Conditions are checked by their metric part (see metric_part): e.g. up{job="costwatch"}
    # for `up{job="costwatch"} == 0`, and the inner selector of absent(...).
    parts = [metric_part(rule["expr"]) for rule in rules()]
    assert 'up{job="costwatch"}' in parts
    assert all(not CONDITION.fullmatch(part) for part in parts)
    wait_for_data(stack.prometheus, parts)


def test_prometheus_evaluates_every_rule_and_fires_those_costwatch_was_made_to_trigger(
    stack: Stack,
) -> None:
    # The provoked conditions are true in full (budget over 100%, an export failure, Slack
    # refusals to the archived channel, alerts pending), and the rules without `for` fire.
    provoked = {
        "CostwatchBudgetExceeded",
        "CostwatchExportFailing",
        "CostwatchSlackErrors",
        "CostwatchAlertsStuck",
    }
    wait_for_data(stack.prometheus, [r["expr"] for r in rules() if r["alert"] in provoked])
    firing_now = {r["alert"] for r in rules() if r["alert"] in provoked and "for" not in r}
    deadline = time.monotonic() + LIVE_TIMEOUT
    with httpx.Client(timeout=5.0) as client:
        while True:
            groups = client.get(f"{stack.prometheus}/api/v1/rules").json()["data"]["groups"]
            loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
            alerts = client.get(f"{stack.prometheus}/api/v1/alerts").json()["data"]["alerts"]
            firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
            evaluated = all(r["lastEvaluation"] != NEVER for r in loaded.values())
            if (firing_now <= firing and evaluated) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert set(loaded) == {rule["alert"] for rule in rules()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
    assert firing_now <= firing, f"firing: {sorted(firing)}"
    assert "CostwatchDown" not in firing
    assert "CostwatchAbsent" not in firing
    budget = next(a for a in alerts if a["labels"]["alertname"] == "CostwatchBudgetExceeded")
    assert {"budget", "subject", "metric", "model"} <= set(budget["labels"])
    assert budget["labels"]["budget"] in budget["annotations"]["description"]


def test_dashboard_and_rules_reference_only_metrics_costwatch_exports(stack: Stack) -> None:
    # Scrape once Prometheus has every series, so the snapshot and Slack families are filled.
    wait_for_data(stack.prometheus, dashboard_queries())
    scrape = httpx.get(f"{stack.costwatch}/metrics", timeout=5.0).text
    families = list(text_string_to_metric_families(scrape))
    exported = {family.name for family in families}
    exported |= {sample.name for family in families for sample in family.samples}
    histograms = {family.name for family in families if family.type == "histogram"}
    referenced = referenced_metrics()
    assert len(referenced) >= 15
    unknown = []
    for name, where in sorted(referenced.items()):
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
                base = name.removesuffix(suffix)
        if base not in exported:
            unknown.append(f"{name} ({where})")
    assert not unknown, "not in costwatch's /metrics: " + ", ".join(unknown)
