"""Baseline (b): the same budget evaluation as `costwatch check`, written plainly in pandas.

    python bench/pandas_check.py EXPORT.csv BUDGETS.yaml

What a competent engineer writes without polars: `read_csv`, per-key sums with `groupby`, per
budget a key selection with `fnmatch` globs (keys and exclude, vectorised through the regex
`fnmatch.translate` makes), per-model limits on the rows of the models a glob matches, the level
(highest threshold reached) per subject and metric, and the per-key spend table printed to
stdout like costwatch's. Run as a whole process by `bench_check.py`; prints the number of
findings and of crossed thresholds on stderr.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

THRESHOLDS = (50.0, 80.0, 100.0)
METRICS = {"cost_usd": "total_cost_usd", "requests": "requests"}


def glob_mask(names: Any, patterns: str | list[str]) -> Any:
    listed = [patterns] if isinstance(patterns, str) else list(patterns)
    regex = "|".join(f"(?:{fnmatch.translate(p)})" for p in listed)
    return names.str.match(re.compile(regex))


def judge(budget: str, per_key: Any, limits: dict[str, float], model: str | None) -> Any:
    rows = []
    for metric, column in METRICS.items():
        if metric not in limits:
            continue
        frame = pd.DataFrame(
            {
                "budget": budget,
                "api_key_name": per_key.index,
                "model": model,
                "metric": metric,
                "used": per_key[column].to_numpy(dtype=float),
                "limit": float(limits[metric]),
            }
        )
        frame["ratio"] = frame["used"] / frame["limit"]
        level = pd.Series(float("nan"), index=frame.index)
        for at in THRESHOLDS:
            level = level.mask(frame["used"] * 100 >= frame["limit"] * at, at)
        frame["level"] = level
        rows.append(frame)
    return pd.concat(rows) if rows else pd.DataFrame()


def main(export: Path, budgets_file: Path) -> int:
    config = yaml.safe_load(budgets_file.read_text(encoding="utf-8"))
    usage = pd.read_csv(export)
    per_key = usage.groupby("api_key_name")[["total_cost_usd", "requests"]].sum()
    names = per_key.index.to_series()
    model_sums: dict[str, Any] = {}
    findings = []
    for budget in config["budgets"]:
        selected = glob_mask(names, budget["keys"])
        if budget.get("exclude"):
            selected &= ~glob_mask(names, budget["exclude"])
        keys = per_key[selected.to_numpy()]
        shared = budget.get("scope") == "shared"
        subjects = keys.sum().to_frame("*").T if shared else keys
        findings.append(judge(budget["name"], subjects, budget["limits"], None))
        for pattern, limits in (budget.get("models") or {}).items():
            if pattern not in model_sums:
                rows = usage[usage["model"].map(lambda m, p=pattern: fnmatch.fnmatchcase(m, p))]
                model_sums[pattern] = rows.groupby("api_key_name")[
                    ["total_cost_usd", "requests"]
                ].sum()
            on_models = model_sums[pattern]
            on_models = on_models[on_models.index.isin(keys.index)]
            subjects = on_models.sum().to_frame("*").T if shared else on_models
            findings.append(judge(budget["name"], subjects, limits, pattern))
    result = pd.concat(findings).sort_values("ratio", ascending=False)
    table = per_key.sort_values("total_cost_usd", ascending=False)
    sys.stdout.write(table.to_string())
    crossed = int(result["level"].notna().sum())
    print(f"{len(result)} findings, {crossed} crossed", file=sys.stderr)
    return 1 if crossed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
