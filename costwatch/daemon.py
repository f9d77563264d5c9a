"""The daemon: APScheduler runs cycles, delivery follows, signals stop and reload it.

- Start-up, in this order: the configuration, the state file (its writer lock first: a second
  `run` on the same file exits 2 naming the holder), the metrics port, the scheduler. Nothing
  is delivered and no cycle runs until all of it succeeded: a taken port exits 2 having sent
  nothing.
- One cycle at start-up, then on `schedule.every` (optionally jittered) or `schedule.cron`, in
  `schedule.timezone`; never two at once (a tick during a cycle is skipped), missed runs
  coalesced, a misfire grace of half an interval. A failed cycle is logged and counted; the next
  runs as planned.
- Slack delivery runs after each cycle and every `slack.retry_every` while rows are pending.
- SIGTERM / SIGINT: stop scheduling, let a running cycle finish within `schedule.shutdown_grace`,
  flush the outbox once, close the HTTP server, exit 0. Waits inside a cycle (retry back-off,
  Slack pacing) end early on shutdown, so the grace is rarely needed in full.
- SIGHUP, or a change of the configuration file (its mtime, checked every few seconds):
  reload. A valid file takes effect at the next cycle; an invalid one is logged with its errors
  and the old one stays in force. `state.path` and `metrics.*` need a restart (logged).
- The scheduler is the only place that reads the clock (`clock`), and passes `now` down.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from costwatch import cycle, slack
from costwatch.config import Config, ScheduleConfig, load_config
from costwatch.errors import ConfigError, CostwatchError, StateError
from costwatch.metrics import Metrics, MetricsServer, Snapshot
from costwatch.state import State

log = logging.getLogger("costwatch.daemon")

CYCLE_JOB = "cycle"
DELIVERY_JOB = "deliver"
WATCH_SECONDS = 2.0  # how often the config file's mtime is looked at


class Stopping(Exception):
    """Raised inside a wait when the daemon is shutting down."""


@dataclass
class _Health:
    last_success: float | None = None  # time.monotonic() of the last successful export
    last_failure: str | None = None


class Daemon:
    """costwatch run: owns the scheduler, the state, the metrics server and the Slack sender."""

    def __init__(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sender_factory: Callable[[Config], slack.Sender | None] | None = None,
    ) -> None:
        self._path = config_path
        self._env = env
        self._clock = clock
        self._sender_factory = sender_factory or _slack_sender
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._cycle_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._flushing = False
        self._config = load_config(config_path, env)
        self._mtime = _mtime(config_path)
        self._sender = self._sender_factory(self._config)
        self._state = State.open(self._config.state.path, command="costwatch run")
        try:
            self._metrics = Metrics(max_series=self._config.metrics.max_series)
            self._health = _Health()
            self._scheduler = BackgroundScheduler(timezone=self._config.schedule.zone)
            self._server = MetricsServer(
                self._metrics,
                host=self._config.metrics.host,
                port=self._config.metrics.port,
                healthz=self.healthz,
                readyz=self.readyz,
                basic_auth=_basic_auth(self._config),
                tls=_tls(self._config),
            )
        except BaseException:
            self._state.close()  # and with it the writer lock
            raise

    @property
    def listen(self) -> str:
        return self._config.metrics.listen

    # -- running ------------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM or SIGINT (or `stop()`); returns the exit code."""
        if install_signals:
            self._install_signals()
        try:
            self.start()
        except BaseException:
            self._abandon()
            raise
        try:
            while not self._stop.wait(WATCH_SECONDS):
                if self._reload.is_set() or _mtime(self._path) != self._mtime:
                    self._reload.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        """Serve metrics, then schedule the cycles and delivery: nothing is sent before the
        port is bound (and the state's writer lock was taken before, in `__init__`)."""
        self._server.start()
        log.info(
            "costwatch started: metrics on %s:%d, state %s, %s",
            self._config.metrics.host,
            self._server.port,
            self._config.state.path,
            _describe_schedule(self._config.schedule),
        )
        self._metrics.alerts_pending(self._state.pending_count())
        self._scheduler.start()
        # APScheduler runs on the real clock; `self._clock` is what cycles are told "now" is.
        self._schedule_cycle(first_run=datetime.now(UTC))
        self._schedule_delivery()

    def stop(self) -> None:
        self._stop.set()

    def _abandon(self) -> None:
        """Start-up failed: close what was opened, deliver nothing (the outbox waits)."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._server.stop()
        self._state.close()

    def shutdown(self) -> None:
        """Stop scheduling, let a running cycle finish within the grace, flush, close."""
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        grace = self._config.schedule.shutdown_grace.total_seconds()
        if self._cycle_lock.acquire(timeout=grace):
            self._cycle_lock.release()
        else:
            log.warning("a cycle is still running after %.0f s; exiting without it", grace)
        self._flush()
        self._server.stop()
        self._state.close()
        log.info("costwatch stopped")

    # -- jobs -----------------------------------------------------------------------------------

    def run_cycle(self) -> None:
        """One cycle, then delivery. Called by the scheduler; never raises."""
        if not self._cycle_lock.acquire(blocking=False):
            log.warning("a cycle is still running; skipping this one")
            return
        try:
            self._cycle(self._clock())
        except StateError as error:  # locked, full disk: nothing of this cycle was recorded
            log.error("cycle failed: %s; the next cycle tries again", error)
            self._metrics.cycle_finished("error", 0.0)
        except Exception:
            log.exception("cycle failed")
            self._metrics.cycle_finished("error", 0.0)
        finally:
            self._cycle_lock.release()
        self.run_delivery()

    def run_delivery(self) -> None:
        """Deliver due outbox rows; never raises. While another delivery runs it returns at
        once: that one, or the next (after a cycle, or every `slack.retry_every`), sends them."""
        if self._sender is None or self._stop.is_set():
            return
        if not self._deliver_lock.acquire(blocking=False):
            return
        try:
            self._deliver(self._clock())
        except Stopping:
            pass
        except Exception:
            log.exception("delivery failed")
        finally:
            self._deliver_lock.release()

    def _cycle(self, now: datetime) -> None:
        config = self._config
        started = time.monotonic()
        with cycle.langdock_client(config.langdock, sleep=self._wait) as client:
            deps = cycle.Deps(config=config, client=client, state=self._state)
            outcome = cycle.run_once(deps, now)
        seconds = time.monotonic() - started
        if outcome.error is not None:
            reason = getattr(outcome.error, "reason", "usage")
            self._health.last_failure = f"{reason}: {outcome.error}"
            self._metrics.export_failed(reason, seconds)
            self._metrics.cycle_finished("export_failed", seconds)
            log.warning("cycle failed in %.2fs: export %s (%s)", seconds, reason, outcome.error)
            return
        self._health.last_success = time.monotonic()
        self._health.last_failure = None
        assert outcome.usage is not None
        self._metrics.export_succeeded(now, seconds)
        self._metrics.publish(
            Snapshot(
                at=now,
                usage=outcome.usage.frame,
                findings=outcome.findings,
                unevaluated=outcome.unevaluated,
            )
        )
        self._metrics.cycle_finished("ok", seconds)
        self._metrics.alerts_pending(self._state.pending_count())
        planned = len(outcome.plan.alerts) if outcome.plan else 0
        crossed = outcome.findings.filter(outcome.findings["level"].is_not_null()).height
        log.info(
            "cycle ok in %.2fs: %d rows, %d findings (%d at a threshold), %d alerts planned",
            seconds,
            outcome.usage.rows_read,
            outcome.findings.height,
            crossed,
            planned,
        )

    def _deliver(self, now: datetime) -> None:
        config = self._config
        assert config.slack is not None
        assert self._sender is not None
        if not self._state.pending(now, limit=1):
            return
        report = slack.deliver(
            self._state, self._sender, config.slack, now, sleep=self._wait, monotonic=time.monotonic
        )
        self._metrics.alerts_sent(report.sent)
        for code, count in {**report.permanent_errors, **report.transient_errors}.items():
            self._metrics.slack_error(code, count)
        self._metrics.alerts_pending(report.pending)
        if report.sent or report.failed:  # failures were logged as they happened
            log.debug(
                "delivered %d alert(s) in %d message(s); %d failed, %d pending",
                report.sent,
                report.messages,
                report.failed,
                report.pending,
            )

    def _flush(self) -> None:
        """Deliver what is pending once more on the way out."""
        self._flushing = True
        try:
            if self._sender is not None:
                with self._deliver_lock:
                    self._deliver(self._clock())
        except Exception:
            log.exception("final delivery failed; the rows stay in the outbox")
        finally:
            self._flushing = False

    def _wait(self, seconds: float) -> None:
        """A sleep that ends early, by raising, when the daemon stops (not while flushing)."""
        if self._flushing:
            time.sleep(min(seconds, 1.0))
            return
        if self._stop.wait(seconds):
            raise Stopping

    # -- scheduling -------------------------------------------------------------------------

    def _schedule_cycle(self, first_run: datetime | None = None) -> None:
        schedule = self._config.schedule
        options: dict[str, Any] = {
            "id": CYCLE_JOB,
            # One instance delivering after its cycle, one in the next cycle, and a tick that
            # run_cycle skips with its own message: APScheduler never has to log "maximum
            # number of running instances reached".
            "max_instances": 3,
            "coalesce": True,
            "misfire_grace_time": max(1, int(interval(schedule).total_seconds() / 2)),
            "replace_existing": True,
        }
        if first_run is not None:
            options["next_run_time"] = first_run
        self._scheduler.add_job(self.run_cycle, trigger(schedule), **options)

    def _schedule_delivery(self) -> None:
        if self._config.slack is None:
            if self._scheduler.get_job(DELIVERY_JOB) is not None:
                self._scheduler.remove_job(DELIVERY_JOB)
            return
        self._scheduler.add_job(
            self.run_delivery,
            IntervalTrigger(seconds=max(1, self._config.slack.retry_every.total_seconds())),
            id=DELIVERY_JOB,
            max_instances=2,  # as the cycle job's: run_delivery returns at once while one runs
            coalesce=True,
            replace_existing=True,
        )

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load the file again; keep the old configuration if the new one is invalid."""
        self._mtime = _mtime(self._path)
        try:
            new = load_config(self._path, self._env)
        except ConfigError as error:
            log.error("configuration not reloaded, the old one stays in force:\n%s", error)
            return
        old, self._config = self._config, new
        self._sender = self._sender_factory(new)
        for section in ("state", "metrics"):
            if getattr(old, section) != getattr(new, section):
                log.warning("%s changed: it takes effect after a restart", section)
        if old.schedule != new.schedule:
            self._schedule_cycle()
        self._schedule_delivery()
        log.info(
            "configuration reloaded: %d budget(s); it applies from the next cycle", len(new.budgets)
        )

    # -- health -------------------------------------------------------------------------------

    def healthz(self) -> tuple[bool, str]:
        if not self._scheduler.running or self._scheduler.get_job(CYCLE_JOB) is None:
            return False, "the scheduler is not running"
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        """Ready while the last export succeeded within 3 intervals (real time)."""
        limit = 3 * interval(self._config.schedule).total_seconds()
        last = self._health.last_success
        failure = (
            f"; last failure: {self._health.last_failure}" if self._health.last_failure else ""
        )
        if last is None:
            return False, f"no successful export yet{failure}"
        age = time.monotonic() - last
        if age > limit:
            return False, f"last successful export {_ago(age)} ago (over 3 intervals){failure}"
        return True, f"last successful export {_ago(age)} ago"

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("%s received: shutting down", signal.Signals(signum).name)
            self._stop.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP received: reloading the configuration")
            self._reload.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)


def trigger(schedule: ScheduleConfig) -> BaseTrigger:
    """The APScheduler trigger for `schedule`, in its time zone."""
    zone = schedule.zone
    jitter = int(schedule.jitter.total_seconds()) if schedule.jitter else None
    if schedule.cron is not None:
        cron = CronTrigger.from_crontab(schedule.cron, timezone=zone)
        if jitter:
            cron.jitter = jitter
        return cron
    assert schedule.every is not None
    return IntervalTrigger(seconds=schedule.every.total_seconds(), timezone=zone, jitter=jitter)


def interval(schedule: ScheduleConfig, now: datetime | None = None) -> timedelta:
    """The time between two cycles (for a cron line: between its next two fire times)."""
    if schedule.every is not None:
        return schedule.every
    cron = CronTrigger.from_crontab(str(schedule.cron), timezone=schedule.zone)
    moment = now or datetime(2026, 1, 5, tzinfo=schedule.zone)  # a Monday: a typical week
    first: datetime | None = cron.get_next_fire_time(None, moment)
    if first is None:
        return timedelta(days=1)
    second: datetime | None = cron.get_next_fire_time(first, first + timedelta(seconds=1))
    return second - first if second is not None else timedelta(days=1)


def _describe_schedule(schedule: ScheduleConfig) -> str:
    what = f"cron {schedule.cron!r}" if schedule.cron else f"every {schedule.every}"
    return f"cycles {what} in {schedule.timezone}"


def _slack_sender(config: Config) -> slack.Sender | None:
    return slack.sender_from_config(config.slack) if config.slack is not None else None


def _basic_auth(config: Config) -> tuple[str, str] | None:
    password = config.metrics.secret_basic_auth_password()
    user = config.metrics.basic_auth_user
    return (user, password) if user is not None and password is not None else None


def _tls(config: Config) -> tuple[Path, Path] | None:
    cert, key = config.metrics.tls_cert_file, config.metrics.tls_key_file
    return (cert, key) if cert is not None and key is not None else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _ago(age: float) -> str:
    seconds = int(age)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def run(config_path: Path, *, env: Mapping[str, str] | None = None) -> int:
    """`costwatch run`: 0 after a clean shutdown, 2 when it cannot start."""
    try:
        daemon = Daemon(config_path, env=env)
    except ConfigError as error:
        print(error, file=sys.stderr, flush=True)
        return 2
    except (StateError, OSError, CostwatchError) as error:
        log.error("cannot start: %s", error)
        return 2
    try:
        return daemon.run()
    except OSError as error:  # e.g. the metrics port is taken
        log.error("cannot serve metrics on %s: %s", daemon.listen, error.strerror or error)
        return 2
    except CostwatchError as error:  # e.g. the state became unreadable during start-up
        log.error("cannot start: %s", error)
        return 2
