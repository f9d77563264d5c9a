"""Every benchmark in one run, one table: benchmark, costwatch, baseline(s), ratio, target, met?

    python bench/run.py [--runs 3] [--scrapes 200] [--cycles 2000] [--skip soak,growth]

Runs `bench_check` (whole-process `costwatch check --csv` beside bare polars and pandas),
`bench_scrape`, `bench_storm`, `bench_soak`, `bench_forecast` and `bench_history` (a steady
cycle from the store against the month-to-date cycle; the store's size), each measuring its
baseline in the same run, then prints the table, and below it how a cycle grows with keys and
budgets (`bench_growth`). Numbers only: nothing here fails on a missed target. Another bench
adds its lines by appending a step to `STEPS` (a name and a function returning `Line`s), and
its rows of the growth table to `GROWTH` (functions returning `bench_growth.GrowthRow`s, e.g.
days stored).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_check  # noqa: E402 (bench/ is put on the path just above)
import bench_forecast  # noqa: E402
import bench_growth  # noqa: E402
import bench_history  # noqa: E402
import bench_scrape  # noqa: E402
import bench_soak  # noqa: E402
import bench_storm  # noqa: E402

MIB = 2**20


@dataclass(frozen=True)
class Line:
    benchmark: str
    costwatch: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: informational


def import_seconds(module: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        best = min(best, time.perf_counter() - started)
    return best


def cycle_lines(runs: int) -> list[Line]:
    rows, size = bench_check.measure(runs=runs)
    by = {row.name: row for row in rows}
    base, pandas = by[bench_check.BASE], by[bench_check.PANDAS]
    quiet, storm = by[bench_check.QUIET], by[bench_check.STORM]
    many, one = by[bench_check.MANY], by[bench_check.ONE]
    cli = import_seconds("costwatch.cli", runs)
    polars = import_seconds("polars", runs)
    worst_rss = max(quiet.rss, storm.rss)
    return [
        Line(
            "cycle: check --csv, no threshold crossed",
            f"{quiet.seconds:.2f} s",
            f"(a) polars scan+group_by {base.seconds:.2f} s",
            f"{quiet.seconds / base.seconds:.2f}x",
            "<= 1.5x",
            quiet.seconds <= 1.5 * base.seconds,
        ),
        Line(
            "cycle: the same, CPU time (user + system)",
            f"{quiet.cpu:.2f} s",
            f"(a) {base.cpu:.2f} s",
            f"{quiet.cpu / base.cpu:.2f}x",
            "",
            None,
        ),
        Line(
            "cycle: check --csv, ~30,000 crossings planned",
            f"{storm.seconds:.2f} s",
            f"(a) {base.seconds:.2f} s",
            f"{storm.seconds / base.seconds:.2f}x",
            "<= 2x",
            storm.seconds <= 2 * base.seconds,
        ),
        Line(
            "cycle: the same, CPU time (user + system)",
            f"{storm.cpu:.2f} s",
            f"(a) {base.cpu:.2f} s",
            f"{storm.cpu / base.cpu:.2f}x",
            "",
            None,
        ),
        Line(
            "cycle: check --csv, peak RSS (quiet or storm, the larger)",
            f"{worst_rss / MIB:.0f} MiB",
            f"CSV {size / MIB:.0f} MiB; (a) {base.rss / MIB:.0f}, (b) {pandas.rss / MIB:.0f} MiB",
            f"{worst_rss / size:.2f}x CSV",
            "<= 2.5x CSV",
            worst_rss <= 2.5 * size,
        ),
        Line(
            "cycle: check --csv, 200 budgets",
            f"{many.seconds:.2f} s, {many.rss / MIB:.0f} MiB ({many.rss / size:.2f}x CSV)",
            f"(a) {base.seconds:.2f} s",
            f"{many.seconds / base.seconds:.2f}x",
            "<= 2x",
            many.seconds <= 2 * base.seconds,
        ),
        Line(
            "cycle: check --csv, 200 budgets, time vs pandas",
            f"{many.seconds:.2f} s",
            f"(b) pandas {pandas.seconds:.2f} s",
            f"{pandas.seconds / many.seconds:.2f}x faster",
            ">= 3x faster",
            pandas.seconds >= 3 * many.seconds,
        ),
        Line(
            "cycle: check --csv, 1 budget (~1,000 crossings)",
            f"{one.seconds:.2f} s, {one.rss / MIB:.0f} MiB",
            f"(a) {base.seconds:.2f} s",
            f"{one.seconds / base.seconds:.2f}x",
            "",
            None,
        ),
        Line(
            "start-up: import costwatch.cli",
            f"{cli:.2f} s",
            f"import polars {polars:.2f} s",
            f"{cli / polars:.2f}x",
            "",
            None,
        ),
    ]


def scrape_lines(scrapes: int) -> list[Line]:
    result = bench_scrape.measure(20_000, 50, scrapes, max(1, scrapes // 10))
    ours, theirs = statistics.median(result.ours), statistics.median(result.theirs)
    gzipped = statistics.median(result.gzipped)
    return [
        Line(
            f"scrape /metrics, 20,000 x 50, {result.series:,} series (max_series), gzip, median",
            f"{gzipped * 1000:.1f} ms, {result.sizes['gzip'] / 1e6:.1f} MB",
            f"plain registry {theirs * 1000:,.0f} ms",
            f"{theirs / gzipped:,.0f}x faster",
            "< 10 ms",
            gzipped < 0.010,
        ),
        Line(
            "scrape /metrics, identity (no gzip), median",
            f"{ours * 1000:.1f} ms, {result.sizes['costwatch'] / 1e6:.1f} MB",
            f"plain registry {theirs * 1000:,.0f} ms, {result.sizes['baseline'] / 1e6:.0f} MB",
            f"{theirs / ours:,.0f}x faster",
            "< 10 ms",
            ours < 0.010,
        ),
        Line(
            "scrape /metrics, p99 (gzip; identity)",
            f"{bench_scrape.p99(result.gzipped) * 1000:.1f}; "
            f"{bench_scrape.p99(result.ours) * 1000:.1f} ms",
            f"plain registry {bench_scrape.p99(result.theirs) * 1000:,.0f} ms",
            "",
            "",
            None,
        ),
        Line(
            "publish: render + gzip once per cycle",
            f"{result.publish_seconds * 1000:,.0f} ms",
            f"plain registry fill {result.fill_seconds:,.1f} s",
            "",
            "",
            None,
        ),
    ]


def storm_lines() -> list[Line]:
    storm = bench_storm.measure(5_000, 10)
    return [
        Line(
            "alert storm: 5,000 crossings, 10 channels: messages",
            f"{storm.messages} messages in {storm.deliver_seconds:.1f} s ({storm.rounds} rounds)",
            "10 channels (one digest each)",
            f"{storm.messages / 10:.1f} per channel",
            "~10 messages",
            storm.messages <= 10 and storm.pending == 0,
        ),
        Line(
            "alert storm: none lost",
            f"{storm.sent_rows:,} outbox rows sent",
            f"{storm.crossings:,} crossings planned",
            f"{storm.sent_rows / max(1, storm.crossings):.2f}",
            "sent = 5,000",
            storm.sent_rows == storm.crossings == 5_000,
        ),
    ]


def soak_lines(cycles: int) -> list[Line]:
    soak = bench_soak.measure(cycles, timedelta(hours=1), "7d", warmup=200)
    first, last = soak.samples[0], soak.samples[-1]
    return [
        Line(
            f"soak: {soak.cycles:,} cycles ({soak.seconds:.0f} s), RSS",
            f"{last.rss / MIB:.1f} MiB at the end",
            f"{first.rss / MIB:.1f} MiB at cycle {first.cycle}",
            f"{last.rss / first.rss:.3f}",
            "<= 1.05 (noise)",
            last.rss <= 1.05 * first.rss,
        ),
        Line(
            "soak: open files",
            f"{last.fds}",
            f"{first.fds} at cycle {first.cycle}",
            f"{last.fds - first.fds:+d}",
            "+0",
            last.fds <= first.fds,
        ),
        Line(
            "soak: state file (db + WAL), retention 7d",
            f"{last.db_bytes / 1024:.0f} KiB, {last.ledger_rows} ledger rows",
            f"{first.db_bytes / 1024:.0f} KiB, {first.ledger_rows} rows at cycle {first.cycle}",
            f"{last.db_bytes / first.db_bytes:.2f}",
            "<= 1.25, rows flat",
            last.db_bytes <= 1.25 * first.db_bytes and last.ledger_rows <= 1.05 * first.ledger_rows,
        ),
    ]


def forecast_lines(runs: int) -> list[Line]:
    result = bench_forecast.measure(runs=runs)
    size = f"{result.keys:,} keys x {result.models} models"
    return [
        Line(
            f"forecast: evaluate from a {result.days}-day window, {size}",
            f"{result.window_seconds:.3f} s ({result.due:,} due, each with its overrun)",
            f"{result.linear_seconds:.3f} s linear (no stored days)",
            f"{result.window_seconds / result.linear_seconds:.2f}",
            "",
            None,
        ),
        Line(
            f"forecast: a stored day of {result.keys * result.models:,} rows summed per key",
            f"{result.day_seconds:.3f} s",
            f"the window held as {result.daily_rows:,} rows",
            "",
            "once per day and process",
            None,
        ),
    ]


def history_lines(runs: int) -> list[Line]:
    result = bench_history.steady_vs_month(1000, 20, runs)
    month, steady = result.month, result.steady
    dense, big = bench_history.store_size(500, 20, 30), bench_history.store_size(20_000, 50, 1)
    work = f"{result.keys:,} keys x {result.models} models"
    return [
        Line(
            f"history: steady cycle at day 28 ({work}), time, simulator, daemon",
            f"{steady.seconds:.3f} s (today + 27 stored days)",
            f"month-to-date cycle {month.seconds:.3f} s",
            f"{month.seconds / steady.seconds:.1f}x cheaper",
            ">= 10x cheaper",
            month.seconds >= 10 * steady.seconds,
        ),
        Line(
            "history: the same, a `check` process's first cycle (nothing summed yet)",
            f"{steady.cold:.3f} s",
            f"month-to-date cycle {month.cold:.3f} s",
            f"{month.cold / steady.cold:.1f}x cheaper",
            "",
            None,
        ),
        Line(
            "history: the same with Langdock's materialisation (modelled)",
            f"{steady.modelled:.3f} s",
            f"month-to-date cycle {month.modelled:.3f} s",
            f"{month.modelled / steady.modelled:.1f}x cheaper",
            ">= 10x cheaper",
            month.modelled >= 10 * steady.modelled,
        ),
        Line(
            "history: steady cycle, rows Langdock aggregates (key x model x day)",
            f"{steady.aggregated:,}",
            f"month to date {month.aggregated:,}",
            f"{month.aggregated / max(1, steady.aggregated):.1f}x fewer",
            ">= 10x fewer",
            month.aggregated >= 10 * steady.aggregated,
        ),
        Line(
            "history: steady cycle, CSV rows exported",
            f"{steady.csv_rows:,} ({steady.requests} export)",
            f"month to date {month.csv_rows:,} ({month.requests} export)",
            f"{month.csv_rows / max(1, steady.csv_rows):.1f}x fewer",
            "",
            None,
        ),
        *(
            Line(
                f"history: quarterly budget, {each.days} days stored (first / later cycle)",
                f"{each.first:.3f} / {each.later:.3f} s",
                f"quarter exported whole {each.whole:.3f} s",
                f"{each.whole / each.later:.2f}x",
                "",
                None,
            )
            for each in bench_history.by_days(1000, 20, runs=runs)
        ),
        Line(
            "history: store size, 500 keys x 20 models, a year (dense)",
            f"{dense.per_day * 365 / MIB:,.0f} MiB ({dense.per_row:.0f} B/row)",
            f"{dense.days} days put, {dense.put_seconds:.2f} s each",
            "",
            "a few hundred MB",
            dense.per_day * 365 <= 300 * MIB,
        ),
        Line(
            "history: store size, 20,000 keys x 50 models, a day (dense)",
            f"{big.per_day / MIB:.1f} MiB/day ({big.per_row:.0f} B/row)",
            f"put_day {big.put_seconds:.1f} s",
            "",
            "",
            None,
        ),
    ]


def render(lines: list[Line]) -> str:
    header = ("benchmark", "costwatch", "baseline(s)", "ratio", "target", "met?")
    cells = [
        (
            line.benchmark,
            line.costwatch,
            line.baseline,
            line.ratio,
            line.target,
            "-" if line.met is None else ("yes" if line.met else "NO"),
        )
        for line in lines
    ]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join(out)


GrowthStep = Callable[[int], list[bench_growth.GrowthRow]]
GROWTH: list[GrowthStep] = [bench_growth.measure]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="whole-process runs per cycle row")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=2_000, help="soak cycles")
    parser.add_argument("--skip", default="", help="steps to leave out, e.g. soak,growth")
    args = parser.parse_args(argv)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    lines: list[Line] = []
    steps: list[tuple[str, Callable[[], list[Line]]]] = [
        ("cycle", lambda: cycle_lines(args.runs)),
        ("scrape", lambda: scrape_lines(args.scrapes)),
        ("storm", storm_lines),
        ("soak", lambda: soak_lines(args.cycles)),
        ("forecast", lambda: forecast_lines(args.runs)),
        ("history", lambda: history_lines(args.runs)),
        *STEPS,
    ]
    growth: list[bench_growth.GrowthRow] = []
    if "growth" not in skip:  # whole processes first, while this one is small: a child's
        # peak RSS counts the pages it shares with this process until it execs
        print("running growth ...", file=sys.stderr, flush=True)
        for measure in GROWTH:
            growth += measure(max(1, args.runs - 1))
    for name, step in steps:
        if name in skip:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        lines += step()
    print(render(lines))
    if growth:
        print("\nHow a cycle grows (whole process, best of runs; days stored: the history's rows)")
        print(bench_growth.render(growth))
    return 0


STEPS: list[tuple[str, Callable[[], list[Line]]]] = []  # appended by other benches

if __name__ == "__main__":
    sys.exit(main())
