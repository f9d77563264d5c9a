"""The usage history's keeper: `keeping.plan`'s work, done one export at a time (`Keeper`).

Used by the daemon (a thread of its own, `Keeper.loop`) and by `costwatch backfill`
(`Keeper.step` until nothing is left). Each step plans afresh from the store, then does the
first piece of work:

- a **day** (current, settle, repair, backfill): one export of [local midnight, next local
  midnight) of its zone, loaded and checked like a cycle's (404 = a day without usage), stored
  with `put_day` in one transaction that replaces the day (a repair's mark moves on in the same
  transaction). SIGKILL at any moment leaves the day as it was or as exported: nothing lost,
  nothing twice, and the next plan starts where this one stopped;
- a **reconcile**: one export of the current periods' closed days, compared per key and model
  with the sum of the stored days (`keeping.compare`). Equal: the zone's `reconciled` mark is
  set. Different: logged with its size, counted, and the repair marks set, so the days are
  exported again one by one (`keeping.py` says why).

Exports never run beside each other: the keeper takes `exports` (the daemon's lock, which a
cycle holds for its export) for the whole of a step, waiting on the stop signal. Every wait
ends at the stop signal; the export in flight is aborted by it (`Deadline`), and `Stopping`
propagates with nothing of the step recorded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from costwatch import budgets, keeping, partitions, periods, usage
from costwatch.config import Config
from costwatch.config.models import DEFAULT_WORKSPACE
from costwatch.deadline import Deadline, StopSignal
from costwatch.errors import ExportError, StateError, Stopping, UsageError
from costwatch.fetch import fetch_range
from costwatch.keeping import DayExport, Reconcile, Work
from costwatch.langdock import LangdockClient
from costwatch.metrics.history import HistoryMetrics
from costwatch.partitions import Partition
from costwatch.reporting import days_needed
from costwatch.state import Store
from costwatch.state.daily import prune_cutoff

__all__ = ["Done", "Keeper", "settings_for"]

log = logging.getLogger("costwatch.keeper")

IDLE_SECONDS = 60.0  # with nothing to do, how often the keeper looks again
MAX_BACKOFF_SECONDS = 900.0  # after failed exports, the longest pause before the next one
_LOCK_POLL = 0.5  # seconds between looks at the stop signal while a cycle exports

Connect = Callable[[Deadline], AbstractContextManager[LangdockClient]]
ConnectTo = Callable[[str, Deadline], AbstractContextManager[LangdockClient]]  # by workspace


@dataclass(frozen=True)
class Done:
    """One piece of work done: what, how many rows it stored or compared, how long it took."""

    work: Work
    rows: int
    seconds: float
    difference: keeping.Difference | None = None  # a reconcile's finding


def running_periods(config: Config, now: datetime) -> list[periods.Period]:
    """The periods a cycle evaluates at `now`: every budget's, and the default one."""
    default = periods.current(config.defaults.period, config.schedule.zone, now)
    return [rule.period for rule in budgets.rules(config, now)] + [default]


def settings_for(
    config: Config, now: datetime, backfill_days: int | None = None
) -> keeping.Settings:
    """The planner's settings: `backfill_days` (default `history.backfill_days`, else the
    longest running period, in days, or what the scheduled reports read if more), settling,
    and the first day the store keeps."""
    history = config.history
    if backfill_days is None:
        backfill_days = history.backfill_days
    if backfill_days is None:
        longest = max(p.length for p in running_periods(config, now))
        backfill_days = max(math.ceil(longest / timedelta(days=1)), days_needed(config, now))
    return keeping.Settings(
        settle_after=history.settle_after,
        backfill_days=min(backfill_days, keeping.MAX_BACKFILL_DAYS),
        # the day after the store's prune cutoff: what pruning would take is never exported
        keep_from=prune_cutoff(now, config.state.retention) + timedelta(days=1),
    )


class Keeper:
    """Does the history's work over `state`, exporting through clients `connect` makes (or,
    by workspace, `connect_to`: each workspace's work exports with its own client)."""

    def __init__(
        self,
        *,
        state: Store,
        connect: Connect | None = None,
        connect_to: ConnectTo | None = None,
        stop: StopSignal,
        clock: Callable[[], datetime],
        metrics: HistoryMetrics | None = None,
        exports: threading.Lock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self._state = state
        self._leading = leading  # a standby replica's keeper idles: the leader keeps the history
        self._connect = connect
        self._connect_to = connect_to
        self._stop = stop
        self._clock = clock
        self._metrics = metrics
        self._exports = exports or threading.Lock()
        self._monotonic = monotonic
        self._last_plan: keeping.Plan | None = None
        self._filling = False  # the loop said days are missing, and has not said done yet

    def _client(self, workspace: str, deadline: Deadline) -> AbstractContextManager[LangdockClient]:
        """A client of `workspace` (`connect_to`), or the one `connect` makes."""
        if self._connect_to is not None:
            return self._connect_to(workspace, deadline)
        if self._connect is None:
            raise ValueError("a keeper needs connect or connect_to")
        return self._connect(deadline)

    @property
    def exports(self) -> threading.Lock:
        """Held while the keeper exports; a cycle takes it for its own export."""
        return self._exports

    # -- planning ---------------------------------------------------------------------------

    def plan(
        self, config: Config, now: datetime, settings: keeping.Settings | None = None
    ) -> keeping.Plan:
        """What is left to do at `now` in every workspace, read from each one's partition of
        the store (`partitions.py`); the progress metrics set."""
        settings = settings or settings_for(config, now)
        scopes = keeping.scopes(running_periods(config, now))
        plans = {c.name: self._plan_of(c.name, scopes, now, settings) for c in config.connections}
        plan = _in_workspaces(plans)
        self._last_plan = plan
        return plan

    def _plan_of(
        self, workspace: str, scopes: list[keeping.Scope], now: datetime, settings: keeping.Settings
    ) -> keeping.Plan:
        """One workspace's plan, over its partition of the store."""
        history = Partition(self._state, workspace)
        stored = {
            scope.name: history.stored_days(scope.name, *keeping.window(scope, now, settings))
            for scope in scopes
        }
        marks = {name: history.mark(name) for scope in scopes for name in scope.marks}
        plan = keeping.plan(scopes, now, stored, marks, settings)
        if self._metrics is not None:
            for scope in scopes:
                self._metrics.progress(
                    workspace,
                    scope.name,
                    stored=len(stored[scope.name]),
                    remaining=plan.missing_by_zone.get(scope.name, 0),
                )
        return plan

    # -- doing --------------------------------------------------------------------------------

    def step(
        self,
        config: Config,
        settings: keeping.Settings | None = None,
        wanted: Callable[[Work], bool] | None = None,
    ) -> Done | None:
        """Plan at the clock's now and do the first piece of work (of those `wanted`); None
        when there is none. Raises ExportError / UsageError (nothing stored), StateError,
        Stopping."""
        with self.exclusive():
            now = self._clock()
            work = self.plan(config, now, settings).work
            chosen = next((w for w in work if wanted is None or wanted(w)), None)
            return None if chosen is None else self.do(chosen, now)

    def do(self, work: Work, now: datetime) -> Done:
        """One piece of work at `now` (the caller holds `exports`)."""
        started = self._monotonic()
        try:
            with self._client(work.workspace, Deadline(stop=self._stop)) as client:
                exported = fetch_range(client, work.start, work.end).usage
        except (ExportError, UsageError):
            if self._metrics is not None:
                self._metrics.failed(work.kind)
            raise
        if isinstance(work, DayExport):
            done = self._store_day(work, exported, now, started)
        else:
            done = self._reconcile(work, exported, now, started)
        if self._metrics is not None:
            self._metrics.exported(work.kind)
        return done

    def _store_day(
        self, work: DayExport, exported: usage.Usage, now: datetime, started: float
    ) -> Done:
        with self._state.transaction() as transaction:
            history = Partition(transaction, work.workspace)
            history.put_day(
                work.zone.key, work.day, exported.frame, exported_at=now, settled=work.settled
            )
            if work.kind == "repair":
                history.set_mark(*keeping.repaired(work))
        done = Done(work, exported.frame.height, self._monotonic() - started)
        log.debug(
            "history: stored %s (%s): %d row(s), %s, in %.1fs (%s)",
            work.day.isoformat(),
            keeping.where(work.workspace, work.zone),
            done.rows,
            "settled" if work.settled else "not settled yet",
            done.seconds,
            work.kind,
        )
        return done

    def _reconcile(
        self, work: Reconcile, exported: usage.Usage, now: datetime, started: float
    ) -> Done:
        stored = Partition(self._state, work.workspace).usage_between(
            work.zone.key, work.first, work.last
        )
        difference = keeping.compare(stored, exported.frame, work.days)
        with self._state.transaction() as transaction:
            marks = (
                [work.mark_when_equal(now)] if difference.none else work.marks_when_different(now)
            )
            for name, at in marks:
                Partition(transaction, work.workspace).set_mark(name, at)
        done = Done(work, exported.frame.height, self._monotonic() - started, difference)
        span = work.describe().removeprefix("reconcile ")
        if difference.none:
            log.info(
                "history: reconciled %s with one export of it: the stored days agree"
                " ($%.2f, %d row(s))",
                span,
                difference.exported_usd,
                done.rows,
            )
        else:
            log.warning(
                "history: the stored days %s differ from one export of them: %s;"
                " the %d day(s) are exported again one by one",
                span,
                difference.describe(),
                work.days,
            )
        if self._metrics is not None:
            self._metrics.reconciled(work.workspace, work.zone.key, difference)
        return done

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold `exports` (nobody else exports meanwhile), waiting for it on the stop signal:
        the keeper for a step, a cycle for its own export."""
        while not self._exports.acquire(timeout=_LOCK_POLL):
            if self._stop.is_set():
                raise Stopping("the daemon is shutting down")
        try:
            if self._stop.is_set():
                raise Stopping("the daemon is shutting down")
            yield
        finally:
            self._exports.release()

    # -- the daemon's thread ----------------------------------------------------------------

    def loop(self, config: Callable[[], Config], after: threading.Event | None = None) -> None:
        """Work until the stop signal: a step, then `history.pace` (after a failure, a pause
        that doubles up to MAX_BACKOFF_SECONDS; with nothing to do, IDLE_SECONDS). Begins once
        `after` is set (the daemon's first cycle: it comes first at start-up). Never raises."""
        while after is not None and not after.wait(_LOCK_POLL):
            if self._stop.is_set():
                return
        failures = 0
        while not self._stop.is_set():
            current = config()
            pace = current.history.pace.total_seconds()
            if not current.history.enabled or not self._leading():
                wait = IDLE_SECONDS
            else:
                try:
                    done = self.step(current)
                    failures = 0
                    wait = pace if done is not None else IDLE_SECONDS
                    self._announce(pace)
                except Stopping:
                    return
                except (ExportError, UsageError, StateError) as error:
                    failures += 1
                    wait = min(pace * 2**failures, MAX_BACKOFF_SECONDS)
                    log.warning("history: %s; trying again in %.0fs", _failure(error), wait)
                except Exception:
                    failures += 1
                    wait = MAX_BACKOFF_SECONDS
                    log.exception("history: the keeper failed unexpectedly (a bug)")
            if self._stop.wait(wait):
                return

    def _announce(self, pace: float) -> None:
        """INFO when days are found missing, and when the history is whole again (each day
        stored is a DEBUG line: a backfill is a few hundred of them)."""
        plan = self._last_plan
        if plan is None:
            return
        if plan.remaining_days and not self._filling:
            self._filling = True
            log.info(
                "history: %d closed day(s) to export (%d of the running periods), one every %.0fs",
                plan.remaining_days,
                plan.missing_current,
                pace,
            )
        elif not plan.remaining_days and self._filling:
            self._filling = False
            log.info("history: every closed day of the keeper's window is stored")


def _in_workspaces(plans: Mapping[str, keeping.Plan]) -> keeping.Plan:
    """Each workspace's plan (by name) as one: the work of all in priority order (a kind
    before the next, in every workspace), each piece naming its workspace; `missing_by_zone`
    by partition key (`partitions.key`). One workspace, "default": its plan as it is."""
    if list(plans) == [DEFAULT_WORKSPACE]:
        return plans[DEFAULT_WORKSPACE]
    work = [replace(w, workspace=name) for name, plan in plans.items() for w in plan.work]
    return keeping.Plan(
        work=tuple(sorted(work, key=lambda w: keeping.KINDS.index(w.kind))),
        missing_current=sum(plan.missing_current for plan in plans.values()),
        missing_backfill=sum(plan.missing_backfill for plan in plans.values()),
        missing_by_zone={
            partitions.key(name, zone): missing
            for name, plan in plans.items()
            for zone, missing in plan.missing_by_zone.items()
        },
    )


def _failure(error: ExportError | UsageError | StateError) -> str:
    """How a failed step reads in the log, like a failed cycle's: the reason first."""
    if isinstance(error, ExportError):
        return f"export failed ({error.reason}): {error}"
    if isinstance(error, UsageError):
        return f"export failed (usage): {error}"
    return f"cannot write the state: {error}"
