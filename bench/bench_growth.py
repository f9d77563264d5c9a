"""How the cost of a cycle grows: whole-process `check --csv --dry-run` against keys and budgets.

    python bench/bench_growth.py [--runs 2]

For each export size (keys x 50 models, bench/gen_export.py) and each budget file of
`bench_check` (quiet: one budget nobody nears; 200: the realistic 200-budget file; storm: ~1.5
crossings per key), the best wall time and peak RSS of `costwatch check`, beside polars' bare
scan of the same file, measured in the same run. Days stored is the history's dimension
(`GrowthRow.days`): a bench of the store appends its rows to the same table (`bench/run.py`).
Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_check  # noqa: E402 (bench/ is put on the path just above)

KEYS = (2_000, 20_000)
BUDGETS = {"quiet": 1, "200": 200, "storm": 2}


@dataclass(frozen=True)
class GrowthRow:
    """One cell of the growth table."""

    keys: int
    budgets: str  # "1 (quiet)", "200", ...
    days: str  # days stored ("-": a cycle from the export alone)
    rows: int  # export rows read
    seconds: float
    rss: int  # bytes
    baseline: float  # polars' bare scan of the same file, seconds


def measure(runs: int = 2, keys: tuple[int, ...] = KEYS, models: int = 50) -> list[GrowthRow]:
    out = []
    for count in keys:
        export = bench_check.ensure_export(count, models)
        export.read_bytes()
        commands = {"base": bench_check.baseline_command(export)}
        for name in BUDGETS:
            commands[name] = bench_check.check_command(export, bench_check.ensure_config(name))
        best: dict[str, tuple[float, int]] = {}
        for _ in range(runs):
            for name, command in commands.items():
                seconds, rss, _ = bench_check.run(command)
                old = best.get(name, (float("inf"), 0))
                best[name] = (min(old[0], seconds), max(old[1], rss))
        for name, budgets in BUDGETS.items():
            label = f"{budgets} ({name})" if name != "200" else "200"
            seconds, rss = best[name]
            out.append(GrowthRow(count, label, "-", count * models, seconds, rss, best["base"][0]))
    return out


def render(rows: list[GrowthRow]) -> str:
    header = (
        "keys",
        "budgets",
        "days stored",
        "rows",
        "cycle",
        "peak RSS",
        "polars scan",
        "x scan",
    )
    cells = [
        (
            f"{row.keys:,}",
            row.budgets,
            row.days,
            f"{row.rows:,}",
            f"{row.seconds:.2f} s",
            f"{row.rss / 2**20:.0f} MiB",
            f"{row.baseline:.2f} s",
            f"{row.seconds / row.baseline:.2f}x",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    print(render(measure(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
