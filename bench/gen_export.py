"""Write a realistic Langdock API-key usage export (`group_by=model`) for benchmarks and tests.

    python bench/gen_export.py OUT.csv [--keys 20000] [--models 50] [--byok/--no-byok] [--seed 1]

One row per key and model (keys x models rows), with the exact Langdock header. Spend is skewed
the way real workspaces are: a few keys and a few models carry most of it (Pareto weights), and
some key names need quoting (commas, double quotes, non-ASCII). The per-key and per-model tables
are small and built in Python; the keys x models table is built and written by polars, so
1,000,000 rows take a few seconds.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import polars as pl

HEADER = (
    "period_start",
    "period_end",
    "org_id",
    "api_key_id",
    "api_key_name",
    "model",
    "requests",
    "total_cost_usd",
)
TOKEN_HEADER = (
    "sum_prompt_tokens",
    "sum_completion_tokens",
    "cached_prompt_tokens",
    "cache_creation_tokens",
    "no_cache_tokens",
)
PERIOD = ("2026-09-01", "2026-09-30")

_TEAMS = ("support", "sales", "search", "legal", "hr", "data", "ops", "marketing", "finance")
_ODD_NAMES = ('Sales, EMEA "pilot"', "Forschung & Entwicklung, München", "support-bot, prod")
_MODEL_FAMILIES = (
    ("gpt-4o", 0.012),
    ("gpt-4o-mini", 0.0008),
    ("claude-sonnet-4", 0.015),
    ("claude-haiku-4", 0.002),
    ("gemini-2.5-pro", 0.01),
    ("mistral-large", 0.006),
    ("llama-3.3-70b", 0.003),
)


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _key_table(keys: int, rng: random.Random) -> pl.DataFrame:
    names = []
    for i in range(keys):
        if i % 997 == 3:
            names.append(f"{_ODD_NAMES[i % len(_ODD_NAMES)]} {i}")
        else:
            names.append(f"{_TEAMS[i % len(_TEAMS)]}-{i}-{rng.choice(('prod', 'dev', 'ci'))}")
    return pl.DataFrame(
        {
            "api_key_id": [_uuid(rng) for _ in range(keys)],
            "api_key_name": names,
            "key_weight": [rng.paretovariate(1.1) for _ in range(keys)],
        }
    )


def _model_table(models: int, rng: random.Random) -> pl.DataFrame:
    names, prices = [], []
    for i in range(models):
        family, price = _MODEL_FAMILIES[i % len(_MODEL_FAMILIES)]
        generation = i // len(_MODEL_FAMILIES)
        names.append(family if generation == 0 else f"{family}-{generation:02d}")
        prices.append(price * (1 + 0.1 * generation))
    return pl.DataFrame(
        {
            "model": names,
            "cost_per_request": prices,
            "model_weight": [rng.paretovariate(1.5) for _ in range(models)],
        }
    )


def _uniform(seed: int) -> pl.Expr:
    """A deterministic uniform [0, 1) value per row, from a hash of the row number."""
    return (pl.int_range(0, pl.len()).hash(seed) // 2048).cast(pl.Float64) / float(2**53)


def _rows(keys: pl.DataFrame, models: pl.DataFrame, byok: bool, seed: int) -> pl.DataFrame:
    org_id = _uuid(random.Random(seed + 1))
    frame = keys.join(models, how="cross").with_columns(
        _uniform(seed).alias("u1"), _uniform(seed + 1).alias("u2"), _uniform(seed + 2).alias("u3")
    )
    requests = 1 + (pl.col("key_weight") * pl.col("model_weight") * 8 * pl.col("u1")).floor()
    frame = frame.with_columns(requests.cast(pl.Int64).alias("requests"))
    frame = frame.with_columns(
        (pl.col("requests") * pl.col("cost_per_request") * (0.5 + pl.col("u2"))).alias(
            "total_cost_usd"
        ),
        pl.lit(PERIOD[0]).alias("period_start"),
        pl.lit(PERIOD[1]).alias("period_end"),
        pl.lit(org_id).alias("org_id"),
    )
    columns: list[str | pl.Expr] = list(HEADER)
    if byok:
        prompt = (pl.col("requests") * (200 + 1800 * pl.col("u2"))).cast(pl.Int64)
        cached = (prompt * 0.4 * pl.col("u3")).cast(pl.Int64)
        creation = (prompt * 0.1 * pl.col("u1")).cast(pl.Int64)
        columns += [
            prompt.alias("sum_prompt_tokens"),
            (pl.col("requests") * (50 + 450 * pl.col("u3")))
            .cast(pl.Int64)
            .alias("sum_completion_tokens"),
            cached.alias("cached_prompt_tokens"),
            creation.alias("cache_creation_tokens"),
            (prompt - cached - creation).alias("no_cache_tokens"),
        ]
    return frame.select(columns)


def generate(path: Path, keys: int, models: int, byok: bool = True, seed: int = 1) -> int:
    """Write a keys x models export to `path`; return the number of bytes written."""
    rng = random.Random(seed)
    frame = _rows(_key_table(keys, rng), _model_table(models, rng), byok, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, float_precision=6)
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="the CSV file to write")
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--byok", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    size = generate(args.out, args.keys, args.models, byok=args.byok, seed=args.seed)
    print(f"{args.out}: {args.keys * args.models:,} rows, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
