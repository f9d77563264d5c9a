"""Every failure of a cycle is typed, counted, explained and exit 2, never exit 1 ("crossed").

Exit 1 means "a threshold was crossed", and Python's exit code for an uncaught exception is 1 as
well: once, a deeply nested JSON answer, an API key with the trailing newline that
`kubectl create secret --from-file` leaves, a non-ASCII key or a host name with an empty DNS
label ended `check` with a traceback and exit 1, and in the daemon was no export failure with
a reason, not counted towards "exports failing" or `/readyz`. Now: the configuration refuses
what it can see (`validate` too); the export client raises a typed error for every failure of
its peer or its input; the cycle turns any exception left into a failure of reason `internal`,
logged once with its traceback; and `costwatch` itself exits 2 on one that escapes anyway.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fakes import FakeClock
from loopback import free_port, wait_for, write_daemon_config
from slackstub import TOKEN, SlackStub

from costwatch import cycle
from costwatch.cli import main
from costwatch.config import parse_config
from costwatch.daemon import Daemon
from costwatch.errors import (
    EXPORT_FAILURE_REASONS,
    ConfigError,
    ExportError,
    ExportInternalError,
    ExportProtocolError,
    ExportRequestError,
)
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.state import SqliteState

KEY = "sk-lang-EXITS-k3y-5d2a"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOVEMBER = (datetime(2026, 11, 1, tzinfo=ZoneInfo("UTC")), NOW.astimezone(ZoneInfo("UTC")))
EMPTY_LABEL = "http://api..langdock.example"
LONG_LABEL = "http://" + "a" * 64 + ".langdock.example"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(Workspace(keys=4), api_key=KEY, clock=lambda: NOW) as server:
        yield server


# --- the configuration refuses what it can see -------------------------------------------------

BAD_KEYS = {
    "a trailing newline (kubectl --from-file)": (
        KEY + "\n",
        "has whitespace at its start or end (a trailing newline, as `kubectl create secret "
        "--from-file` leaves it?): remove it, or read the key with api_key_file, which strips it",
    ),
    "a leading space": (
        " " + KEY,
        "has whitespace at its start or end (a trailing newline, as `kubectl create secret "
        "--from-file` leaves it?): remove it, or read the key with api_key_file, which strips it",
    ),
    "a space inside": ("sk-lang EXITS", "contains whitespace: an API key has none"),
    "a tab inside": ("sk-lang\tEXITS", "contains whitespace: an API key has none"),
    "non-ASCII": (
        "sk-läng-EXITS",
        "contains a character that is not printable ASCII: it cannot be sent in an HTTP header",
    ),
    "a control character": (
        "sk-lang\x07EXITS",
        "contains a character that is not printable ASCII: it cannot be sent in an HTTP header",
    ),
}


@pytest.mark.parametrize(("key", "message"), BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_an_api_key_from_the_environment_that_no_header_can_carry_is_a_config_error(
    key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("langdock:\n  api_key: ${LANGDOCK_API_KEY}\n", env={"LANGDOCK_API_KEY": key})
    assert caught.value.problems[0].path == "langdock.api_key"
    assert caught.value.problems[0].message == message
    assert key.strip() not in str(caught.value)


@pytest.mark.parametrize("content", [KEY + "\n", KEY + "\r\n", "\n " + KEY + " \n\n"])
def test_an_api_key_file_is_read_without_its_surrounding_whitespace(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "key").write_text(content, encoding="utf-8", newline="")
    config = parse_config("langdock:\n  api_key_file: key\n", base_dir=tmp_path)
    assert config.sole_langdock().secret_api_key() == KEY


@pytest.mark.parametrize("content", ["sk-lang EXITS\n", "sk-läng-EXITS\n", "sk\x00lang\n"])
def test_an_api_key_file_with_whitespace_inside_or_non_ascii_is_a_config_error_at_the_file(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "key").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        parse_config("langdock:\n  api_key_file: key\n", base_dir=tmp_path)
    assert caught.value.problems[0].path == "langdock.api_key_file"
    assert content.strip() not in str(caught.value)


def run_costwatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "costwatch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def write_config(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "costwatch.yaml"
    path.write_text(
        f"""\
langdock:
  base_url: {base_url}
  api_key: ${{LANGDOCK_API_KEY}}
  allow_insecure_download: true
  timeout_seconds: 5
  max_attempts: 2
  retry_max_elapsed_seconds: 1
state:
  path: {tmp_path / "state.db"}
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: 1000000}}
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("command", ["validate", "check"])
@pytest.mark.parametrize("key", [KEY + "\n", "sk-läng-EXITS"], ids=["newline", "non-ASCII"])
def test_validate_and_check_exit_2_on_a_key_no_header_can_carry_without_showing_it(
    tmp_path: Path, sim: Simulator, command: str, key: str
) -> None:
    config = write_config(tmp_path, sim.base_url)
    done = run_costwatch(command, "--config", str(config), env={"LANGDOCK_API_KEY": key})
    assert done.returncode == 2, done.stderr
    assert "langdock.api_key (line 3): " in done.stderr
    assert "Traceback" not in done.stderr
    assert key.strip() not in done.stderr + done.stdout
    assert sim.requests == []


# --- the export client types every failure of its peer or its input --------------------------


CHECK_FAILURES = {
    "an empty DNS label in base_url": (EMPTY_LABEL, None, "bad_request", "not a valid host name"),
    "a DNS label over 63 characters": (LONG_LABEL, None, "bad_request", "not a valid host name"),
    "a JSON answer nested past the parser": (None, b"[" * 200_000, "protocol", "not JSON"),
}


@pytest.mark.parametrize(
    ("base_url", "answer", "reason", "says"), CHECK_FAILURES.values(), ids=CHECK_FAILURES.keys()
)
def test_check_exits_2_naming_the_reason_when_the_export_cannot_be_made_or_read(
    *,
    tmp_path: Path,
    sim: Simulator,
    base_url: str | None,
    answer: bytes | None,
    reason: str,
    says: str,
) -> None:
    if answer is not None:
        sim.faults.export_bytes(answer, times=10)
    config = write_config(tmp_path, base_url or sim.base_url)
    done = run_costwatch(
        "check", "--config", str(config), "--now", NOW.isoformat(), env={"LANGDOCK_API_KEY": KEY}
    )
    assert done.returncode == 2, done.stderr
    assert f"the Langdock export failed ({reason}): " in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert KEY not in done.stderr + done.stdout


@pytest.mark.parametrize("base_url", [EMPTY_LABEL, LONG_LABEL], ids=["empty label", "long label"])
def test_a_host_name_that_is_not_one_is_a_request_error_before_anything_is_sent(
    base_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    with httpx.Client(timeout=2) as http:
        client = LangdockClient(
            http, base_url=base_url, api_key=KEY, sleep=clock.sleep, monotonic=clock.monotonic
        )
        with pytest.raises(ExportRequestError) as caught:
            client.export_api_keys(*NOVEMBER, tmp_path)
    assert "not a valid host name" in str(caught.value)
    assert clock.sleeps == []  # not retried: it cannot get better


def test_a_download_url_whose_host_is_not_one_is_a_protocol_error(
    sim: Simulator, tmp_path: Path
) -> None:
    url = "http://" + "x" * 70 + ".storage.example/files/a?expires=1&signature=s"
    sim.faults.export_body({"success": True, "data": {"downloadUrl": url, "recordCount": 1}})
    clock = FakeClock()
    with httpx.Client(timeout=2) as http:
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
        with pytest.raises(ExportProtocolError) as caught:
            client.export_api_keys(*NOVEMBER, tmp_path)
    assert "not a valid host name" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", [KEY + "\n", "sk-läng", "sk lang", "sk\x7flang"])
def test_the_client_refuses_a_key_no_header_can_carry_without_showing_it(key: str) -> None:
    with httpx.Client() as http, pytest.raises(ValueError, match="printable ASCII") as caught:
        LangdockClient(http, base_url="https://api.langdock.com", api_key=key)
    assert key.strip() not in str(caught.value)


# --- the cycle: whatever is left is a failure of reason "internal" -----------------------------


class LibraryBug(RuntimeError):
    """What a library might raise that no one foresaw."""


def broken_transport(request: httpx.Request) -> httpx.Response:
    raise LibraryBug("something inside a library went wrong")


CONFIG = f"""\
langdock:
  api_key: {KEY}
  base_url: https://api.langdock.example
  failures_before_alert: 3
slack:
  token: xoxb-unused
  channel: "#ai-spend"
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: 5}}
"""


def test_an_unexpected_exception_in_a_cycle_is_an_internal_failure_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(CONFIG)
    clock = FakeClock()
    with (
        httpx.Client(transport=httpx.MockTransport(broken_transport)) as http,
        SqliteState.open(tmp_path / "state.db") as state,
    ):
        client = LangdockClient(
            http,
            base_url=config.sole_langdock().base_url,
            api_key=KEY,
            retry=RetryPolicy(max_attempts=2),
            sleep=clock.sleep,
            monotonic=clock.monotonic,
        )
        deps = cycle.Deps(config, client=client, state=state)
        for n in (1, 2, 3):
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="costwatch.cycle"):
                outcome = cycle.run_once(deps, NOW)
            assert isinstance(outcome.error, ExportInternalError)
            assert outcome.error.reason == "internal"
            assert "LibraryBug" in str(outcome.error)
            assert not outcome.crossed
            assert outcome.findings.height == 0
            tracebacks = [r for r in caplog.records if r.exc_info is not None]
            assert len(tracebacks) == 1  # the traceback, once per failed cycle
            assert "Traceback" not in str(outcome.error)
            health = state.export_health()
            assert (health.consecutive_failures, health.last_reason) == (n, "internal")
        assert [item.kind for item in state.pending()] == ["exports_failing"]
    assert "internal" in EXPORT_FAILURE_REASONS


def test_check_exits_2_not_1_when_a_library_fails_inside_its_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command as cron and CI read it: a bug inside a library (httpx's send raising what
    it never should; the one part replaced, as a library bug cannot be had on demand) is the
    cycle's typed `internal` failure, and `check` exits 2 saying nothing was evaluated."""

    def send(self: httpx.Client, request: httpx.Request, **_: object) -> httpx.Response:
        raise LibraryBug("something inside a library went wrong")

    monkeypatch.setattr(httpx.Client, "send", send)
    monkeypatch.setenv("LANGDOCK_API_KEY", KEY)
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code = main(["check", "--config", str(config), "--dry-run", "--now", NOW.isoformat()])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the Langdock export failed (internal)" in err
    assert "budgets are not known to be within limits" in err


def test_an_exception_escaping_any_command_exits_2_never_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's own exit code for an uncaught exception, 1, reads as "a threshold crossed":
    whatever escapes a command (here its output failing) is logged as a bug and exits 2."""

    class Broken:
        def write(self, text: str) -> int:
            raise LibraryBug("the output went away")

        def flush(self) -> None:
            return None

    monkeypatch.setattr(sys, "stdout", Broken())
    code = main(["schema"])
    err = capsys.readouterr().err
    assert code == 2
    assert "costwatch failed unexpectedly (a bug); nothing is known to be in budget" in err
    assert "LibraryBug" in err


def test_every_reason_a_cycle_can_fail_with_has_a_metric_label_up_front() -> None:
    def classes(cls: type[ExportError]) -> list[type[ExportError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in classes(sub))]

    for cls in classes(ExportError):
        assert cls.reason in EXPORT_FAILURE_REASONS
        assert set(cls.other_reasons) <= set(EXPORT_FAILURE_REASONS)
    assert {"usage", "incomplete", "internal", "bad_request", "protocol"} <= set(
        EXPORT_FAILURE_REASONS
    )


def test_check_exits_2_at_once_for_a_now_whose_period_cannot_exist(tmp_path: Path) -> None:
    """A --now so close to year 9999 that the month after it cannot exist: refused up front
    (it used to escape the cycle as an unforeseen error, which the catch-all made exit 2)."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    done = run_costwatch(
        "check",
        "--config",
        str(config),
        "--dry-run",
        "--now",
        "9999-12-31T23:00:00+00:00",
        env={"LANGDOCK_API_KEY": KEY},
    )
    assert done.returncode == 2, done.stderr
    assert "is outside the years 1971 to 9998" in done.stderr
    assert "Traceback" not in done.stderr


# --- the daemon counts each of them as an export failure with its reason -----------------------


def test_the_daemon_counts_a_bad_host_as_a_failed_export_with_its_reason_and_is_not_ready(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGDOCK_API_KEY", KEY)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    port = free_port()
    with SlackStub() as stub:
        stub.add_channel("#ai-spend")
        config = write_daemon_config(
            tmp_path / "c.yaml",
            sim,
            stub,
            port,
            '  - name: b\n    keys: "*"\n    limits: {cost_usd: 1}\n',
            every="1s",
        )
        config.write_text(config.read_text().replace(sim.base_url, EMPTY_LABEL))
        daemon = Daemon.from_path(config)
        runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        runner.start()
        base = f"http://127.0.0.1:{port}"
        try:
            line = 'costwatch_export_failures_total{reason="bad_request"} '

            def failures() -> float:
                try:
                    text = httpx.get(f"{base}/metrics", timeout=2).text
                except httpx.TransportError:
                    return 0.0
                counted = [row for row in text.splitlines() if row.startswith(line)]
                return float(counted[0].split()[-1]) if counted else 0.0

            wait_for(lambda: failures() >= 2, 30, "two failed exports counted")
            ready = httpx.get(f"{base}/readyz", timeout=2)
            assert ready.status_code == 503
            assert "bad_request" in ready.text
            assert "not a valid host name" in ready.text
        finally:
            daemon.stop()
            runner.join(timeout=30)
    assert not runner.is_alive()
