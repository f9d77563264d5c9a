"""`costwatch suggest`: limits proposed from the usage history, printed as a budgets section
(YAML, a comment per limit saying where it comes from). The numbers are `costwatch.suggest`'s.

The history is read, never written: the state is opened read-only (a missing SQLite file is
an empty history), and each closed day of the window it lacks is exported from Langdock one
day at a time and used in memory only (`held.py`, as `report` and `backtest` read their days).
With `workspaces:`, each workspace's days come from its own partition, the missing ones
exported with its own client, joined (`held.read_each`): a workspace's own budgets read its
keys, the top-level ones the org's, and the own budgets print under their workspace.
Days the export API no longer serves stay missing: periods with such days are not counted. The
configuration file is never edited.

Exit codes: 0 the snippet is printed; 2 the state, an export or the data cannot be used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

import polars as pl

from costwatch import held, history, keeping
from costwatch.cli import arguments
from costwatch.cli.check import EXIT_ERROR, EXIT_OK, state_for
from costwatch.config import Config
from costwatch.errors import ExportError, StateError, UsageError
from costwatch.quote import quote
from costwatch.state import History
from costwatch.suggest import MIN_PERIODS, Options, render, suggest, window

if TYPE_CHECKING:  # httpx loads only where an export is made
    from costwatch.langdock import LangdockClient

__all__ = ["add_command", "run_suggest"]


def add_command(commands: Any, *, load: Callable[[Path], Config | None]) -> None:
    """`costwatch suggest` added to the command parsers (`commands`: argparse's subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "suggest",
        help="propose budget limits from the usage history (prints YAML, edits nothing)",
        description="Propose each budget's limits from its full periods in the usage history"
        " (closed days not stored are exported, not stored): a high percentile plus headroom,"
        " printed as a budgets section with a comment per limit. The file is never edited.",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="FILE")
    parser.add_argument(
        "--months",
        type=_months,
        default=Options.months,
        metavar="N",
        help="calendar months before this one to read, 1 to 12 (default 6)",
    )
    parser.add_argument(
        "--percentile",
        type=_percentile,
        default=Options.percentile,
        metavar="P",
        help="the percentile of the periods' use taken, 50 to 100 (default 90)",
    )
    parser.add_argument(
        "--headroom",
        type=_headroom,
        default=Options.headroom,
        metavar="X",
        help="added on top: 0.2 or 20%% (default 20%%)",
    )

    def run(args: argparse.Namespace) -> int:
        config = load(args.config)  # with workspaces:, every one's history (`partitions.py`)
        if config is None:
            return EXIT_ERROR
        options = Options(months=args.months, percentile=args.percentile, headroom=args.headroom)
        return run_suggest(config, options=options)

    parser.set_defaults(run=run)


def _months(text: str) -> int:
    return arguments.whole(
        text, unit="months", low=1, high=12, why="the export API keeps 12 months of usage"
    )


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentile: {quote(text)}") from None
    if not 50 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{quote(text)}: a percentile from 50 to 100")
    return value


def _headroom(text: str) -> float:
    written = text.strip()
    try:
        value = float(written[:-1]) / 100 if written.endswith("%") else float(written)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction like 0.2 or 20%: {quote(text)}") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{quote(text)}: from 0 to 10 (1000%)")
    return value


def run_suggest(
    config: Config,
    *,
    options: Options,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Print the suggested budgets section (see the module); 0, or 2 when it cannot."""
    now = clock()
    zones = sorted({b.effective_timezone(config.schedule) for b in config.budgets})
    try:
        with state_for(config, dry_run=True) as store, _exports(config) as clients:
            daily, covered = {}, {}
            for name in zones:
                frame, days = _zone_history(
                    store, config, clients, ZoneInfo(name), now=now, options=options, err=err
                )
                daily[name], covered[name] = frame, frozenset(days)
    except ExportError as error:
        print(f"costwatch: the Langdock export failed ({error.reason}): {error}", file=err)
        return EXIT_ERROR
    except (UsageError, StateError) as error:
        print(f"costwatch: {error}", file=err)
        return EXIT_ERROR
    suggestions = suggest(config, daily, covered, now, options)
    out.write(render(suggestions, options, now))
    short = [s.budget.name for s in suggestions if s.too_short]
    if short:
        print(
            f"suggest: history too short (fewer than {MIN_PERIODS} full periods) for"
            f" {len(short)} budget(s): their comments say what the figure rests on",
            file=err,
        )
    return EXIT_OK


@contextmanager
def _exports(config: Config) -> Iterator[dict[str, LangdockClient]]:
    """An export client per workspace (the one "default" of a file with `langdock:`)."""
    from costwatch import langdock  # noqa: PLC0415 (httpx loads only here)

    with langdock.connect_all(config) as clients:
        yield clients


def _zone_history(
    store: History | None,
    config: Config,
    clients: Mapping[str, LangdockClient],
    zone: ZoneInfo,
    *,
    now: datetime,
    options: Options,
    err: TextIO,
) -> tuple[pl.DataFrame, set[date]]:
    """The window's days of `zone`: stored ones read, missing closed ones the export API still
    serves exported (`held.py`: kept in memory); the frame (usage.SCHEMA + day), the days known."""
    first, last = window(options.months, zone, now)
    reachable = max(first, keeping.oldest_exportable(zone, now))
    exportable = tuple(history.closed_days(reachable, last + timedelta(days=1)))

    def told(step: held.Step) -> None:
        if step.index == 0 and step.fetched is None:
            whose = f" in workspace {step.workspace}" if step.workspace else ""
            print(
                f"suggest: {step.total} closed day(s) of {zone.key}{whose} are not stored;"
                " exporting them (nothing is written)",
                file=err,
                flush=True,
            )

    wanted = {zone.key: held.Wanted(first, last, exportable)}
    if config.keyed_by_workspace:  # every workspace's days, ids "workspace/id"
        (days,) = held.read_each(store, wanted, clients, progress=told).values()
    else:
        (client,) = clients.values()
        (days,) = held.read(store, wanted, client, progress=told).values()
    return days.usage, set(days.covered)
