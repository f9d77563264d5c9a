"""Helpers for tests that run servers on loopback: a free port, waiting for a condition, and
a daemon configuration pointing at the simulator and the Slack stand-in."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from slackstub import SlackStub


class Peer(Protocol):
    """Where the daemon exports from: the simulator, or a peer that misbehaves."""

    @property
    def base_url(self) -> str: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` every 0.1 s; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


T = TypeVar("T")


class Background(Generic[T]):
    """`call()` in a daemon thread: a call that never returns fails the test, not hangs it."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as error:  # handed to result()
            self._error = error

    def result(self, seconds: float, what: str) -> T:
        """What the call returned (or raise what it raised); fail naming `what` if it has not
        returned within `seconds`."""
        self._thread.join(seconds)
        if self._thread.is_alive():
            raise AssertionError(f"{what} still running after {seconds}s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def returns_within(seconds: float, what: str, call: Callable[[], T]) -> T:
    """`call()`'s result, failing naming `what` if it takes longer than `seconds`."""
    return Background(call).result(seconds, what)


def write_daemon_config(
    path: Path,
    sim: Peer,
    stub: SlackStub,
    port: int,
    budgets: str,
    *,
    every: str = "1s",
    shutdown_grace: str = "10s",
    timeout: float = 5,
    retry_max_elapsed: float = 1,
    max_attempts: int = 2,
    channel: str = "#ai-spend",
    min_interval: float = 0,
    langdock: str = "",
    slack: str = "",
    metrics: str = "",
    defaults: str = "",
) -> Path:
    """A costwatch config for a daemon on loopback: the simulator (or another peer), the Slack
    stand-in, a fast schedule and short retries. `budgets` is the YAML list's items; the other
    strings are extra lines (indented two spaces) for their sections. The state sits beside
    the file."""
    path.write_text(
        f"""\
langdock:
  base_url: {sim.base_url}
  api_key: ${{LANGDOCK_API_KEY}}
  allow_insecure_download: true
  timeout_seconds: {timeout}
  retry_max_elapsed_seconds: {retry_max_elapsed}
  max_attempts: {max_attempts}
{langdock}schedule:
  every: {every}
  timezone: Europe/Berlin
  shutdown_grace: {shutdown_grace}
state:
  path: {path.parent / "state.db"}
slack:
  token: ${{SLACK_BOT_TOKEN}}
  channel: "{channel}"
  api_url: {stub.api_url}
  min_interval_seconds: {min_interval}
  retry_every: 1s
{slack}metrics:
  listen: 127.0.0.1:{port}
{metrics}{"defaults:" + chr(10) + defaults if defaults else ""}budgets:
{budgets}""",
        encoding="utf-8",
    )
    return path
