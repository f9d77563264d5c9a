"""The daemon: APScheduler runs cycles, delivery follows, signals stop and reload it.

- Start-up, in this order: the configuration, the state file (its writer lock first: a second
  `run` on the same file exits 2 naming the holder), the metrics port, the scheduler. Nothing
  is delivered and no cycle runs until all of it succeeded: a taken port exits 2 having sent
  nothing.
- One cycle at start-up, then on `schedule.every` (optionally jittered) or `schedule.cron`, in
  `schedule.timezone`; never two at once (a second is skipped, logged), missed runs coalesced,
  a misfire grace of half an interval. A failed cycle is logged and counted; the next runs as
  planned. Each cycle runs in a thread of its own (a daemon thread: see shutdown).
- Slack delivery runs in its own thread, after each cycle and every `slack.retry_every`: a
  round that waits (pacing, Slack's Retry-After) never holds a cycle up.
- SIGTERM / SIGINT set the stop signal (`costwatch.deadline`): scheduling stops, and every wait
  ends at once: the Langdock request in flight is aborted (its socket shut down), retry sleeps,
  Slack pacing and Retry-After waits raise `Stopping`. The cycle it cuts short is logged at INFO
  as interrupted, nothing of it recorded, not counted as failed. Then, within
  `schedule.shutdown_grace` in all: wait for the cycle and delivery to end, flush the outbox
  once with the time left (a post never outlasts it), close the HTTP server and the state,
  exit 0. What cannot be cut short (a connect or DNS lookup, a Slack post already in flight,
  both bounded by their timeouts) and is still running at the end of the grace is left behind,
  logged: the state is written in whole transactions, so it stays consistent.
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

from costwatch import cycle, langdock, slack
from costwatch.config import Config, ScheduleConfig, load_config
from costwatch.deadline import Deadline, Stopping, StopSignal
from costwatch.errors import ConfigError, CostwatchError, StateError
from costwatch.metrics import Metrics, MetricsServer, Snapshot
from costwatch.state import open_store

log = logging.getLogger("costwatch.daemon")

CYCLE_JOB = "cycle"
WATCH_SECONDS = 2.0  # how often the config file's mtime is looked at
CLOSING_SECONDS = 0.75  # kept from the grace for closing the HTTP server and the state
FLUSH_SLACK_SECONDS = 0.25  # past the flush's deadline, for a post that ends right at it

__all__ = ["Daemon", "Stopping", "interval", "run", "trigger"]


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
        self._stop = StopSignal()
        self._reload = threading.Event()
        self._cycle_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._deliver_now = threading.Event()  # a cycle asks the delivery thread for a round
        self._reported: set[tuple[str, str]] = set()  # Slack errors logged, for the process life
        self._config = load_config(config_path, env)
        self._mtime = _mtime(config_path)
        self._sender = self._sender_factory(self._config)
        self._state = open_store(self._config.state, command="costwatch run")
        try:
            self._metrics = Metrics(max_series=self._config.metrics.max_series)
            self._state.on_damaged = self._metrics.state_damaged
            self._health = _Health()
            self._scheduler = BackgroundScheduler(timezone=self._config.schedule.zone)
            self._server = MetricsServer(
                self._metrics.exposition_parts,
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
        _spawn("costwatch-delivery", self._delivery_loop)

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
        """Stop scheduling and every wait; within the grace, let the cycle and delivery end,
        flush the outbox with the time left, close. Never waits past the grace."""
        grace = self._config.schedule.shutdown_grace.total_seconds()
        left = Deadline.after(grace - CLOSING_SECONDS)  # time only: the stop is already set
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        guarded = (("a cycle", self._cycle_lock), ("Slack delivery", self._deliver_lock))
        busy = [what for what, lock in guarded if not _free_within(lock, left)]
        if not busy and not self._flush(left):
            busy.append("the final Slack delivery")
        self._server.stop()
        if busy:
            log.warning(
                "%s still running after the %.0f s grace; exiting without it (the state is "
                "written in whole transactions: nothing half-written)",
                " and ".join(busy),
                grace,
            )
        else:
            self._state.close()
        log.info("costwatch stopped")

    # -- jobs -----------------------------------------------------------------------------------

    def run_cycle(self) -> None:
        """One cycle, then a delivery round is asked for. Never raises; a shutdown cuts it
        short (`Stopping`), which is logged at INFO and not counted as a failed cycle."""
        if self._stop.is_set():
            return
        if not self._cycle_lock.acquire(blocking=False):
            log.warning("a cycle is still running; skipping this one")
            return
        started = time.monotonic()
        try:
            if self._stop.is_set():  # stopped meanwhile: shutdown may be closing the state
                return
            self._cycle(self._clock())
        except Stopping:
            log.info(
                "cycle interrupted by shutdown after %.1fs; nothing of it was recorded",
                time.monotonic() - started,
            )
        except StateError as error:  # locked, full disk: nothing of this cycle was recorded
            log.error("cycle failed: %s; the next cycle tries again", error)
            self._metrics.cycle_finished("error", 0.0)
        except Exception:
            log.exception("cycle failed")
            self._metrics.cycle_finished("error", 0.0)
        finally:
            self._cycle_lock.release()
        self._deliver_now.set()

    def run_delivery(self) -> None:
        """One round of delivering due outbox rows; never raises."""
        if self._sender is None or self._stop.is_set():
            return
        with self._deliver_lock:
            if self._stop.is_set():  # stopped meanwhile: the final flush has the outbox
                return
            try:
                self._deliver(self._clock(), Deadline(stop=self._stop))
            except Exception:
                log.exception("delivery failed")

    def _start_cycle(self) -> None:
        """The scheduler's job: the cycle in a daemon thread of its own. APScheduler joins its
        pool's threads at exit, so a cycle stuck in what no stop can cut short (a connect)
        would otherwise hold the process past the grace."""
        _spawn("costwatch-cycle", self.run_cycle)

    def _delivery_loop(self) -> None:
        """After each cycle and every `slack.retry_every`, a delivery round, until stopped."""
        with self._stop.on_stop(self._deliver_now.set):
            while not self._stop.is_set():
                slack_config = self._config.slack
                every = slack_config.retry_every.total_seconds() if slack_config else 60.0
                self._deliver_now.wait(max(1.0, every))
                self._deliver_now.clear()
                self.run_delivery()

    def _cycle(self, now: datetime) -> None:
        config = self._config
        started = time.monotonic()
        deadline = Deadline(stop=self._stop)
        with langdock.connect(config.langdock, deadline=deadline) as client:
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

    def _deliver(self, now: datetime, deadline: Deadline) -> None:
        config = self._config
        sender = self._sender
        if config.slack is None or sender is None or not self._state.pending(now, limit=1):
            return
        report = slack.deliver(
            self._state,
            sender,
            config.slack,
            now,
            deadline=deadline,
            sleep=deadline.wait,
            monotonic=time.monotonic,
            reported=self._reported,
        )
        self._metrics.alerts_sent(report.sent)
        for code, count in {**report.permanent_errors, **report.transient_errors}.items():
            self._metrics.slack_error(code, count)
        self._metrics.alerts_pending(report.pending)
        if report.sent or report.failed or report.interrupted:  # failures were logged already
            log.debug(
                "delivered %d alert(s) in %d message(s); %d failed, %d pending%s",
                report.sent,
                report.messages,
                report.failed,
                report.pending,
                "; the rest waits (interrupted by shutdown)" if report.interrupted else "",
            )

    def _flush(self, deadline: Deadline) -> bool:
        """Deliver what is pending once more on the way out, within `deadline`. In a daemon
        thread, so a post that outlasts its timeout is left behind; False if it was."""

        def flush() -> None:
            try:
                with self._deliver_lock:
                    self._deliver(self._clock(), deadline)
            except Exception:
                log.exception("final delivery failed; the rows stay in the outbox")

        thread = _spawn("costwatch-flush", flush)
        thread.join(deadline.remaining() + FLUSH_SLACK_SECONDS)
        return not thread.is_alive()

    # -- scheduling -------------------------------------------------------------------------

    def _schedule_cycle(self, first_run: datetime | None = None) -> None:
        schedule = self._config.schedule
        options: dict[str, Any] = {
            "id": CYCLE_JOB,
            # The job only starts the cycle's thread and returns at once, so APScheduler never
            # has to log "maximum number of running instances reached"; a tick during a cycle
            # is skipped by run_cycle with its own message.
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": max(1, int(interval(schedule).total_seconds() / 2)),
            "replace_existing": True,
        }
        if first_run is not None:
            options["next_run_time"] = first_run
        self._scheduler.add_job(self._start_cycle, trigger(schedule), **options)

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


def _spawn(name: str, target: Callable[[], None]) -> threading.Thread:
    """A daemon thread: the process may exit while it is stuck (see shutdown)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _free_within(lock: threading.Lock, deadline: Deadline) -> bool:
    """Whether `lock` is free (nobody runs what it guards) before `deadline`."""
    if not lock.acquire(timeout=deadline.remaining()):
        return False
    lock.release()
    return True


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
