"""`costwatch backtest`: the budget file replayed over the usage history, day by day; what it
would have sent, when, to which channel, with totals (`costwatch/backtest.py` replays).

The days the replay reads (`backtest.needed`) are copied from the configured state, opened
read-only (no writer lock: beside a running daemon too), into a scratch store in a temporary
directory; the days the state lacks are exported from Langdock one day at a time (`held.py`,
as `report` and `suggest` read their days; paced by `--pace`), into that scratch store only.
With `workspaces:`, each workspace's days are read from its own partition of the state and
the missing ones exported with its own client, into that workspace's partition of the scratch
store (`partitions.py`), whence the replay's cycle gathers each workspace as the daemon does.
The scratch store is deleted when the command ends: the state is never written, nothing is
delivered.

Exit codes as `check`: 0 no budget alert would have been sent, 1 some would have (a threshold
crossed, a forecast overrun), 2 the dates, the configuration, the state or an export could not
be used, or no configured limit could be compared with the history (a tokens limit over days
without token counts): what would have fired is then unknown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from costwatch import held
from costwatch.cli import arguments
from costwatch.cli.check import EXIT_CROSSED, EXIT_ERROR, EXIT_OK, state_for
from costwatch.config import Config
from costwatch.errors import ExportError, StateError, UsageError
from costwatch.partitions import Partition
from costwatch.state import SqliteState, Store
from costwatch.state.base import History

if TYPE_CHECKING:  # httpx loads only where an export is made
    from costwatch.langdock import LangdockClient

__all__ = ["add_command", "range_problem", "run_backtest"]


def add_command(commands: Any, *, load: Callable[[Path], Config | None]) -> None:
    """`costwatch backtest` added to the command parsers (`commands`: argparse's subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "backtest",
        help="replay the budget file over the usage history: what would have fired when",
        description="Replay the budget file day by day over the stored usage history (the"
        " days the state lacks exported from Langdock, not stored) and print what would have"
        " been sent when, per budget and channel, with totals. Writes no state, sends nothing."
        " Exit 0: no alert would have fired; 1: some would have; 2: an error.",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="FILE")
    parser.add_argument(
        "--from",
        dest="first",
        required=True,
        type=arguments.iso_date,
        metavar="DATE",
        help="the first day replayed (YYYY-MM-DD, a local day of schedule.timezone)",
    )
    parser.add_argument(
        "--to",
        dest="last",
        required=True,
        type=arguments.iso_date,
        metavar="DATE",
        help="the last day replayed, included (yesterday at the latest)",
    )
    parser.add_argument(
        "--at",
        choices=["day-end", "cycles", "hourly"],
        default="day-end",
        help="the points replayed: each day's last cycle of the schedule (default), every"
        " cycle, or every hour",
    )
    parser.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    parser.add_argument(
        "--pace",
        type=arguments.pace,
        metavar="DURATION",
        help="the pause between two exports of missing days (default: history.pace; 0s: none)",
    )

    def run(args: argparse.Namespace) -> int:
        config = load(args.config)  # with workspaces:, each one's partition (`partitions.py`)
        if config is None:
            return EXIT_ERROR
        return run_backtest(
            config,
            config_path=args.config,
            first=args.first,
            last=args.last,
            at=args.at,
            output_format=args.format,
            pace=args.pace,
        )

    parser.set_defaults(run=run)


def range_problem(first: date, last: date, today: date, zone: str) -> str | None:
    """Why [first, last] cannot be replayed at `today` (local, `zone`); None when it can."""
    if first > last:
        return f"--from {first} is after --to {last}"
    if last > today:
        return f"--to {last} is in the future (today is {today} in {zone})"
    if last == today:
        yesterday = today - timedelta(days=1)
        return (
            f"--to {last} is today, which is not over in {zone}: the last day a backtest"
            f" replays is yesterday, {yesterday}"
        )
    return None


@dataclass(frozen=True)
class Held:
    """Where the replay's days came from."""

    stored: int  # copied from the state
    exported: int  # exported from Langdock (not stored anywhere)


class HoldError(Exception):
    """A day the replay needs can be had neither from the state nor from the export API."""


def run_backtest(
    config: Config,
    *,
    config_path: Path,
    first: date,
    last: date,
    at: str,
    output_format: str,
    pace: timedelta | None = None,
    out: TextIO = sys.stdout,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Replay `config` over the local days [first, last]; print; the exit code (see module)."""
    from costwatch import backtest  # noqa: PLC0415 (APScheduler loads only for this command)
    from costwatch.cli import backtest_output  # noqa: PLC0415

    now = clock()
    zone = config.schedule.zone
    problem = range_problem(first, last, now.astimezone(zone).date(), zone.key)
    if problem is not None:
        print(f"costwatch: {problem}", file=sys.stderr)
        return EXIT_ERROR
    mode: backtest.At = at  # type: ignore[assignment]  # argparse's choices are AT
    replayed = backtest.points(config.schedule, first, last, mode)
    if not replayed:
        print(
            f"costwatch: no cycle of the schedule falls between {first} and {last}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    days = backtest.needed(config, replayed)
    ahead = [
        name for name, (_, end) in days.items() if end >= now.astimezone(ZoneInfo(name)).date()
    ]
    if ahead:
        print(
            f"costwatch: in {', '.join(ahead)} the last point falls on a day that is not over"
            " yet; give an earlier --to",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        with (
            tempfile.TemporaryDirectory(prefix="costwatch-backtest-") as scratch_dir,
            SqliteState.open(Path(scratch_dir) / "backtest.db") as scratch,
        ):
            holding = _hold(
                config, scratch, days, now=now, pace=config.history.pace if pace is None else pace
            )
            result = backtest.replay(config, scratch, replayed)
    except HoldError as error:
        print(f"costwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    except ExportError as error:
        print(f"costwatch: the Langdock export failed ({error.reason}): {error}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, StateError, backtest.ReplayError) as error:
        print(f"costwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"costwatch: {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_ERROR
    for line in result.unevaluated:
        print(f"costwatch: {line}", file=sys.stderr)
    if result.unevaluated and not result.evaluated:
        print(
            "costwatch: nothing was evaluated: no configured limit can be compared with this"
            " history; the budgets are not known to have stayed within their limits.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    report = backtest_output.Backtest(
        config=str(config_path),
        first=first,
        last=last,
        zone=zone,
        at=mode,
        replay=result,
        stored_days=holding.stored,
        exported_days=holding.exported,
    )
    render = {
        "json": backtest_output.render_json,
        "markdown": backtest_output.render_markdown,
    }.get(output_format, backtest_output.render_table)
    out.write(render(report))
    return EXIT_CROSSED if result.alerts else EXIT_OK


def _hold(
    config: Config,
    scratch: Store,
    days: dict[str, tuple[date, date]],
    *,
    now: datetime,
    pace: timedelta,
) -> Held:
    """The days the state holds and the others exported (`held.py`), put into `scratch`."""
    from costwatch import keeping  # noqa: PLC0415

    names = [c.name for c in config.connections] if config.keyed_by_workspace else [""]
    wanted = {name: held.Wanted(*span) for name, span in days.items()}
    with state_for(config, dry_run=True) as state:
        planned = {
            name: held.plan(_own(state, name) if state is not None else None, wanted)
            for name in names
        }
    too_old = [
        (z, day)
        for plan in planned.values()
        for z, day in plan.missing
        if day < keeping.oldest_exportable(z, now)
    ]
    if too_old:
        zone, day = too_old[0]
        raise HoldError(
            f"{len(too_old)} day(s) the replay needs are not in the state and older than the"
            f" export API's 12 months (the first: {day}, {zone.key}; the API serves"
            f" {keeping.oldest_exportable(zone, now)} on): give a later --from (the replay"
            " also reads back to the first day of each period running at --from, and the"
            " forecasts' and detectors' windows)"
        )
    stored = exported = 0
    with _clients(config, needed=any(plan.missing for plan in planned.values())) as clients:
        for name, plan in planned.items():
            client = clients.get(name) if name else next(iter(clients.values()), None)
            told = partial(_told, workspace=name)
            got = held.export(plan, client, pace=pace, progress=told)
            for zone_name, zone_days in got.items():
                _put(config, _own(scratch, name), zone_name, zone_days, now=now)
            stored += sum(len(zone_days.stored) for zone_days in got.values())
            exported += len(plan.missing)
    return Held(stored=stored, exported=exported)


def _own(history: History, workspace: str) -> History:
    """`history` itself for a file with `langdock:` (""), else the workspace's partition."""
    return Partition(history, workspace) if workspace else history


@contextmanager
def _clients(config: Config, *, needed: bool) -> Iterator[dict[str, LangdockClient]]:
    """An export client per workspace, when a day is to be exported (none otherwise)."""
    if not needed:
        yield {}
        return
    from costwatch import langdock  # noqa: PLC0415 (httpx loads only to export)

    with langdock.connect_all(config) as clients:
        yield clients


def _told(step: held.Step, *, workspace: str = "") -> None:
    """What backtest says of its exports on stderr: once what it does, then a line a day."""
    whose = f" in workspace {workspace}" if workspace else ""
    if step.fetched is None:
        if step.index == 0:
            print(
                f"backtest: {step.total} day(s){whose} not in the state: exporting them from"
                " Langdock, one a day (into the scratch store only; the state is not written)",
                file=sys.stderr,
                flush=True,
            )
        return
    print(
        f"[{step.index + 1}/{step.total}] {step.day.isoformat()}"
        f" ({f'workspace {workspace}, ' if workspace else ''}{step.zone.key}):"
        f" {step.fetched.rows:,} row(s)",
        file=sys.stderr,
        flush=True,
    )


def _put(config: Config, scratch: History, zone: str, days: held.Days, *, now: datetime) -> None:
    """A zone's days into `scratch`, one day at a time: the stored ones as the state
    describes them, the exported ones exported `now`."""
    from costwatch import history  # noqa: PLC0415

    for day, kept in sorted(days.stored.items()):
        scratch.put_day(
            zone,
            day,
            days.of(day),
            exported_at=kept.exported_at,
            settled=kept.settled,
            has_tokens=kept.has_tokens,
        )
    for day, has_tokens in days.exported.items():
        scratch.put_day(
            zone,
            day,
            days.of(day),
            exported_at=now,
            settled=history.is_settled(day, ZoneInfo(zone), now, config.history.settle_after),
            has_tokens=has_tokens,
        )
