"""`costwatch backfill`: the closed days missing from the usage history in the last N days,
exported day by day, paced, with a line of progress per day; with `workspaces:`, every
workspace's, each with its own client into its own partition of the store (`partitions.py`).

The work is the keeper's (`costwatch/keeper.py`): one export per day, stored in one
transaction, so a second run (after a crash, SIGKILL included, or an interruption) skips what is
stored and goes on from there. It takes the state file's writer lock like `check` (a running
`costwatch run` keeps the history itself, so backfill waits a little, then refuses naming it).
SIGINT and SIGTERM abort the export in flight and stop at once, keeping what is stored.

Exit codes: 0 every day of the window is stored; 2 it is not (an export failed, the state or
the configuration cannot be used, or a signal stopped it), what was stored is kept.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TextIO

from costwatch import keeping, langdock
from costwatch.cli.check import EXIT_ERROR, EXIT_OK, STATE_WAIT_SECONDS
from costwatch.config import Config
from costwatch.deadline import Deadline, StopSignal
from costwatch.errors import ExportError, StateError, Stopping, UsageError
from costwatch.keeper import Keeper, running_periods, settings_for
from costwatch.keeping import DayExport, Work
from costwatch.state import open_store

__all__ = ["run_backfill"]


def run_backfill(
    config: Config,
    *,
    days: int | None,
    pace: timedelta | None = None,
    out: TextIO = sys.stdout,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Export the missing closed days of the last `days` (default: `history.backfill_days`,
    else the longest period in use) at `pace` (default `history.pace`); see the module."""
    stop = StopSignal()
    with _signals_set(stop):
        try:
            state = open_store(config.state, wait=STATE_WAIT_SECONDS, command="costwatch backfill")
        except StateError as error:
            print(f"costwatch: {error}", file=sys.stderr)
            return EXIT_ERROR
        with state:
            keeper = Keeper(
                state=state,
                connect_to=lambda name, deadline: langdock.connect(
                    config, deadline=deadline, workspace=name
                ),
                stop=stop,
                clock=clock,
            )
            return _backfill(
                config,
                keeper,
                days=days,
                pace=config.history.pace if pace is None else pace,
                stop=stop,
                out=out,
                clock=clock,
            )


def _backfill(
    config: Config,
    keeper: Keeper,
    *,
    days: int | None,
    pace: timedelta,
    stop: StopSignal,
    out: TextIO,
    clock: Callable[[], datetime],
) -> int:
    now = clock()
    settings = settings_for(config, now, days)
    wanted = _in_window(settings.backfill_days, now)
    started = time.monotonic()
    done = 0
    try:
        total = sum(map(wanted, keeper.plan(config, now, settings).work))
        zones = ", ".join(scope.name for scope in keeping.scopes(running_periods(config, now)))
        if config.keyed_by_workspace:  # every workspace's days, each in its own partition
            zones += " in workspaces " + ", ".join(c.name for c in config.connections)
        print(
            f"backfill: {total} closed day(s) of the last {settings.backfill_days} to export"
            f" ({zones}), one every {pace.total_seconds():.0f}s",
            file=out,
            flush=True,
        )
        while True:
            finished = keeper.step(config, settings, wanted)
            if finished is None:
                break
            done += 1
            assert isinstance(finished.work, DayExport)
            remaining = max(total - done, 0)
            print(
                f"[{done}/{total}] {finished.work.day.isoformat()}"
                f" ({keeping.where(finished.work.workspace, finished.work.zone)}):"
                f" {finished.rows:,} row(s) in {finished.seconds:.1f}s;"
                f" {remaining} remaining, {time.monotonic() - started:.0f}s elapsed",
                file=out,
                flush=True,
            )
            Deadline(stop=stop).wait(pace.total_seconds())
    except Stopping:
        print(f"backfill: interrupted; {_kept(done)}", file=sys.stderr)
        return EXIT_ERROR
    except ExportError as error:
        print(f"costwatch: the Langdock export failed ({error.reason}): {error}", file=sys.stderr)
        print(f"backfill: {_kept(done)}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, StateError) as error:
        print(f"costwatch: {error}", file=sys.stderr)
        print(f"backfill: {_kept(done)}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"backfill: done: {done} day(s) exported in {time.monotonic() - started:.0f}s;"
        f" the last {settings.backfill_days} closed day(s) are stored",
        file=out,
    )
    return EXIT_OK


def _in_window(days: int, now: datetime) -> Callable[[Work], bool]:
    """Work `backfill` does: a missing closed day (current or backfill) of the last `days`."""

    def wanted(work: Work) -> bool:
        if not isinstance(work, DayExport) or work.kind not in ("current", "backfill"):
            return False
        return work.day >= now.astimezone(work.zone).date() - timedelta(days=days)

    return wanted


def _kept(done: int) -> str:
    return f"{done} day(s) exported and stored are kept; run it again to go on from there"


@contextmanager
def _signals_set(stop: StopSignal) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` while inside (in the main thread; elsewhere, nothing)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
