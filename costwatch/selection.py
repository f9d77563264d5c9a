"""Which keys each budget selects, and every key's use summed once per export range. Pure.

One rule, stated once: a budget selects a key when a glob of `keys` matches its name or a
pattern equals its id (`globs.any_matches`, the frame form of `globs.key_matches`), `exclude`
does not, and, for a `fallback: true` budget, no budget that `claims` its keys selects it
(`Budget.claims`: a per-key budget that is not a fallback). `selections` evaluates that rule
for every budget over a table of keys at once; the evaluation (`KeyTables`) and `costwatch
validate`'s key counts both use it.

Keys of several workspaces (`workspaces:`) come with a `workspace` column and an api_key_id of
"workspace/id" (`costwatch.workspaces`): a budget then selects only the keys of the workspaces
it reads, and a pattern equal to the id matches it either way, as "id" or "workspace/id".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from costwatch import globs
from costwatch.config import Budget
from costwatch.config.budget import METRICS, Metric

WORKSPACE = "workspace"  # the column of keys of several workspaces
USAGE_COLUMN: dict[Metric, str] = {
    "cost_usd": "total_cost_usd",
    "requests": "requests",
    "tokens": "tokens",
}


def mask(index: int) -> str:
    """The column of `selections` that says which keys budget number `index` selects."""
    return f"_selected_{index}"


def selections(budgets: Sequence[Budget], keys: pl.DataFrame) -> pl.DataFrame:
    """`keys` (api_key_id, api_key_name, one row per key) with a boolean column per budget,
    `mask(index)`: whether it selects the key. The claiming budgets' own masks make the
    `_claimed` column a fallback budget reads, so each glob is matched once."""
    claimers = [i for i, budget in enumerate(budgets) if budget.claims]
    others = [i for i, budget in enumerate(budgets) if not budget.claims]
    claimed = pl.any_horizontal(pl.col(mask(i)) for i in claimers) if claimers else pl.lit(False)
    scoped = WORKSPACE in keys.columns
    chosen = [selection_of(budget, pl.col("_claimed"), scoped=scoped) for budget in budgets]
    return (
        keys.select("api_key_id", "api_key_name", *([WORKSPACE] if scoped else []))
        .with_columns(chosen[i].alias(mask(i)) for i in claimers)
        .with_columns(claimed.alias("_claimed"))
        .with_columns(chosen[i].alias(mask(i)) for i in others)
        .select("api_key_id", *(mask(i) for i in range(len(budgets))))
    )


def matched_keys(
    budgets: Sequence[Budget], known_keys: Sequence[tuple[str, str]]
) -> list[list[tuple[str, str]]]:
    """For each budget, the (api_key_id, api_key_name) pairs of `known_keys` it selects."""
    keys = pl.DataFrame(
        {"api_key_id": [k for k, _ in known_keys], "api_key_name": [n for _, n in known_keys]},
        schema={"api_key_id": pl.String(), "api_key_name": pl.String()},
    )
    table = selections(budgets, keys)
    return [
        [key for key, chosen in zip(known_keys, table.get_column(mask(i)), strict=True) if chosen]
        for i in range(len(budgets))
    ]


def subject_rows(
    budget: Budget,
    budgets: Sequence[Budget],
    usage: pl.DataFrame,
    api_key_id: str | None,
    *,
    selected: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The usage rows behind one subject of a budget: one key's, or a shared pool's.

    `selected` is this range's table from `budgets.evaluate` (`Evaluation.selected`), when at
    hand: then the pool's keys are read from it instead of matching every key against every
    glob again.
    """
    if api_key_id is not None:
        return usage.filter(pl.col("api_key_id") == api_key_id)
    if selected is not None and budget.name in selected.columns:
        keys = selected.filter(pl.col(budget.name))
    else:
        claims = key_claims(budgets, usage)
        keys = claims.filter(
            selection_of(budget, pl.col("_claimed"), scoped=WORKSPACE in claims.columns)
        )
    return usage.join(keys.select("api_key_id"), on="api_key_id", how="semi")


def key_claims(budgets: Sequence[Budget], usage: pl.DataFrame) -> pl.DataFrame:
    """Each key of `usage` once: api_key_id, api_key_name, and `_claimed` (some non-fallback
    per-key budget selects it)."""
    scoped = WORKSPACE in usage.columns
    return (
        usage.group_by("api_key_id")
        .agg(pl.col("api_key_name").last(), *([pl.col(WORKSPACE).first()] if scoped else []))
        .with_columns(claimed_by_own_budgets(budgets, scoped=scoped).alias("_claimed"))
    )


def _selects(patterns: Sequence[str], *, scoped: bool) -> pl.Expr:
    names, ids = pl.col("api_key_name"), pl.col("api_key_id")
    selected = globs.any_matches(patterns, names=names, ids=ids)
    if scoped:  # "workspace/id": the id alone matches too
        own = ids.str.slice(pl.col(WORKSPACE).str.len_chars() + 1)
        selected = selected | globs.any_matches(patterns, names=names, ids=own)
    return selected


def selection_of(budget: Budget, claimed: pl.Expr, *, scoped: bool = False) -> pl.Expr:
    """Whether `budget` selects a key (`scoped`: keys of several workspaces, a `workspace`
    column; the budget's `workspaces` narrow it)."""
    selected = _selects(budget.keys, scoped=scoped)
    if budget.exclude:
        selected = selected & ~_selects(budget.exclude, scoped=scoped)
    if scoped and budget.workspaces is not None:
        selected = selected & pl.col(WORKSPACE).is_in(list(budget.workspaces))
    if budget.fallback:
        selected = selected & ~claimed
    return selected


def claimed_by_own_budgets(budgets: Sequence[Budget], *, scoped: bool = False) -> pl.Expr:
    """True for keys that some budget which `claims` its keys selects."""
    claims = [
        selection_of(budget, pl.lit(value=False), scoped=scoped)
        for budget in budgets
        if budget.claims
    ]
    return pl.any_horizontal(claims) if claims else pl.lit(value=False)


def row_tokens(usage: pl.DataFrame) -> pl.Expr:
    """A row's tokens as `evaluate` counts them: prompt plus completion (null: not reported),
    as a float, so that no sum of them wraps around."""
    if "tokens" in usage.columns:
        return _as_float("tokens")
    return _as_float("sum_prompt_tokens") + _as_float("sum_completion_tokens")


class KeyTables:
    """One export range's usage summed per key: for all models, and per model glob.

    One `group_by` over the export computes every sum at once: all models, and each model glob
    in use (a glob's sums over its matching rows only; a key without such rows is left out of
    that glob's table). Every budget's selection is evaluated once per key, in one `select` (a
    boolean column per budget, `mask(index)`), so selecting a budget's keys is a filter on a
    ready column, not a regex pass per budget and table.
    """

    def __init__(
        self, usage: pl.DataFrame, budgets: Sequence[Budget], patterns: Sequence[str]
    ) -> None:
        self._patterns = {
            pattern: f"_glob_{i}" for i, pattern in enumerate(dict.fromkeys(patterns))
        }
        # Counts are summed as floats: a 64-bit integer sum wraps around (two rows of 2**62
        # requests once summed to a negative count), a float sum cannot. The loader keeps an
        # export's counts under 2**53, where these sums are exact.
        tokens = row_tokens(usage)
        values = {
            "cost_usd": pl.col(USAGE_COLUMN["cost_usd"]),
            "requests": _as_float(USAGE_COLUMN["requests"]),
            "tokens": tokens,
        }
        aggs = [pl.col("api_key_name").last(), *_sums(values, "")]
        if WORKSPACE in usage.columns:
            aggs.append(pl.col(WORKSPACE).first())
        matches = [
            pl.col("model").str.contains(globs.to_regex(pattern)).alias(f"{prefix}_match")
            for pattern, prefix in self._patterns.items()
        ]
        for prefix in self._patterns.values():
            on_model = pl.col(f"{prefix}_match")
            aggs += [
                pl.col("api_key_name").filter(on_model).last().alias(f"{prefix}api_key_name"),
                on_model.sum().alias(f"{prefix}_rows"),
                *_sums({m: pl.when(on_model).then(v) for m, v in values.items()}, prefix),
            ]
        self._sums = usage.lazy().with_columns(matches).group_by("api_key_id").agg(aggs).collect()
        self.masks = selections(budgets, self._sums)
        self.all_models = self._table("")
        self._by_glob: dict[str, pl.DataFrame] = {}

    def for_models(self, pattern: str) -> pl.DataFrame:
        if pattern not in self._by_glob:
            prefix = self._patterns[pattern]
            self._by_glob[pattern] = self._table(prefix).filter(
                self._sums.get_column(f"{prefix}_rows") > 0
            )
        return self._by_glob[pattern]

    def _table(self, prefix: str) -> pl.DataFrame:
        """api_key_id, api_key_name, the metrics, _token_rows, then every budget's mask."""
        columns = ["api_key_name", *METRICS, "_token_rows"]
        sums = self._sums.select("api_key_id", *(pl.col(f"{prefix}{c}").alias(c) for c in columns))
        return pl.concat([sums, self.masks.drop("api_key_id")], how="horizontal")


def _as_float(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64)


def _sums(values: Mapping[str, pl.Expr], prefix: str) -> list[pl.Expr]:
    sums = [values[m].sum().alias(f"{prefix}{m}") for m in METRICS]
    # rows that carry tokens
    sums.append(values["tokens"].count().alias(f"{prefix}_token_rows"))
    return sums
