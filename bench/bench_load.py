"""How fast and how lean is `costwatch.usage` on the largest export the API can return?

    python bench/bench_load.py [--rows-per-key 50] [--keys 20000] [--runs 3] [--regenerate]

Generates (or reuses) `bench/data/export-<keys>x<models>.csv` (1,000,000 rows with the BYOK
token columns by default, git-ignored) and measures, each run in a fresh subprocess so that
peak RSS belongs to one measurement only:

  (a) baseline   polars' bare `scan_csv(path).group_by("api_key_id").agg(cost, requests)`
  (b) costwatch  `usage.load_csv(path)` + `Usage.per_key` + `Usage.top_models()`
  (c) for context: the typed scan alone, the part of (b) no validation or aggregation can
      avoid (the ten columns the frame needs, parsed into their types)

Wall time is the operation only (imports excluded), best of `--runs`; peak RSS is the child's
VmHWM (largest of the runs, imports included). Prints a table with the ratios the project
holds itself to: time (b)/(a) at most 2, peak RSS at most 3x the CSV size. No assertions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"

# Run in the child: time the operation, then report wall time and the peak RSS (VmHWM).
CHILD = """
import json, sys, time
from pathlib import Path
import polars as pl
from costwatch import usage

def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def baseline(path):
    return (
        pl.scan_csv(path)
        .group_by("api_key_id")
        .agg(pl.col("total_cost_usd").sum(), pl.col("requests").sum())
        .collect()
    )

def costwatch(path):
    loaded = usage.load_csv(path)
    return loaded.per_key, loaded.top_models()

def scan_only(path):
    strings = ("api_key_id", "api_key_name", "model")
    types = {c: t for c, t in usage.SCHEMA.items() if c not in strings}
    scan = pl.scan_csv(path, infer_schema=False, schema_overrides=types)
    return scan.select(*usage.SCHEMA).collect()

path, which = Path(sys.argv[1]), sys.argv[2]
imported = peak_rss()
started = time.perf_counter()
result = {"baseline": baseline, "costwatch": costwatch, "scan_only": scan_only}[which](path)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_rss": peak_rss(), "imported_rss": imported}))
"""


@dataclass(frozen=True)
class Measurement:
    seconds: float  # best wall time
    peak_rss: int  # bytes, largest VmHWM of the runs
    imported_rss: int  # bytes, VmHWM right after the imports


def ensure_export(keys: int, models: int, regenerate: bool) -> Path:
    """The benchmark export, generated once and reused."""
    from gen_export import generate

    path = DATA / f"export-{keys}x{models}.csv"
    if regenerate or not path.exists():
        print(f"generating {path} ...", flush=True)
        generate(path, keys, models, byok=True, seed=1)
    return path


def run_child(path: Path, which: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), which],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(path: Path, runs: int) -> dict[str, Measurement]:
    """Alternate (a) and (b) so both see the same page cache and machine load."""
    path.read_bytes()  # warm the page cache so neither side pays for the disk
    samples: dict[str, list[dict[str, float]]] = {"baseline": [], "costwatch": [], "scan_only": []}
    for _ in range(runs):
        for which, results in samples.items():
            results.append(run_child(path, which))
    return {
        which: Measurement(
            seconds=min(r["seconds"] for r in results),
            peak_rss=int(max(r["peak_rss"] for r in results)),
            imported_rss=int(max(r["imported_rss"] for r in results)),
        )
        for which, results in samples.items()
    }


def report(path: Path, measured: dict[str, Measurement]) -> None:
    size = path.stat().st_size
    base = measured["baseline"]
    print(f"\nexport: {path.name}, {size / 2**20:.1f} MiB\n")
    print(f"{'':28} {'best wall':>10} {'x (a)':>7} {'peak RSS':>10} {'RSS/CSV':>8} {'imports':>9}")
    labels = {
        "baseline": "(a) polars scan+group_by",
        "costwatch": "(b) load_csv+per_key+top",
        "scan_only": "(c) typed scan alone",
    }
    for which, label in labels.items():
        m = measured[which]
        print(
            f"{label:28} {m.seconds * 1000:8.0f}ms {m.seconds / base.seconds:6.2f}x "
            f"{m.peak_rss / 2**20:7.0f}MiB {m.peak_rss / size:7.2f}x "
            f"{m.imported_rss / 2**20:6.0f}MiB"
        )
    print("\ntargets: (b)/(a) <= 2.00x wall time; (b) peak RSS <= 3.00x the CSV size")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args(argv)
    path = ensure_export(args.keys, args.models, args.regenerate)
    report(path, measure(path, args.runs))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
