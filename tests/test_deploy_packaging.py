"""Deployment packaging: the Dockerfile, the lock, Compose and Kubernetes agree with the code.

No Docker engine runs in CI, so each piece is proved without one: the Dockerfile is read for
what it promises (non-root UID, exec-form entrypoint, health check, port, volume, config path)
and its install steps are run for real into a fresh venv; the manifests are parsed and every
name, port, path and probe is checked against `costwatch.config`'s defaults and the routes the
metrics server really answers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from costwatch.config import MetricsConfig, StateConfig, parse_config
from costwatch.metrics import Metrics, MetricsServer

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
CONTAINER_CONFIG = ROOT / "config" / "costwatch.yaml"
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
KUBERNETES = ROOT / "deploy" / "kubernetes"

UID = 10001
CONFIG_IN_IMAGE = "/etc/costwatch/config.yaml"
PORT = MetricsConfig().port
STATE_DIR = str(StateConfig().path.parent)
HEALTHZ, READYZ = "/healthz", "/readyz"
SECRETS = {"LANGDOCK_API_KEY": "dummy-langdock-key", "SLACK_BOT_TOKEN": "xoxb-dummy"}
# The install step the Dockerfile runs and the slow test repeats (pip's cache allowed here).
PIP_INSTALL = ["install", "--only-binary=:all:", "--constraint", "requirements.lock"]
DEV_TOOLS = ("pytest", "mypy", "ruff", "hypothesis")


# --- reading the Dockerfile ------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 for the first FROM's stage, and so on
    keyword: str
    args: str


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    result: list[Instruction] = []
    stage = -1
    for line in joined:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(stage, keyword, args.strip()))
    return result


def final(keyword: str) -> list[Instruction]:
    """The instructions with this keyword in the last stage (the image that ships)."""
    found = instructions()
    last = max(instruction.stage for instruction in found)
    return [i for i in found if i.keyword == keyword and i.stage == last]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} is not in exec form (a JSON array)"
    assert all(isinstance(item, str) for item in value)
    return [str(item) for item in value]


def test_dockerfile_runs_as_the_fixed_non_root_uid_10001() -> None:
    users = final("USER")
    assert len(users) == 1
    user, _, group = users[0].args.partition(":")
    assert user == str(UID), "a numeric UID, so runAsNonRoot can verify it"
    assert group == str(UID)
    runs = " ".join(i.args for i in final("RUN"))
    assert f"--uid {UID}" in runs
    assert f"--gid {UID}" in runs
    assert f"install -d -o {UID} -g {UID} -m 0750 {STATE_DIR}" in runs, "the state dir is theirs"


def test_dockerfile_entrypoint_is_exec_form_and_cmd_runs_the_config_the_image_copies() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    (cmd,) = final("CMD")
    assert exec_form(entrypoint) == ["costwatch"]
    assert exec_form(cmd) == ["run", "--config", CONFIG_IN_IMAGE]
    copies = [i.args.split() for i in final("COPY")]
    assert ["config/costwatch.yaml", CONFIG_IN_IMAGE] in copies


def healthcheck() -> tuple[str, list[str]]:
    """The final stage's HEALTHCHECK as (options, exec-form command)."""
    (check,) = final("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    argv = json.loads(command)
    assert isinstance(argv, list)
    return options, [str(item) for item in argv]


def image_env() -> dict[str, str]:
    """The final stage's ENV as {name: value} (`ENV A=1 B=2` form)."""
    pairs = " ".join(i.args for i in final("ENV")).split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_dockerfile_healthcheck_gets_healthz_with_python_from_the_listen_variable() -> None:
    options, argv = healthcheck()
    assert "--interval=" in options
    assert argv[:2] == ["python", "-c"], "python, not curl: the slim image has no curl"
    assert "COSTWATCH_METRICS_LISTEN" in argv[2]
    assert HEALTHZ in argv[2]
    assert str(PORT) not in argv[2], "the port comes from the environment, not the command"


@pytest.mark.parametrize(
    "listen",
    ["0.0.0.0:{port}", "127.0.0.1:{port}", "localhost:{port}"],
)
def test_the_healthcheck_command_exits_0_against_healthz_at_the_listen_address(
    listen: str,
) -> None:
    probes: list[str] = []

    def ok() -> tuple[bool, str]:
        probes.append("healthz")
        return True, "ok"

    _, argv = healthcheck()
    with MetricsServer(
        Metrics().exposition_parts, host="127.0.0.1", port=0, healthz=ok, readyz=ok
    ) as server:
        env = {**os.environ, "COSTWATCH_METRICS_LISTEN": listen.format(port=server.port)}
        done = subprocess.run(
            [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
        )
    assert done.returncode == 0, done.stderr
    assert probes == ["healthz"], "this server answered, not whatever listens on the default"


def test_the_healthcheck_command_fails_when_healthz_fails_or_nothing_listens() -> None:
    def failing() -> tuple[bool, str]:
        return False, "scheduler stopped"

    _, argv = healthcheck()
    with MetricsServer(
        Metrics().exposition_parts, host="127.0.0.1", port=0, healthz=failing, readyz=failing
    ) as server:
        port = server.port
        env = {**os.environ, "COSTWATCH_METRICS_LISTEN": f"0.0.0.0:{port}"}
        unhealthy = subprocess.run(
            [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
        )
    assert unhealthy.returncode != 0
    assert b"HTTP Error 503" in unhealthy.stderr or b"HTTPError" in unhealthy.stderr
    gone = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    assert gone.returncode != 0
    assert b"Connection refused" in gone.stderr


def test_dockerfile_sets_the_listen_variable_to_the_config_default_and_exposed_port() -> None:
    listen = image_env()["COSTWATCH_METRICS_LISTEN"]
    assert listen == MetricsConfig().listen
    assert [i.args for i in final("EXPOSE")] == [listen.rpartition(":")[2]]


def test_dockerfile_exposes_the_port_metrics_listen_defaults_to() -> None:
    assert [i.args for i in final("EXPOSE")] == [str(PORT)]


def test_dockerfile_is_multi_stage_on_a_python_311_slim_base_pinned_by_version() -> None:
    found = instructions()
    stages = [i for i in found if i.keyword == "FROM"]
    assert len(stages) >= 2
    assert any("COPY --from=build /opt/venv /opt/venv" in f"COPY {i.args}" for i in final("COPY"))
    (image_arg,) = [i for i in found if i.keyword == "ARG" and i.args.startswith("PYTHON_IMAGE")]
    image = image_arg.args.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    for stage in stages:
        assert stage.args.split()[0] == "${PYTHON_IMAGE}"
        assert "latest" not in stage.args


def test_dockerfile_declares_the_state_directory_as_a_volume() -> None:
    (volume,) = final("VOLUME")
    assert exec_form(volume) == [STATE_DIR]


def test_dockerfile_keeps_the_root_filesystem_read_only_friendly() -> None:
    env = " ".join(i.args for i in final("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "TMPDIR=/tmp" in env


def test_dockerfile_labels_the_image_with_the_oci_annotations() -> None:
    labels = " ".join(i.args for i in final("LABEL"))
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels


def test_dockerfile_builds_the_wheel_alone_and_installs_it_constrained_by_the_lock() -> None:
    runs = " ".join(i.args for i in instructions() if i.keyword == "RUN" and i.stage == 0)
    assert "python -m pip wheel --no-deps" in runs
    assert "/opt/venv/bin/python -m pip " + " ".join(PIP_INSTALL) in runs


def test_dockerignore_keeps_the_venv_tests_caches_bench_data_and_git_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".venv", "tests", ".pytest_cache", ".mypy_cache", "bench", ".git"):
        assert entry in ignored


# --- the lock and the install ----------------------------------------------------------------


def locked() -> dict[str, Version]:
    """requirements.lock as {canonical name: version}; every line must be `name==version`."""
    pins: dict[str, Version] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line.strip())
        assert match, f"not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in project["dependencies"]]


def test_lock_pins_every_runtime_dependency_to_a_version_pyproject_allows() -> None:
    pins = locked()
    assert LOCK.read_text(encoding="utf-8").startswith("#"), "a header says how to regenerate"
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert not set(pins) & {canonicalize_name(tool) for tool in DEV_TOOLS}


def run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=150, check=False
    )


@pytest.mark.slow
def test_wheel_installs_with_only_locked_runtime_deps_and_validates_and_runs_the_demo(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **SECRETS}
    env.pop("VIRTUAL_ENV", None)
    wheels = tmp_path / "wheels"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=ROOT,
        env=env,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("costwatch-*.whl")

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    installed = run([str(python), "-m", "pip", *PIP_INSTALL, str(wheel)], cwd=ROOT, env=env)
    assert installed.returncode == 0, installed.stderr

    frozen = run([str(python), "-m", "pip", "freeze", "--exclude", "costwatch"], cwd=ROOT, env=env)
    assert frozen.returncode == 0, frozen.stderr
    pins = {
        canonicalize_name(name): Version(version)
        for name, _, version in (line.partition("==") for line in frozen.stdout.split())
    }
    assert pins == locked(), "the lock is the venv's whole content: nothing resolved unpinned"
    assert not set(pins) & {canonicalize_name(tool) for tool in DEV_TOOLS}

    costwatch = str(target / "bin" / "costwatch")
    valid = run([costwatch, "validate", "--config", str(CONTAINER_CONFIG)], cwd=tmp_path, env=env)
    assert valid.returncode == 0, valid.stdout + valid.stderr

    # From tmp_path, so the demo finds its config inside the wheel, not in this checkout.
    demo_env = {k: v for k, v in env.items() if not k.startswith("COSTWATCH_DEMO_")}
    demo = run([costwatch, "demo", "--once"], cwd=tmp_path, env=demo_env)
    assert demo.returncode == 0, demo.stderr
    assert re.search(r"KEY\s+ID\s+SPEND\s+REQUESTS", demo.stdout), demo.stdout
    assert "support-bot-prod" in demo.stdout
    assert "TOTAL" in demo.stdout


# --- the container's default configuration ---------------------------------------------------


def test_container_config_validates_and_uses_the_image_paths() -> None:
    config = parse_config(
        CONTAINER_CONFIG.read_text(encoding="utf-8"), source=str(CONTAINER_CONFIG), env=SECRETS
    )
    assert config.state.path == StateConfig().path
    assert config.metrics.listen == f"0.0.0.0:{PORT}"
    assert config.sole_langdock().secret_api_key() == SECRETS["LANGDOCK_API_KEY"]
    assert config.slack is not None
    assert config.slack.secret_token() == SECRETS["SLACK_BOT_TOKEN"]
    assert config.budgets


def test_container_config_reads_no_secret_from_the_file_itself() -> None:
    text = CONTAINER_CONFIG.read_text(encoding="utf-8")
    assert "${LANGDOCK_API_KEY}" in text
    assert "${SLACK_BOT_TOKEN}" in text


# --- Kubernetes ------------------------------------------------------------------------------

Manifest = dict[str, Any]


def kustomization() -> Manifest:
    loaded = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resources() -> Iterator[Manifest]:
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text(encoding="utf-8")):
            if document is not None:
                yield document


def one(kind: str) -> Manifest:
    (found,) = [r for r in resources() if r["kind"] == kind]
    return found


def container() -> Manifest:
    (only,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def test_kubernetes_manifests_parse_and_kustomization_lists_files_that_exist() -> None:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        assert all(isinstance(d, dict) for d in yaml.safe_load_all(path.read_text("utf-8")))
    listed = kustomization()["resources"]
    for name in listed:
        assert (KUBERNETES / name).is_file(), name
    kinds = sorted(r["kind"] for r in resources())
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceMonitor"]
    )
    assert "secret.example.yaml" not in listed, "an example secret is never applied"


def test_kubernetes_deployment_is_one_replica_recreated_and_locked_down() -> None:
    deployment = one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "SQLite on one ReadWriteOnce volume"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert set(container()["resources"]) == {"requests", "limits"}
    assert container()["args"] == ["run", "--config", CONFIG_IN_IMAGE]


def test_kubernetes_grace_period_outlasts_costwatch_shutdown_grace() -> None:
    config = parse_config(CONTAINER_CONFIG.read_text(encoding="utf-8"), env=SECRETS)
    grace = one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert config.schedule.shutdown_grace.total_seconds() < grace


def test_kubernetes_ports_probes_and_mounts_agree_with_the_code_defaults() -> None:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {"metrics": PORT}
    probes = {
        kind: container()[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == HEALTHZ
    assert probes["startupProbe"]["path"] == HEALTHZ
    assert probes["readinessProbe"]["path"] == READYZ
    assert all(probe["port"] in ("metrics", PORT) for probe in probes.values())

    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert mounts["state"] == STATE_DIR
    assert mounts["config"] == str(PurePosixPath(CONFIG_IN_IMAGE).parent)
    assert mounts["tmp"] == "/tmp"
    volumes = {v["name"]: v for v in one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert set(volumes) == set(mounts)
    assert "emptyDir" in volumes["tmp"]


def test_kubernetes_references_resolve_between_resources() -> None:
    pod = one("Deployment")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    configmap = one("ConfigMap")
    assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert PurePosixPath(CONFIG_IN_IMAGE).name in configmap["data"]
    pvc = one("PersistentVolumeClaim")
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]

    (secret,) = yaml.safe_load_all((KUBERNETES / "secret.example.yaml").read_text("utf-8"))
    from_secret = [v for v in container()["env"] if "valueFrom" in v]
    for variable in from_secret:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]
    assert {v["name"] for v in from_secret} == set(SECRETS), "the secrets, and only they"

    labels = pod["metadata"]["labels"]
    deployment_selector = one("Deployment")["spec"]["selector"]["matchLabels"]
    assert deployment_selector.items() <= labels.items()
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == PORT
    assert service_port["targetPort"] in ("metrics", PORT)

    monitor = one("ServiceMonitor")
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert monitor["spec"]["endpoints"][0]["port"] == service_port["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_kubernetes_configmap_is_the_container_config_and_validates() -> None:
    text = one("ConfigMap")["data"][PurePosixPath(CONFIG_IN_IMAGE).name]
    assert text == CONTAINER_CONFIG.read_text(encoding="utf-8"), "keep the two files equal"
    config = parse_config(text, source="configmap.yaml", env=SECRETS)
    assert config.metrics.port == PORT
    assert config.state.path == StateConfig().path


def test_metrics_server_answers_the_paths_the_probes_and_scrapes_use() -> None:
    def ok() -> tuple[bool, str]:
        return True, "ok"

    with MetricsServer(
        Metrics().exposition_parts, host="127.0.0.1", port=0, healthz=ok, readyz=ok
    ) as server:
        base = f"http://127.0.0.1:{server.port}"
        for path in (HEALTHZ, READYZ, "/metrics"):
            with urllib.request.urlopen(base + path, timeout=5) as answer:  # noqa: S310
                assert answer.status == 200, path
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nothing-here", timeout=5)  # noqa: S310
        assert missing.value.code == 404
        missing.value.close()


def cronjob() -> Manifest:
    (loaded,) = yaml.safe_load_all((KUBERNETES / "cronjob.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_kubernetes_cronjob_runs_check_one_at_a_time_with_the_deployments_pod() -> None:
    job = cronjob()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "CronJob")
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid", "two checks would deliver the same rows"
    assert "cronjob.yaml" not in kustomization()["resources"], "the daemon or the cron job"
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 0
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    daemon = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == daemon["securityContext"]
    assert pod["volumes"] == daemon["volumes"]
    (cron,) = pod["containers"]
    for same in ("env", "volumeMounts", "securityContext", "resources"):
        assert cron[same] == container()[same], same
    assert cron["args"][:3] == ["check", "--config", CONFIG_IN_IMAGE]
    config = parse_config(CONTAINER_CONFIG.read_text(encoding="utf-8"), env=SECRETS)
    delivery = float(cron["args"][cron["args"].index("--delivery-timeout") + 1].rstrip("s"))
    export = (
        config.sole_langdock().retry_max_elapsed_seconds + config.sole_langdock().timeout_seconds
    )
    assert export + delivery < job_spec["activeDeadlineSeconds"] <= 15 * 60


@pytest.mark.parametrize(
    ("budget", "exit_code", "job_exit"),
    [
        ("{cost_usd: 100000}", 0, 0),  # within budget
        ("{cost_usd: 1}", 1, 0),  # a threshold crossed: the alert is the job's work, not a failure
        ("{cost_usd: -1}", 2, 2),  # an invalid configuration fails the Job
    ],
)
def test_kubernetes_cronjob_fails_the_job_only_when_check_exits_2(
    tmp_path: Path, budget: str, exit_code: int, job_exit: int
) -> None:
    (cron,) = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    config = tmp_path / "config.yaml"
    config.write_text(
        f"langdock: {{api_key: unused}}\nstate: {{path: {tmp_path / 'state.db'}}}\n"
        f"budgets: [{{name: b, keys: '*', limits: {budget}}}]\n",
        encoding="utf-8",
    )
    example = ROOT / "config" / "examples" / "export-2026-11.csv"
    check = ["check", "--config", str(config), "--csv", str(example), "--now", "2026-11-20T12:00Z"]
    costwatch = [sys.executable, "-m", "costwatch"]
    direct = subprocess.run([*costwatch, *check], capture_output=True, timeout=60, check=False)
    assert direct.returncode == exit_code, direct.stderr
    # The manifest's command, with `costwatch` on PATH being this checkout's.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "costwatch").write_text(f'#!/bin/sh\nexec {sys.executable} -m costwatch "$@"\n')
    (bin_dir / "costwatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        [*cron["command"], *check], env=env, capture_output=True, timeout=60, check=False
    )
    assert run.returncode == job_exit, run.stderr


# --- Compose ---------------------------------------------------------------------------------


def compose() -> Manifest:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def mounts(service: str) -> dict[str, str]:
    """A service's bind mounts and volumes as {container path: host path or volume name}."""
    result: dict[str, str] = {}
    for entry in compose()["services"][service].get("volumes", []):
        source, target, *_ = entry.split(":")
        result[target] = source
    return result


def test_compose_costwatch_mounts_the_config_and_state_paths_the_image_uses() -> None:
    service = compose()["services"]["costwatch"]
    assert service["build"]["context"] == "../.."
    assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]) == (
        COMPOSE.parent / "../../Dockerfile"
    )
    volumes = mounts("costwatch")
    config_dir = str(PurePosixPath(CONFIG_IN_IMAGE).parent)
    assert (COMPOSE.parent / volumes[config_dir]).resolve() == CONTAINER_CONFIG.parent, (
        "the folder, so a file replaced on save shows inside the container"
    )
    assert f"{volumes[config_dir]}:{config_dir}:ro" in service["volumes"]
    command = service["command"]
    assert command[:2] == ["run", "--config"]
    assert PurePosixPath(command[2]) == PurePosixPath(config_dir) / CONTAINER_CONFIG.name
    assert volumes[STATE_DIR] in compose()["volumes"], "a named volume"
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert f"{PORT}:{PORT}" in " ".join(service["ports"])
    assert set(SECRETS) <= set(service["environment"])


def test_compose_demo_profile_runs_the_simulator_as_the_prometheus_target() -> None:
    demo = compose()["services"]["costwatch-demo"]
    assert demo["profiles"] == ["demo"]
    assert demo["image"] == compose()["services"]["costwatch"]["image"]
    assert demo["command"] == ["demo"]
    assert demo["environment"]["COSTWATCH_DEMO_LISTEN"] == f"0.0.0.0:{PORT}"
    assert "costwatch" in demo["networks"]["default"]["aliases"]
    assert demo["read_only"] is True
    assert "/tmp" in demo["tmpfs"]


def test_compose_images_are_pinned_by_version() -> None:
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        assert ":" in image, name
        assert not image.endswith(":latest"), name


def test_compose_prometheus_and_grafana_mount_files_that_exist_in_the_repo() -> None:
    expected = {
        "prometheus": {
            "/etc/prometheus/prometheus.yml": "deploy/prometheus/prometheus.yml",
            "/etc/prometheus/costwatch_rules.yml": "deploy/prometheus/costwatch_rules.yml",
        },
        "grafana": {
            "/etc/grafana/provisioning": "deploy/grafana/provisioning",
            "/var/lib/grafana/dashboards": "deploy/grafana/dashboards",
        },
    }
    for service, paths in expected.items():
        volumes = mounts(service)
        for target, in_repo in paths.items():
            assert (COMPOSE.parent / volumes[target]).resolve() == ROOT / in_repo
            assert (ROOT / in_repo).exists(), f"{in_repo} (mounted by {service}) is missing"
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert (provisioning / "datasources" / "prometheus.yml").is_file()
    assert (provisioning / "dashboards" / "costwatch.yml").is_file()
    assert (ROOT / "deploy" / "grafana" / "dashboards" / "costwatch.json").is_file()


def test_compose_env_example_names_the_two_secrets_and_the_grafana_password() -> None:
    text = (COMPOSE.parent / ".env.example").read_text(encoding="utf-8")
    names = {line.split("=", 1)[0] for line in text.splitlines() if re.match(r"^[A-Z_]+=", line)}
    assert {*SECRETS, "GRAFANA_ADMIN_PASSWORD"} <= names
    grafana = compose()["services"]["grafana"]["environment"]
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["GF_SECURITY_ADMIN_PASSWORD"]


# --- the variables the container config reads -----------------------------------------------

VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def strings(node: Any) -> Iterator[str]:
    """Every string value (and key) in a loaded YAML document: the comments are not in it."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def references(document: Any) -> dict[str, str | None]:
    """{variable: its `:-` default or None} for every ${VAR} in the document's values."""
    found: dict[str, str | None] = {}
    for text in strings(document):
        for match in VARIABLE.finditer(text):
            found[match["name"]] = match["default"]
    return found


def config_variables() -> dict[str, str | None]:
    return references(yaml.safe_load(CONTAINER_CONFIG.read_text(encoding="utf-8")))


def env_example_names() -> set[str]:
    """The names .env.example sets or shows commented out (`NAME=` or `# NAME=`)."""
    text = (COMPOSE.parent / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", text, re.M))


def kubernetes_env() -> dict[str, Manifest]:
    return {variable["name"]: variable for variable in container()["env"]}


def test_the_container_config_reads_the_variables_the_deployments_must_pass() -> None:
    assert set(config_variables()) >= {
        *SECRETS,
        "LANGDOCK_BASE_URL",
        "COSTWATCH_TIMEZONE",
        "COSTWATCH_SLACK_CHANNEL",
        "COSTWATCH_METRICS_LISTEN",
    }


@pytest.mark.parametrize("name", sorted(config_variables()))
def test_every_variable_the_container_config_reads_is_passed_by_compose_and_kubernetes(
    name: str,
) -> None:
    default = config_variables()[name]
    compose_value = str(compose()["services"]["costwatch"]["environment"][name])
    assert name in kubernetes_env(), f"deployment.yaml does not pass {name}"
    passed = references(compose_value)
    if name in passed:  # from .env: listed there, with the config's own default
        assert name in env_example_names(), f".env.example does not list {name}"
        assert passed[name] == (default if default is not None else ""), name
    else:  # fixed in docker-compose.yml: the image's value
        assert compose_value == image_env()[name], name
    if name in SECRETS:
        assert "valueFrom" in kubernetes_env()[name]
    else:
        assert kubernetes_env()[name]["value"] == default, "the config's own default"


def test_every_variable_compose_takes_from_env_is_listed_in_env_example() -> None:
    assert set(references(compose())) <= env_example_names()


def test_the_metrics_address_compose_and_kubernetes_fix_is_the_port_they_publish() -> None:
    compose_listen = compose()["services"]["costwatch"]["environment"]["COSTWATCH_METRICS_LISTEN"]
    assert compose_listen.endswith(f":{PORT}")
    assert f"{PORT}:{PORT}" in " ".join(compose()["services"]["costwatch"]["ports"])
    kubernetes_listen = kubernetes_env()["COSTWATCH_METRICS_LISTEN"]["value"]
    assert kubernetes_listen == f"0.0.0.0:{PORT}"
    assert {p["containerPort"] for p in container()["ports"]} == {PORT}


def test_the_container_config_follows_the_listen_variable() -> None:
    env = {**SECRETS, "COSTWATCH_METRICS_LISTEN": "127.0.0.1:9200"}
    config = parse_config(CONTAINER_CONFIG.read_text(encoding="utf-8"), env=env)
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9200)


def test_compose_service_names_are_what_prometheus_and_grafana_address() -> None:
    services = compose()["services"]
    names: set[str] = set(services)
    for service in services.values():
        names.update(service.get("networks", {}).get("default", {}).get("aliases", []))
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text("utf-8"))
    targets = [
        target
        for job in scrape["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"costwatch:{PORT}" in targets
    for target in targets:
        assert target.rsplit(":", 1)[0] in names, target
    datasources = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
    (source,) = yaml.safe_load(datasources.read_text("utf-8"))["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in services
