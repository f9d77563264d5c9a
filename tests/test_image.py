"""The container image, built from the Dockerfile and run for real: buildah, podman (tests/oci.py).

One build for the module, on a Python base made from Debian's packages and passed as
PYTHON_IMAGE (no registry is reachable here). Every container runs locked down as Compose and
Kubernetes run it: read-only root filesystem (no tmpfs but the /tmp one given), all
capabilities dropped, no-new-privileges. The daemon's peers, the Langdock simulator and the
Slack stand-in, listen on the host's loopback, which the containers share (host network); the
config is mounted as a folder at /etc/costwatch, as Compose does, and the state is a named
volume. Ports are free ones, never 9108: the HEALTHCHECK must follow COSTWATCH_METRICS_LISTEN.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import oci
import pytest
from loopback import free_port
from prometheus_client.parser import text_string_to_metric_families
from slackstub import TOKEN, SlackStub

from costwatch.simulator import Simulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
UID = 10001
STATE_DIR = "/var/lib/costwatch"
CONFIG_DIR = "/etc/costwatch"
LANGDOCK_KEY = "sk-lang-IMAGE-TEST-0001"
SECRETS = {"LANGDOCK_API_KEY": LANGDOCK_KEY, "SLACK_BOT_TOKEN": TOKEN}
GRACE = 10  # schedule.shutdown_grace of the daemon's config, seconds
LOCKED_DOWN = [
    *("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp"),
    *("--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
]
# Run inside the container: who it runs as, how / is mounted, which of the folders given as
# arguments take a new file.
PROBE = """\
import errno, json, os, sys
def attempt(folder):
    path = os.path.join(folder, ".probe")
    try:
        open(path, "w").close()
    except OSError as error:
        return errno.errorcode[error.errno]
    os.unlink(path)
    return "ok"
mounts = [line.split() for line in open("/proc/self/mounts")]
root = [fields[3].split(",") for fields in mounts if fields[1] == "/"][-1]
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "root": root,
                  "writable": {folder: attempt(folder) for folder in sys.argv[1:]}}))
"""


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    oci.ensure_tools()
    base = oci.base_image()
    name = f"localhost/costwatch-test:{uuid.uuid4().hex[:12]}"
    oci.checked(
        [
            *("buildah", "bud", "--isolation", "chroot", "--format", "docker"),
            *("--build-arg", f"PYTHON_IMAGE={base}", "--tag", name),
            *("--file", str(ROOT / "Dockerfile"), str(ROOT)),
        ],
        timeout=1200,
    )
    yield name
    oci.podman("rmi", "--force", name)


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"costwatch-test-state-{uuid.uuid4().hex[:12]}"
    oci.checked(["podman", "volume", "create", name], timeout=60)
    yield name
    oci.podman("volume", "rm", "--force", name)


def container(image: str, *arguments: str, options: tuple[str, ...] = ()) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a locked-down `podman run --rm`."""
    done = oci.run(
        ["podman", "run", "--rm", *oci.run_flags(), *LOCKED_DOWN, *options, image, *arguments],
        timeout=180,
    )
    return done.returncode, done.stdout, done.stderr


def env_options(env: dict[str, str]) -> tuple[str, ...]:
    return tuple(option for name, value in env.items() for option in ("-e", f"{name}={value}"))


# --- what the image is -----------------------------------------------------------------------


def test_the_image_declares_uid_10001_the_state_volume_the_port_and_its_healthcheck(
    image: str,
) -> None:
    (inspected,) = json.loads(oci.checked(["podman", "image", "inspect", image], timeout=60))
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert STATE_DIR in config["Volumes"]
    assert "9108/tcp" in config["ExposedPorts"]
    assert "COSTWATCH_METRICS_LISTEN=0.0.0.0:9108" in config["Env"]
    check = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert check is not None, "no HEALTHCHECK: built in OCI format, which drops it"
    assert check["Test"][:3] == ["CMD", "python", "-c"], "kept: the image is in docker format"
    assert "COSTWATCH_METRICS_LISTEN" in check["Test"][3]
    assert config["Entrypoint"] == ["costwatch"]


def test_a_container_runs_as_uid_10001_with_only_tmp_and_the_state_volume_writable(
    image: str, volume: str
) -> None:
    folders = ("/tmp", "/var/tmp", "/opt/venv", STATE_DIR)
    code, out, err = container(
        image,
        *("-c", PROBE, *folders),
        options=("--entrypoint", "python", "-v", f"{volume}:{STATE_DIR}"),
    )
    assert code == 0, err
    seen = json.loads(out)
    assert (seen["uid"], seen["gid"]) == (UID, UID)
    assert "ro" in seen["root"], "the root filesystem is mounted read-only"
    assert seen["writable"] == {
        "/tmp": "ok",  # the tmpfs (TMPDIR)
        "/var/tmp": "EROFS",  # world-writable in the image, read-only in the container
        "/opt/venv": "EROFS",
        STATE_DIR: "ok",  # a fresh named volume takes the image's ownership of the folder
    }


def project_version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return str(project["version"])


def test_the_image_prints_the_project_version(image: str) -> None:
    code, out, err = container(image, "--version")
    assert code == 0, err
    assert out.strip() == f"costwatch {project_version()}"


def test_the_image_validates_the_config_it_ships(image: str) -> None:
    code, out, err = container(image, f"{CONFIG_DIR}/config.yaml", options=("--entrypoint", "cat"))
    assert code == 0, err
    assert out == (ROOT / "config" / "costwatch.yaml").read_text(encoding="utf-8")
    code, out, err = container(
        image, "validate", "--config", f"{CONFIG_DIR}/config.yaml", options=env_options(SECRETS)
    )
    assert code == 0, out + err


def test_demo_once_prints_the_simulated_workspace_spend(image: str) -> None:
    code, out, err = container(image, "demo", "--once")
    assert code == 0, err
    assert re.search(r"KEY\s+ID\s+SPEND\s+REQUESTS", out), out
    assert "support-bot-prod" in out
    assert "TOTAL" in out


# --- the daemon ------------------------------------------------------------------------------


@dataclass
class Peers:
    sim: Simulator
    stub: SlackStub


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    with Simulator(api_key=LANGDOCK_KEY) as sim, SlackStub() as stub:
        stub.add_channel("#ai-spend")
        yield Peers(sim, stub)


def write_config(folder: Path, peers: Peers, limit: float) -> None:
    """The daemon's config as `costwatch.yaml` in `folder`, written to a new file and renamed
    over the old one, as editors save. One shared budget, one threshold: one alert."""
    text = f"""\
langdock:
  base_url: {peers.sim.base_url}
  api_key: ${{LANGDOCK_API_KEY}}
  allow_insecure_download: true
  timeout_seconds: 5
  retry_max_elapsed_seconds: 1
  max_attempts: 2
schedule:
  every: 1s
  timezone: ${{COSTWATCH_TIMEZONE:-Europe/Berlin}}
  shutdown_grace: {GRACE}s
state:
  path: {STATE_DIR}/state.db
slack:
  token: ${{SLACK_BOT_TOKEN}}
  channel: "${{COSTWATCH_SLACK_CHANNEL:-#ai-spend}}"
  api_url: {peers.stub.api_url}
  min_interval_seconds: 0
  retry_every: 1s
metrics:
  listen: ${{COSTWATCH_METRICS_LISTEN}}
defaults:
  thresholds: [100]
  forecast: false
budgets:
  - name: pool
    scope: shared
    keys: "*"
    limits: {{cost_usd: {limit}}}
"""
    folder.chmod(0o755)  # the container's user reads it through the mount
    fresh = folder / ".costwatch.yaml.new"
    fresh.write_text(text, encoding="utf-8")
    fresh.chmod(0o644)
    os.replace(fresh, folder / "costwatch.yaml")


@dataclass
class Daemon:
    name: str
    port: int

    def logs(self) -> str:
        done = oci.podman("logs", self.name, timeout=60)
        return done.stdout + done.stderr

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """(name, labels, value) of every sample of one scrape; empty while nothing answers."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        except httpx.TransportError:
            return []
        return [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of `name` whose labels include `labels`; None if none."""
        found = [
            value
            for sample, sample_labels, value in self.metrics()
            if sample == name and labels.items() <= sample_labels.items()
        ]
        return sum(found) if found else None

    def cycles(self) -> float:
        return self.value("costwatch_cycles_total") or 0.0

    def wait(self, condition: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {seconds}s waiting for {what}:\n{self.logs()}")


@contextlib.contextmanager
def daemon(image: str, config: Path, volume: str) -> Iterator[Daemon]:
    """`costwatch run` detached in a locked-down container, removed afterwards."""
    port = free_port()
    name = f"costwatch-test-{uuid.uuid4().hex[:12]}"
    env = {**SECRETS, "COSTWATCH_METRICS_LISTEN": f"127.0.0.1:{port}"}
    oci.checked(
        [
            *("podman", "run", "--detach", "--name", name, *oci.run_flags(), *LOCKED_DOWN),
            *("-v", f"{config}:{CONFIG_DIR}:ro", "-v", f"{volume}:{STATE_DIR}"),
            *env_options(env),
            image,
            *("run", "--config", f"{CONFIG_DIR}/costwatch.yaml"),
        ],
        timeout=120,
    )
    try:
        yield Daemon(name, port)
    finally:
        oci.podman("rm", "--force", "--time", "0", name)


def budget_limit(running: Daemon) -> float | None:
    return running.value("costwatch_budget_limit", budget="pool", metric="cost_usd")


def test_run_exports_from_the_simulator_alerts_and_serves_metrics_and_its_healthcheck_passes(
    image: str, volume: str, peers: Peers, tmp_path: Path
) -> None:
    write_config(tmp_path, peers, limit=0.01)
    with daemon(image, tmp_path, volume) as running:
        running.wait(lambda: running.cycles() >= 1, 60, "the first cycle")
        assert (running.value("costwatch_cycles_total", outcome="ok") or 0) >= 1
        assert (running.value("costwatch_export_last_success_timestamp_seconds") or 0) > 0
        assert (running.value("costwatch_key_spend_usd") or 0) > 0
        running.wait(lambda: len(peers.stub.posts("#ai-spend")) >= 1, 30, "the alert in Slack")

        status = oci.checked(["podman", "exec", running.name, "cat", "/proc/1/status"], timeout=60)
        assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s", status, re.M), "PID 1 is costwatch's user"
        command = oci.checked(
            ["podman", "exec", running.name, "cat", "/proc/1/cmdline"], timeout=60
        )
        assert command.split("\0")[1].endswith("costwatch"), "exec form: costwatch is PID 1"

        health = oci.podman("healthcheck", "run", running.name, timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr + running.logs()
        # The same command aimed elsewhere fails: it probes COSTWATCH_METRICS_LISTEN, not
        # a fixed port that something else on the host might answer.
        (inspected,) = json.loads(oci.checked(["podman", "inspect", running.name], timeout=60))
        check = inspected["Config"]["Healthcheck"]["Test"]
        assert check[0] == "CMD"
        elsewhere = f"COSTWATCH_METRICS_LISTEN=127.0.0.1:{free_port()}"
        aimed = oci.podman("exec", "-e", elsewhere, running.name, *check[1:], timeout=60)
        assert aimed.returncode != 0
        assert "Connection refused" in aimed.stderr


def test_a_config_replaced_on_the_host_is_reloaded_through_the_folder_mount(
    image: str, volume: str, peers: Peers, tmp_path: Path
) -> None:
    write_config(tmp_path, peers, limit=0.01)
    with daemon(image, tmp_path, volume) as running:
        running.wait(lambda: budget_limit(running) == 0.01, 60, "the first limit in /metrics")
        write_config(tmp_path, peers, limit=5000)
        running.wait(lambda: budget_limit(running) == 5000, 60, "the new limit in /metrics")
        assert "configuration reloaded" in running.logs()


def test_sigterm_exits_0_within_the_grace_and_a_second_container_keeps_the_state(
    image: str, volume: str, peers: Peers, tmp_path: Path
) -> None:
    write_config(tmp_path, peers, limit=0.01)
    before = len(peers.stub.posts())
    with daemon(image, tmp_path, volume) as first:
        first.wait(lambda: len(peers.stub.posts()) > before, 60, "the alert in Slack")
        first.wait(lambda: first.value("costwatch_alerts_pending") == 0, 30, "no alert pending")
        alerts = len(peers.stub.posts())
        oci.checked(["podman", "kill", "--signal", "TERM", first.name], timeout=60)
        started = time.monotonic()
        exit_code = oci.checked(["podman", "wait", first.name], timeout=GRACE + 30).strip()
        assert exit_code == "0", first.logs()
        assert time.monotonic() - started < GRACE + 5, "SIGTERM is honoured within the grace"

    with daemon(image, tmp_path, volume) as second:
        second.wait(lambda: second.cycles() >= 3, 60, "three cycles of the second container")
        assert len(peers.stub.posts()) == alerts, "the ledger on the volume remembers the alert"
        listing = oci.checked(
            ["podman", "exec", second.name, "ls", "-ln", f"{STATE_DIR}/state.db"], timeout=60
        )
        assert listing.split()[2:4] == [str(UID), str(UID)]
