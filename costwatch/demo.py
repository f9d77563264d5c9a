"""`costwatch demo`: the daemon against the built-in simulator, Slack printed to the terminal.

Nothing is needed but this package: the simulator serves the Langdock export API on a free
loopback port, the state lives in a temporary folder, metrics are on 127.0.0.1:9108 (or a
free port when something listens there; a port an earlier run left in TIME_WAIT is free, as
for the real server) and Slack messages are printed as text instead of sent. Log lines wait
while a message is printed, so none lands inside a Slack box on the terminal.

Simulated time runs fast: one real second is two simulated hours, starting on the 2nd of the
current month, and a cycle runs every 10 real seconds (20 simulated hours). The demo budgets in
`config/demo.yaml` are sized so that within about two minutes you see a forecast, the 50%, 80%
and 100% alerts of one key, and a shared pool's alerts. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from costwatch import periods
from costwatch.config import Config, load_config
from costwatch.simulator import Simulator, Workspace
from costwatch.slack.terminal import TerminalSender

log = logging.getLogger("costwatch.demo")

SPEED = 7200.0  # simulated seconds per real second
ZONE = ZoneInfo("Europe/Berlin")
METRICS_PORT = 9108


def config_path() -> Path:
    """The demo's configuration: beside this module in a wheel, in config/ in a checkout."""
    packaged = Path(__file__).with_name("demo.yaml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "config" / "demo.yaml"


@dataclass
class FastClock:
    """Simulated time: starts at `start` and runs `speed` times faster than real time."""

    start: datetime
    speed: float = SPEED
    _real_start: float = field(default_factory=time.monotonic)

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._real_start) * self.speed)


class _HeldHandler(logging.Handler):
    """A handler that emits through `inner` only while it holds the terminal's print lock."""

    def __init__(self, inner: logging.Handler, lock: threading.Lock) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self._print_lock = lock

    def handle(self, record: logging.LogRecord) -> bool:
        with self._print_lock:
            return bool(self.inner.handle(record))

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        self.inner.emit(record)


@contextmanager
def logs_between_messages(lock: threading.Lock) -> Iterator[None]:
    """While inside, the root logger's handlers wait for `lock`: no log line is written while a
    message box is (stdout and stderr share the terminal)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    root.handlers[:] = [_HeldHandler(handler, lock) for handler in handlers]
    try:
        yield
    finally:
        root.handlers[:] = handlers


def _real_now() -> datetime:
    return datetime.now(UTC)


def demo_start(now: datetime) -> datetime:
    """The 2nd of the current month, 00:00 in Berlin: a month with room to overrun."""
    month = periods.current("month", ZONE, now)
    return periods.local_midnight(month.first_day + timedelta(days=1), ZONE)


def free_port(host: str, preferred: int) -> int:
    """`preferred` when nothing listens there, else a free port chosen by the system.

    The probe binds as the metrics server does (SO_REUSEADDR): connections an earlier run
    left in TIME_WAIT do not keep the server off the port, so they do not move the demo."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, preferred))
        except OSError:
            probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def demo_config(*, base_url: str, api_key: str, state_path: Path, listen: str) -> Config:
    """`config/demo.yaml`, pointed at the simulator, a temporary state file and `listen`: the
    parts the demo starts go into the configuration object itself, not through variables."""
    config = load_config(config_path(), env={})
    return config.model_copy(
        update={
            "langdock": config.sole_langdock().model_copy(
                update={"base_url": base_url, "api_key": SecretStr(api_key)}
            ),
            "state": config.state.model_copy(update={"path": state_path}),
            "metrics": config.metrics.model_copy(update={"listen": listen}),
        }
    )


def run(*, out: TextIO = sys.stdout, once: Callable[[Config], int] | None = None) -> int:
    """Run the demo daemon until Ctrl-C (or, with `once`, hand one cycle's configuration to
    it). `COSTWATCH_DEMO_LISTEN` (a container serves on 0.0.0.0:9108) chooses the metrics
    address; otherwise 127.0.0.1:9108, or a free port when that one is taken."""
    from costwatch.daemon import Daemon  # noqa: PLC0415 (the daemon loads only here)

    clock: Callable[[], datetime] = FastClock(start=demo_start(datetime.now(UTC)))
    if once is not None:
        clock = _real_now  # one cycle: the month to date, as it really is
    with (
        Simulator(Workspace(), clock=clock) as sim,
        tempfile.TemporaryDirectory(prefix="costwatch-demo-") as tmp,
    ):
        listen = os.environ.get("COSTWATCH_DEMO_LISTEN")
        if not listen:
            listen = f"127.0.0.1:{free_port('127.0.0.1', METRICS_PORT)}"
        config = demo_config(
            base_url=sim.base_url,
            api_key=sim.api_key,
            state_path=Path(tmp) / "state.db",
            listen=listen,
        )
        if once is not None:
            return once(config)
        assert isinstance(clock, FastClock)
        sender = TerminalSender(out)
        daemon = Daemon.from_config(config, sender=sender, clock=clock)
        print(
            "costwatch demo: a simulated Langdock workspace (no account, no token).\n"
            f"  Simulated time starts {clock.start:%b %d %H:%M} {ZONE.key} and runs {SPEED:,.0f}x"
            f" faster: a cycle every 10 s is {10 * SPEED / 3600:.0f} simulated hours.\n"
            f"  Metrics: http://{listen}/metrics  (also /healthz, /readyz)\n"
            "  Slack messages are printed below. Ctrl-C stops.\n",
            file=out,
            flush=True,
        )
        with logs_between_messages(sender.lock):
            return daemon.run()
