"""The daily usage history: a steady cycle from the store against the month-to-date cycle, and
what the store costs on disk.

    python bench/bench_history.py [--keys 1000] [--models 20] [--runs 3]

**Steady vs month to date.** One simulated workspace (`costwatch.simulator`, `--keys` x
`--models`, each key x model pair active on 0-100 % of days, 50 % on average: most keys are
not active every day), on day 28 of November at 10:00 Europe/Berlin. The month-to-date cycle
(`history.enabled: false`) exports 1-28 November whole; the steady cycle has 1-27 November in
the store (put there beforehand, as the keeper would) and exports today only. Both are
`cycle.run_once` in this process, over loopback HTTP to the simulator, evaluating one budget
per key and committing to a real SQLite file: the first run (as a `check` process runs it,
with nothing summed yet) and the best of the later ones (as the daemon runs it: the store
remembers the stored days' sums until a day changes). Reported: time, CSV rows
exported, export requests, and the key x model x day rows each export aggregates (what
Langdock's materialisation works through: about 30 s for a month to date of a large
workspace). The simulator computes any range in the same time, so its time does not grow
with the range as Langdock's does: the rows aggregated are the measure that carries over, and
`modelled` adds Langdock's materialisation to the measured time at `LANGDOCK_SECONDS_PER_ROW`
(the issue's 30 s for a month to date of 20,000 x 50 at mid-month: 15 million rows). That
column is a model, not a measurement.

**Store size.** Days put into a fresh state file through `put_day`: `--keys` x `--models`
(every pair present, the dense worst case) for 30 days, extrapolated to a year, and one day of
20,000 keys x 50 models (1,000,000 rows); bytes per row and per day, `put_day` time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_export  # noqa: E402 (bench/ is put on the path just above)

from costwatch import cycle, fetch, history, recent, usage  # noqa: E402
from costwatch.config import parse_config  # noqa: E402
from costwatch.langdock import LangdockClient, RetryPolicy  # noqa: E402
from costwatch.simulator import Simulator, Workspace  # noqa: E402
from costwatch.state import SqliteState  # noqa: E402

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 28, 9, tzinfo=UTC)  # 10:00 in Berlin, day 28
FIRST = date(2026, 11, 1)
KEY = "ld-bench-history"
MODELS = tuple(f"model-{n:02d}" for n in range(60))
LANGDOCK_SECONDS_PER_ROW = 30 / 15_000_000  # materialisation per key x model x day aggregated


@dataclass(frozen=True)
class Run:
    seconds: float  # best of the runs after the first (a daemon's cycle)
    cold: float  # the first run (a `check` process: nothing summed yet)
    csv_rows: int  # data rows read from the exports
    requests: int  # export requests made
    aggregated: int  # key x model x day rows the exports cover

    @property
    def modelled(self) -> float:
        """The measured time plus Langdock's materialisation of what was aggregated."""
        return self.seconds + self.aggregated * LANGDOCK_SECONDS_PER_ROW


@dataclass(frozen=True)
class Steady:
    keys: int
    models: int
    month: Run
    steady: Run
    stored_rows: int  # key x model rows of the 27 stored days


@dataclass(frozen=True)
class Size:
    keys: int
    models: int
    days: int
    rows: int
    bytes: int
    put_seconds: float  # per day

    @property
    def per_row(self) -> float:
        return self.bytes / self.rows

    @property
    def per_day(self) -> float:
        return self.bytes / self.days


def config(history_enabled: bool, state: Path) -> str:
    return f"""\
langdock:
  api_key: {KEY}
  base_url: https://api.langdock.example
schedule:
  timezone: Europe/Berlin
state:
  path: {state}
history:
  enabled: {str(history_enabled).lower()}
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: 1000000}}
"""


def steady_vs_month(keys: int, models: int, runs: int = 3) -> Steady:
    workspace = Workspace(
        keys=keys, models=MODELS[:models], created=datetime(2026, 1, 1, tzinfo=UTC)
    )
    with (
        tempfile.TemporaryDirectory(prefix="costwatch-bench-history-") as tmp,
        Simulator(workspace, api_key=KEY, clock=lambda: NOW) as sim,
        httpx.Client(timeout=120) as http,
        SqliteState.open(Path(tmp) / "state.db") as state,
    ):
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=1),
        )
        stored_rows = 0
        for day in history.closed_days(FIRST, NOW.astimezone(BERLIN).date()):
            fetched = fetch.fetch_day(client, BERLIN, day)
            state.put_day("Europe/Berlin", day, fetched.usage.frame, exported_at=NOW, settled=True)
            stored_rows += fetched.rows

        def best(enabled: bool) -> Run:
            deps = cycle.Deps(  # the daemon's memo of days read: the first run is check's
                parse_config(config(enabled, Path(tmp) / "state.db")),
                client=client,
                state=state,
                recent_days=recent.Cache(),
            )
            timings, outcome, requests = [], None, 0
            for _ in range(runs):
                before = sim.exports_made()
                started = time.perf_counter()
                outcome = cycle.run_once(deps, NOW)
                timings.append(time.perf_counter() - started)
                requests = sim.exports_made() - before
                assert outcome.ok, outcome.error
            assert outcome is not None
            warm = min(timings[1:]) if len(timings) > 1 else timings[0]
            return Run(warm, timings[0], outcome.exported_rows, requests, outcome.exported_rows)

        month, steady = best(False), best(True)
        # Langdock aggregates every key x model x day of a range: today's export is one day's
        # rows, the month to date the 27 stored days' rows and today's.
        month = Run(
            month.seconds, month.cold, month.csv_rows, month.requests, stored_rows + steady.csv_rows
        )
        return Steady(keys, models, month, steady, stored_rows)


@dataclass(frozen=True)
class ByDays:
    days: int  # closed days of the quarter stored and read
    first: float  # a `check` process's cycle (nothing summed yet), seconds
    later: float  # the daemon's next cycle, seconds
    whole: float  # the quarter to date exported whole (history disabled), seconds
    aggregated: int  # key x model x day rows the quarter to date covers


def by_days(
    keys: int, models: int, days: tuple[int, ...] = (1, 7, 27, 89), runs: int = 2
) -> list[ByDays]:
    """A steady cycle of a quarterly budget against the closed days it reads from the store."""
    quarter = date(2026, 10, 1)
    workspace = Workspace(
        keys=keys, models=MODELS[:models], created=datetime(2026, 1, 1, tzinfo=UTC)
    )
    clock = [datetime(2026, 12, 30, 9, tzinfo=UTC)]
    out = []
    with (
        tempfile.TemporaryDirectory(prefix="costwatch-bench-days-") as tmp,
        Simulator(workspace, api_key=KEY, clock=lambda: clock[0]) as sim,
        httpx.Client(timeout=120) as http,
    ):
        client = LangdockClient(
            http, base_url=sim.base_url, api_key=KEY, allow_insecure_download=True
        )
        path = Path(tmp) / "state.db"
        rows: dict[date, int] = {}
        with SqliteState.open(path) as state:
            for day in history.closed_days(quarter, quarter + timedelta(days=max(days))):
                fetched = fetch.fetch_day(client, BERLIN, day)
                state.put_day(
                    "Europe/Berlin", day, fetched.usage.frame, exported_at=NOW, settled=True
                )
                rows[day] = fetched.rows
        for count in days:
            day = quarter + timedelta(days=count)
            now = datetime(day.year, day.month, day.day, 10, tzinfo=BERLIN)  # 10:00 local
            clock[0] = now
            text = config(True, path) + "defaults:\n  period: quarter\n"
            timings = []
            with SqliteState.open(path) as state:
                deps = cycle.Deps(parse_config(text), client=client, state=state)
                for _ in range(max(2, runs)):
                    started = time.perf_counter()
                    outcome = cycle.run_once(deps, now)
                    timings.append(time.perf_counter() - started)
                    assert outcome.ok, outcome.error
                today = outcome.exported_rows
                whole_deps = cycle.Deps(
                    parse_config(text.replace("enabled: true", "enabled: false")),
                    client=client,
                    state=state,
                )
                started = time.perf_counter()
                assert cycle.run_once(whole_deps, now).ok
                whole = time.perf_counter() - started
            stored = sum(n for day, n in rows.items() if day < now.date())
            out.append(ByDays(count, timings[0], min(timings[1:]), whole, stored + today))
    return out


def store_size(keys: int, models: int, days: int) -> Size:
    with tempfile.TemporaryDirectory(prefix="costwatch-bench-size-") as tmp:
        folder = Path(tmp)
        export = folder / "day.csv"
        gen_export.generate(export, keys, models, byok=False)
        frame = usage.load_csv(export).frame
        path = folder / "state.db"
        seconds = 0.0
        with SqliteState.open(path) as state:
            for n in range(days):
                day = date(2026, 1, 1) + timedelta(days=n)
                varied = frame.with_columns(pl.col("requests") + n)
                started = time.perf_counter()
                state.put_day("Europe/Berlin", day, varied, exported_at=NOW, settled=True)
                seconds += time.perf_counter() - started
        size = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("state.db"))
        return Size(keys, models, days, frame.height * days, size, seconds / days)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    result = steady_vs_month(args.keys, args.models, args.runs)
    print(f"workspace: {result.keys:,} keys x {result.models} models, day 28 of the month")
    print(
        f"{'cycle':<24}{'first s':>9}{'later s':>9}{'CSV rows':>10}{'exports':>9}"
        f"{'rows aggregated':>17}{'modelled s':>12}"
    )
    for name, run in (("month to date", result.month), ("today + 27 stored days", result.steady)):
        print(
            f"{name:<24}{run.cold:>9.3f}{run.seconds:>9.3f}{run.csv_rows:>10,}{run.requests:>9}"
            f"{run.aggregated:>17,}{run.modelled:>12.3f}"
        )
    print("a quarterly budget against the closed days read from the store:")
    print(f"{'days stored':>12}{'first s':>9}{'later s':>9}{'whole s':>9}{'rows aggregated':>17}")
    for each in by_days(args.keys, args.models, runs=args.runs):
        print(
            f"{each.days:>12}{each.first:>9.3f}{each.later:>9.3f}{each.whole:>9.3f}"
            f"{each.aggregated:>17,}"
        )
    for size in (store_size(500, 20, 30), store_size(20_000, 50, 1)):
        print(
            f"store, {size.keys:,} x {size.models} (dense), {size.days} day(s): "
            f"{size.per_row:.1f} B/row, {size.per_day / 2**20:.1f} MiB/day, "
            f"{size.per_day * 365 / 2**20:,.0f} MiB/year, put_day {size.put_seconds:.2f} s/day"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
