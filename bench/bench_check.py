"""`costwatch check --csv` on the largest export, as a whole process, beside its baselines.

    python bench/bench_check.py [--keys 20000] [--models 50] [--runs 3]

Each measurement is a fresh process (imports included, as a user runs it), timed from start to
exit, with its own peak RSS from `os.wait4`. In one run, alternating so both see the same
machine load and page cache:

  (a) baseline      python -c: polars' bare scan_csv(...).group_by("api_key_id").agg().collect()
  (b) baseline      bench/pandas_check.py: the 200-budget evaluation written plainly in pandas
  check, quiet      costwatch check --csv --dry-run, one per-key budget no key comes near
  check, storm      the same with two budgets every key crosses: ~30,000 alerts planned
  check, 1 budget    one per-key budget of $200 (about 1,000 keys cross a threshold)
  check, 200        a realistic 200-budget file (globs, per-model limits, pools)

Prints best wall time and largest peak RSS per row, the ratios to (a) and RSS / CSV size.
Numbers only: no assertions (these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
TEAMS = ("support", "sales", "search", "legal", "hr", "data", "ops", "marketing", "finance")

BASELINE = """
import sys
import polars as pl
(
    pl.scan_csv(sys.argv[1])
    .group_by("api_key_id")
    .agg(pl.col("total_cost_usd").sum(), pl.col("requests").sum())
    .collect()
)
"""

HEADER = """\
langdock:
  api_key: not-used-with-csv
schedule:
  timezone: UTC
"""


def one_budget_config() -> str:
    return HEADER + 'budgets:\n  - name: every-key\n    keys: "*"\n    limits: {cost_usd: 200}\n'


def quiet_config() -> str:
    """One per-key budget far above every key: no threshold crossed, no forecast due."""
    return HEADER + 'budgets:\n  - name: every-key\n    keys: "*"\n    limits: {cost_usd: 1e8}\n'


def storm_config() -> str:
    """Every key over one budget, and the half whose number ends in 0-4 over a second one:
    about 30,000 crossings in one cycle."""
    return HEADER + (
        "budgets:\n"
        '  - name: every-key\n    keys: "*"\n    limits: {cost_usd: 0.01}\n'
        '  - name: half\n    keys: ["*0-*", "*1-*", "*2-*", "*3-*", "*4-*"]\n'
        "    limits: {cost_usd: 0.01}\n"
    )


def two_hundred_budgets_config() -> str:
    """200 budgets like a large workspace writes them: team globs, pools, per-model limits."""
    lines = [HEADER, "budgets:"]
    for team in TEAMS:  # 9 per-key team budgets with a per-model limit
        lines += [
            f"  - name: {team}-keys",
            f'    keys: "{team}-*"',
            "    limits: {cost_usd: 500, requests: 100000}",
            '    models: {"gpt-4o*": {cost_usd: 200}}',
        ]
    for team in TEAMS:  # 9 team pools
        lines += [
            f"  - name: {team}-pool",
            "    scope: shared",
            f'    keys: "{team}-*"',
            "    limits: {cost_usd: 20000}",
        ]
    count = 2 * len(TEAMS)
    n = 1
    while count < 199:  # per-key budgets on narrower globs, each with a model-family limit
        team = TEAMS[n % len(TEAMS)]
        lines += [
            f"  - name: {team}-{n}",
            f'    keys: ["{team}-{n}*-prod", "{team}-{n}*-ci"]',
            '    exclude: ["*-dev"]',
            "    limits: {cost_usd: 300}",
            '    models: {"claude-*": {cost_usd: 100}}',
        ]
        count += 1
        n += 1
    lines += [
        "  - name: workspace",
        "    scope: shared",
        '    keys: "*"',
        "    limits: {cost_usd: 2000000}",
        '    models: {"gpt-4o": {cost_usd: 500000}, "claude-*": {cost_usd: 500000}}',
    ]
    return "\n".join(lines) + "\n"


CONFIGS = {
    "quiet": quiet_config,
    "storm": storm_config,
    "1": one_budget_config,
    "200": two_hundred_budgets_config,
}


def ensure_export(keys: int, models: int) -> Path:
    from gen_export import generate

    DATA.mkdir(exist_ok=True)
    export = DATA / f"export-{keys}x{models}.csv"
    if not export.exists():
        print(f"generating {export} ...", flush=True)
        generate(export, keys, models, byok=True, seed=1)
    return export


def ensure_config(name: str) -> Path:
    """bench/data/budgets-<name>.yaml, written from CONFIGS."""
    DATA.mkdir(exist_ok=True)
    path = DATA / f"budgets-{name}.yaml"
    path.write_text(CONFIGS[name](), encoding="utf-8")
    return path


def check_command(export: Path, config: Path) -> list[str]:
    """`costwatch check --csv --dry-run` at an instant inside the export's period."""
    command = [sys.executable, "-m", "costwatch", "check", "--csv", str(export), "--dry-run"]
    return [*command, "--now", "2026-09-30T12:00:00+00:00", "--config", str(config)]


def baseline_command(export: Path) -> list[str]:
    return [sys.executable, "-c", BASELINE, str(export)]


def run(command: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in bytes and exit code of one whole process."""
    seconds, rss, _cpu, code = run_measured(command)
    return seconds, rss, code


def run_measured(command: list[str]) -> tuple[float, int, float, int]:
    """Wall seconds, peak RSS in bytes, CPU seconds (user + system, all threads) and exit code
    of one whole process. CPU time is the work done: on a machine others share, it moves far
    less than the wall time does."""
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        assert child.stderr is not None
        errors = child.stderr.read().decode(errors="replace")
    if child.returncode not in (0, 1):
        raise SystemExit(f"{command[:4]} failed ({child.returncode}):\n{errors}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, usage.ru_maxrss * 1024, cpu, child.returncode


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float  # best wall time
    rss: int  # largest peak RSS, bytes
    cpu: float = 0.0  # least CPU time (user + system), seconds


BASE = "(a) polars scan+group_by"
PANDAS = "(b) pandas, 200 budgets"
QUIET = "check, quiet (no crossing)"
STORM = "check, storm (~30,000 alerts)"
ONE = "check, 1 budget"
MANY = "check, 200 budgets"


def measure(
    keys: int = 20_000, models: int = 50, runs: int = 3, pandas: bool = True
) -> tuple[list[Row], int]:
    """Every row, best of `runs` (alternating), and the CSV's size in bytes."""
    export = ensure_export(keys, models)
    export.read_bytes()  # warm the page cache for everyone
    many = ensure_config("200")
    commands = {
        BASE: baseline_command(export),
        QUIET: check_command(export, ensure_config("quiet")),
        STORM: check_command(export, ensure_config("storm")),
        ONE: check_command(export, ensure_config("1")),
        MANY: check_command(export, many),
    }
    if pandas:
        commands[PANDAS] = [sys.executable, str(HERE / "pandas_check.py"), str(export), str(many)]
    samples: dict[str, list[tuple[float, int, float, int]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            samples[name].append(run_measured(command))
    rows = [
        Row(
            name,
            min(s for s, _, _, _ in results),
            max(r for _, r, _, _ in results),
            min(c for _, _, c, _ in results),
        )
        for name, results in samples.items()
    ]
    return rows, export.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rows, size = measure(args.keys, args.models, args.runs)
    base = next(row.seconds for row in rows if row.name == BASE)
    print(f"\nexport: {size / 2**20:.0f} MiB; best of {args.runs}, whole process")
    print(f"{'':26} {'wall':>8} {'x (a)':>7} {'peak RSS':>9} {'RSS/CSV':>8}")
    for row in rows:
        print(
            f"{row.name:26} {row.seconds:7.2f}s {row.seconds / base:6.2f}x "
            f"{row.rss / 2**20:6.0f}MiB {row.rss / size:7.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
