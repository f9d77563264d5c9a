"""The replicas variant of the deployment: Kubernetes (`deploy/kubernetes-replicas`, an overlay
of `deploy/kubernetes`), Compose's `postgres` profile and the dashboard's leader panel, read
and checked against the code: two replicas, no volume, a PodDisruptionBudget, the state URL
from the Secret, probes that keep a standby alive but not ready."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from costwatch.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "kubernetes"
REPLICAS = ROOT / "deploy" / "kubernetes-replicas"
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
SECRETS = {
    "LANGDOCK_API_KEY": "sk-test",
    "SLACK_BOT_TOKEN": "xoxb-test",
    "COSTWATCH_STATE_URL": "postgresql://costwatch:pw@db:5432/costwatch",
}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_overlay_builds_on_the_base_with_two_replicas_no_volume_and_a_budget() -> None:
    kustomization = load(REPLICAS / "kustomization.yaml")
    assert kustomization["resources"] == ["../kubernetes", "poddisruptionbudget.yaml"]
    patch = load(REPLICAS / "deployment-patch.yaml")
    assert patch["spec"]["replicas"] == 2
    assert patch["spec"]["strategy"]["type"] == "RollingUpdate"
    deleted = [p["patch"] for p in kustomization["patches"] if "patch" in p]
    assert any("kind: PersistentVolumeClaim" in p and "$patch: delete" in p for p in deleted)
    pod = patch["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "state", "$patch": "delete"}]
    (container,) = pod["containers"]
    (url,) = container["env"]
    assert url["valueFrom"]["secretKeyRef"] == {
        "name": "costwatch-secrets",
        "key": "COSTWATCH_STATE_URL",
    }
    secret = load(BASE / "secret.example.yaml")
    assert "COSTWATCH_STATE_URL" in secret["stringData"]
    budget = load(REPLICAS / "poddisruptionbudget.yaml")
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"]["minAvailable"] == 1
    base = load(BASE / "deployment.yaml")
    assert budget["spec"]["selector"]["matchLabels"] == base["spec"]["selector"]["matchLabels"]


def test_the_replicas_config_is_the_container_config_but_for_the_state() -> None:
    replicas = load(REPLICAS / "costwatch.yaml")
    container = load(ROOT / "config" / "costwatch.yaml")
    assert {k: v for k, v in replicas.items() if k != "state"} == {
        k: v for k, v in container.items() if k != "state"
    }
    config = parse_config(
        (REPLICAS / "costwatch.yaml").read_text(encoding="utf-8"),
        source="costwatch.yaml",
        env=SECRETS,
    )
    assert config.state.url is not None
    assert config.state.where() == "postgresql://costwatch@db:5432/costwatch"


def test_compose_has_a_postgres_profile_with_two_replicas_on_one_database() -> None:
    services = load(COMPOSE)["services"]
    replicas, postgres = services["costwatch-replicas"], services["postgres"]
    assert replicas["profiles"] == postgres["profiles"] == ["postgres"]
    assert replicas["deploy"]["replicas"] == 2
    assert "@postgres:5432/" in replicas["environment"]["COSTWATCH_STATE_URL"]
    assert replicas["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not any("costwatch-state" in str(v) for v in replicas.get("volumes", []))
    assert replicas["volumes"] == ["../kubernetes-replicas:/etc/costwatch:ro"]
    assert replicas["command"] == ["run", "--config", "/etc/costwatch/costwatch.yaml"]
    assert ":" in postgres["image"]
    assert postgres["image"].split(":")[1][0].isdigit()  # pinned by version
    assert "costwatch" in replicas["networks"]["default"]["aliases"]


def test_the_dashboard_shows_the_leader_of_each_replica() -> None:
    dashboard = json.loads(
        (ROOT / "deploy/grafana/dashboards/costwatch.json").read_text(encoding="utf-8")
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert "costwatch_leader" in exprs
