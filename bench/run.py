"""Every benchmark in one run, one table: benchmark, costwatch, baseline(s), ratio, target, met?

    python bench/run.py [--runs 3] [--scrapes 200] [--cycles 2000]

Runs `bench_check` (whole-process `costwatch check --csv` beside bare polars and pandas),
`bench_scrape`, `bench_storm`, `bench_soak` and `bench_forecast`, each measuring its baseline
in the same run, then prints the table. Numbers only: nothing here fails on a missed target.
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
    many, one = by[bench_check.MANY], by[bench_check.ONE]
    cli = import_seconds("costwatch.cli", runs)
    polars = import_seconds("polars", runs)
    return [
        Line(
            "cycle: check --csv, 200 budgets, time vs polars",
            f"{many.seconds:.2f} s",
            f"(a) polars scan+group_by {base.seconds:.2f} s",
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
            "cycle: check --csv, 200 budgets, peak RSS",
            f"{many.rss / MIB:.0f} MiB",
            f"CSV {size / MIB:.0f} MiB; (a) {base.rss / MIB:.0f}, (b) {pandas.rss / MIB:.0f} MiB",
            f"{many.rss / size:.2f}x CSV",
            "<= 3x CSV",
            many.rss <= 3 * size,
        ),
        Line(
            "cycle: check --csv, 1 budget",
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
    return [
        Line(
            f"scrape /metrics, {result.series:,} series, median",
            f"{ours * 1000:.1f} ms",
            f"plain registry {theirs * 1000:,.0f} ms",
            f"{theirs / ours:,.0f}x faster",
            "< 20 ms",
            ours < 0.020,
        ),
        Line(
            "scrape /metrics, p99",
            f"{bench_scrape.p99(result.ours) * 1000:.1f} ms",
            f"plain registry {bench_scrape.p99(result.theirs) * 1000:,.0f} ms",
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
            f"{last.db_bytes / 1024:.0f} KiB, {last.history_rows} history rows",
            f"{first.db_bytes / 1024:.0f} KiB, {first.history_rows} rows at cycle {first.cycle}",
            f"{last.db_bytes / first.db_bytes:.2f}",
            "<= 1.25, rows flat",
            last.db_bytes <= 1.25 * first.db_bytes
            and last.history_rows <= 1.05 * first.history_rows,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="whole-process runs per cycle row")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=2_000, help="soak cycles")
    args = parser.parse_args(argv)
    lines: list[Line] = []
    steps: list[tuple[str, Callable[[], list[Line]]]] = [
        ("cycle", lambda: cycle_lines(args.runs)),
        ("scrape", lambda: scrape_lines(args.scrapes)),
        ("storm", storm_lines),
        ("soak", lambda: soak_lines(args.cycles)),
        ("forecast", lambda: forecast_lines(args.runs)),
    ]
    for name, step in steps:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        lines += step()
    print(render(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
