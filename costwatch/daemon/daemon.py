"""The daemon: APScheduler runs cycles, delivery follows, signals stop and reload it.

- Start-up, in this order: the configuration, the state (a SQLite file's writer lock first: a
  second `run` on the same file exits 2 naming the holder; on PostgreSQL several `run`s are
  replicas, and the elected leader alone runs cycles and delivers: `succession.py`), the
  metrics port, the campaign for leader, the scheduler. Nothing is delivered and no cycle runs
  until all of it succeeded: a taken port exits 2 having sent nothing.
- One cycle at start-up, then on `schedule.every` (optionally jittered) or `schedule.cron`, in
  `schedule.timezone`; never two at once (a second is skipped: logged at INFO, a WARNING when
  the one running is over an interval old), missed runs coalesced,
  a misfire grace of half an interval. A failed cycle is logged and counted; the next runs as
  planned. Each cycle runs in a thread of its own (a daemon thread: see shutdown).
- Slack delivery (`courier.py`) runs in its own thread, after each cycle and every
  `slack.retry_every`: a round that waits (pacing, Slack's Retry-After) never holds a cycle up.
- The usage history's keeper (`costwatch/keeper.py`) runs in its own thread too: backfill,
  settling and the daily reconcile, one export at a time, `history.pace` apart. A cycle and the
  keeper never export at once (`exports`, a lock): a cycle waits for the keeper's one export.
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
- The scheduler is the only place that reads the clock (`clock`), and passes `now` down; how
  long things took and how old the last good export is are read on `monotonic`. Both are
  parts the daemon is given (`Daemon(config, state=, metrics=, server=, sender=, clock=,
  monotonic=)`); `Daemon.from_path` makes the parts for `costwatch run`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from costwatch import cycle, langdock, recent, slack
from costwatch.config import Config, load_config
from costwatch.daemon import schedule
from costwatch.daemon.courier import Courier
from costwatch.daemon.readiness import Readiness
from costwatch.daemon.succession import Succession
from costwatch.deadline import Deadline, StopSignal, free_within
from costwatch.errors import ConfigError, StateError, Stopping
from costwatch.keeper import Keeper
from costwatch.metrics import Metrics, MetricsServer, Snapshot
from costwatch.state import Store, leadership, open_store

log = logging.getLogger("costwatch.daemon")

CYCLE_JOB = "cycle"
WATCH_SECONDS = 2.0  # how often the config file's mtime is looked at
CLOSING_SECONDS = 0.75  # kept from the grace for closing the HTTP server and the state

__all__ = ["Daemon"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _slack_sender(config: Config) -> slack.Sender | None:
    return slack.sender_from_config(config.slack) if config.slack is not None else None


class Daemon:
    """costwatch run: schedules cycles and delivery over the parts it is given.

    The composition root: `Daemon(config, state=, metrics=, server=, sender=, clock=,
    monotonic=)` runs over parts made elsewhere (tests hand in their own clock and monotonic
    clock; the demo its terminal sender and fast clock); `Daemon.from_path` makes them from
    the configuration file, as `costwatch run` does. The daemon owns what it is given: its
    `shutdown` closes the server and the state. `path` (with `env` for its `${VAR}`s) is the
    file to reload on SIGHUP or when it changes; `make_sender` makes the sender of a reloaded
    configuration (None: `sender` stays).
    """

    def __init__(
        self,
        config: Config,
        *,
        state: Store,
        metrics: Metrics,
        server: MetricsServer,
        sender: slack.Sender | None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
        make_sender: Callable[[Config], slack.Sender | None] | None = None,
    ) -> None:
        self._config = config
        self._state = state
        self._recent = recent.Cache()  # the stored days the forecasts read, between cycles
        self._metrics = metrics
        self._server = server
        self._clock = clock
        self._monotonic = monotonic
        self._path = path
        self._env = env
        self._make_sender = make_sender
        self._mtime = _mtime(path) if path is not None else None
        self._stop = StopSignal()
        self._reload = threading.Event()
        self._cycle_lock = threading.Lock()
        self._cycle_started = 0.0  # `monotonic()` when the running (or last) cycle began
        self._first_cycle = threading.Event()  # the keeper begins after it
        self._courier = Courier(
            state=state,
            metrics=metrics,
            stop=self._stop,
            clock=clock,
            monotonic=monotonic,
            slack=config.slack,
            sender=sender,
            leading=lambda: self._succession.leading,
        )
        self._succession = Succession(leadership(state), metrics, self._stop, self._start_cycle)
        self._readiness = Readiness(monotonic)
        self._keeper = Keeper(
            state=state,
            connect_to=lambda name, d: langdock.connect(self._config, deadline=d, workspace=name),
            stop=self._stop,
            clock=clock,
            metrics=metrics.history,
            monotonic=monotonic,
            leading=lambda: self._succession.leading,
        )
        self._scheduler = BackgroundScheduler(timezone=config.schedule.zone)
        server.bind_probes(healthz=self.healthz, readyz=self.readyz)

    @classmethod
    def from_path(
        cls,
        path: Path,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> Daemon:
        """The daemon of `costwatch run`: the configuration read from `path` (raises
        ConfigError), then its state (StateError when another process holds it), metrics and
        server; it reloads `path` on SIGHUP or when the file changes."""
        mtime = _mtime(path)  # before reading it: a change while starting up is one to reload
        config = load_config(path, env)
        daemon = cls.from_config(config, path=path, env=env, clock=clock, make_sender=_slack_sender)
        daemon._mtime = mtime
        return daemon

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        sender: slack.Sender | None = None,
        make_sender: Callable[[Config], slack.Sender | None] = _slack_sender,
        clock: Callable[[], datetime] = _utc_now,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Daemon:
        """The parts `config` describes: the state first (its writer lock: a second `run` on
        the same file is refused before anything else is made), the metrics and the server
        (bound at `start`); `sender` (default: `make_sender(config)`, Slack's)."""
        chosen = sender if sender is not None else make_sender(config)
        state = open_store(config.state, command="costwatch run", lead=False)
        try:
            metrics = Metrics(max_series=config.metrics.max_series)
            state.on_damaged = metrics.state_damaged
            server = MetricsServer(
                metrics.exposition_parts,
                host=config.metrics.host,
                port=config.metrics.port,
                basic_auth=config.metrics.basic_auth(),
                tls=config.metrics.tls(),
                gzipped=metrics.exposition_gzip,  # to scrapers that accept gzip
            )
            return cls(
                config,
                state=state,
                metrics=metrics,
                server=server,
                sender=chosen,
                clock=clock,
                path=path,
                env=env,
                make_sender=make_sender if sender is None else None,
            )
        except BaseException:
            state.close()  # and with it the writer lock
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
                self._succession.adopt()  # a standby serves the leader's last snapshot
                changed = self._path is not None and _mtime(self._path) != self._mtime
                if self._reload.is_set() or changed:
                    self._reload.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        """Serve metrics, then schedule the cycles and delivery: nothing is sent before the
        port is bound (and the state's writer lock was taken before, in `__init__`)."""
        self._server.start()
        self._succession.start()
        log.info(
            "costwatch started: metrics on %s:%d, state %s, %s",
            self._config.metrics.host,
            self._server.port,
            self._config.state.where(),
            schedule.describe(self._config.schedule),
        )
        self._metrics.alerts_pending(self._state.pending_count())
        self._scheduler.start()
        # APScheduler runs on the real clock; `self._clock` is what cycles are told "now" is.
        self._schedule_cycle(first_run=datetime.now(UTC))
        _spawn("costwatch-delivery", self._courier.loop)
        _spawn("costwatch-history", lambda: self._keeper.loop(self._current, self._first_cycle))

    def stop(self) -> None:
        self._stop.set()

    def _current(self) -> Config:
        return self._config  # the keeper reads the configuration in force (reload)

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
        guarded = (
            ("a cycle", self._cycle_lock),
            ("Slack delivery", self._courier.lock),
            ("the history's keeper", self._keeper.exports),
        )
        busy = [what for what, lock in guarded if not free_within(lock, left)]
        if not busy and not self._courier.flush(left):
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
            running = self._monotonic() - self._cycle_started  # beside a promotion's: routine
            late = running > schedule.interval(self._config.schedule).total_seconds()
            message = "a cycle is still running (for %.0fs); skipping this one"
            log.log(logging.WARNING if late else logging.INFO, message, running)
            return
        started = self._cycle_started = self._monotonic()
        try:
            if self._stop.is_set():  # stopped meanwhile: shutdown may be closing the state
                return
            if not self._succession.may_run():  # a standby: the leader runs it
                return
            with self._keeper.exclusive():  # the keeper's export in flight ends first
                self._cycle(self._clock())
        except Stopping:
            log.info(
                "cycle interrupted by shutdown after %.1fs; nothing of it was recorded",
                self._monotonic() - started,
            )
        except StateError as error:  # locked, full disk: nothing of this cycle was recorded
            log.error("cycle failed: %s; the next cycle tries again", error)
            self._metrics.cycle_finished("error", 0.0)
        except Exception:
            log.exception("cycle failed")
            self._metrics.cycle_finished("error", 0.0)
        finally:
            self._cycle_lock.release()
            self._first_cycle.set()
        self._courier.ask()

    def _start_cycle(self) -> None:
        """The scheduler's job: the cycle in a daemon thread of its own. APScheduler joins its
        pool's threads at exit, so a cycle stuck in what no stop can cut short (a connect)
        would otherwise hold the process past the grace."""
        _spawn("costwatch-cycle", self.run_cycle)

    def _cycle(self, now: datetime) -> None:
        config = self._config
        started = self._monotonic()
        deadline = Deadline(stop=self._stop)
        with langdock.connect_all(config, deadline=deadline) as clients:
            deps = cycle.Deps(
                config=config, clients=clients, state=self._state, recent_days=self._recent
            )
            outcome = cycle.run_once(deps, now)
        seconds = self._monotonic() - started
        if outcome.error is not None:
            reason = getattr(outcome.error, "reason", "usage")
            self._readiness.failed(f"{reason}: {outcome.error}")
            self._metrics.cycle_failed_export(reason, seconds)
            log.warning("cycle failed in %.2fs: export %s (%s)", seconds, reason, outcome.error)
            return
        assert outcome.usage is not None
        snapshot = Snapshot(now, outcome.usage.frame, outcome.findings, outcome.unevaluated)
        self._metrics.cycle_succeeded(snapshot, seconds, outcome.kinds, outcome.failed_reasons)
        self._metrics.reports_queued(report.name for report in outcome.reports)
        self._readiness.succeeded()  # after the snapshot: a ready replica's /metrics is whole
        self._succession.share()
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

    # -- scheduling -------------------------------------------------------------------------

    def _schedule_cycle(self, first_run: datetime | None = None) -> None:
        config = self._config.schedule
        options: dict[str, Any] = {
            "id": CYCLE_JOB,
            # The job only starts the cycle's thread and returns at once, so APScheduler never
            # has to log "maximum number of running instances reached"; a tick during a cycle
            # is skipped by run_cycle with its own message.
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": max(1, int(schedule.interval(config).total_seconds() / 2)),
            "replace_existing": True,
        }
        if first_run is not None:
            options["next_run_time"] = first_run
        self._scheduler.add_job(self._start_cycle, schedule.trigger(config), **options)

    # -- reload -------------------------------------------------------------------------------

    def reload(self) -> None:
        """Load the file again; keep the old configuration if the new one is invalid."""
        if self._path is None:
            return
        self._mtime = _mtime(self._path)
        try:
            new = load_config(self._path, self._env)
        except ConfigError as error:
            log.error("configuration not reloaded, the old one stays in force:\n%s", error)
            return
        old, self._config = self._config, new
        self._courier.slack = new.slack
        if self._make_sender is not None:
            self._courier.sender = self._make_sender(new)
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
        """Ready while the last export succeeded within 3 intervals (real time); a standby is
        not ready (503 "standby"): it serves no traffic, yet is alive."""
        return self._succession.standby() or self._readiness.answer(
            schedule.interval(self._config.schedule)
        )

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


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
