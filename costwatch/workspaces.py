"""Keys of several Langdock workspaces in one cycle (`workspaces:`). Pure (polars).

A key is (workspace, api_key_id): each workspace's usage gets a `workspace` column and its
api_key_id becomes "workspace/id" (`qualify`), so one id in two workspaces is two keys for
every budget, alert, ledger entry and metric that goes by api_key_id, and the usage of all
workspaces is one frame per export range (`combine`). A file with `langdock:` keeps its ids as
Langdock gives them. A workspace whose export failed leaves every budget that reads it
unevaluated (`unevaluated`), never "within budget"; the other budgets are evaluated.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import polars as pl

from costwatch import usage
from costwatch.budgets import Rule, Unevaluated
from costwatch.config import Config
from costwatch.selection import WORKSPACE

__all__ = [
    "SEPARATOR",
    "WORKSPACE",
    "combine",
    "key_name",
    "qualify",
    "reading",
    "split",
    "unevaluated",
]

SEPARATOR = "/"  # between the workspace and the key's id; never in a workspace's name


def qualify(frame: pl.DataFrame, workspace: str) -> pl.DataFrame:
    """`frame` (usage rows) with each api_key_id as "workspace/id" and a `workspace` column."""
    return frame.with_columns(
        (pl.lit(workspace + SEPARATOR) + pl.col("api_key_id")).alias("api_key_id"),
        pl.lit(workspace).alias(WORKSPACE),
    )


def key_name(frame: pl.DataFrame) -> pl.Expr:
    """A key's name as the reports and suggestions list it: with a `workspace` column (keys
    of several workspaces), its workspace's name before it, as its id has ("research/alpha")."""
    if WORKSPACE not in frame.columns:
        return pl.col("api_key_name")
    return (pl.col(WORKSPACE) + SEPARATOR + pl.col("api_key_name")).alias("api_key_name")


def split(key_id: str) -> tuple[str, str]:
    """A qualified "workspace/id" as (workspace, id)."""
    workspace, _, own = key_id.partition(SEPARATOR)
    return workspace, own


def combine(usages: Mapping[str, usage.Usage]) -> usage.Usage:
    """One range's usage of each workspace (by name) as one `Usage`, keys qualified."""
    frames = [qualify(part.frame, name) for name, part in usages.items()]
    columns = [part.model_column for part in usages.values() if part.model_column]
    return usage.Usage(
        frame=pl.concat(frames, how="vertical"),
        has_tokens=any(part.has_tokens for part in usages.values()),
        model_column=columns[0] if columns else None,
        rows_read=sum(part.rows_read for part in usages.values()),
    )


def reading(
    config: Config, rules: Sequence[Rule], failed: Collection[str]
) -> tuple[list[Rule], list[Rule]]:
    """`rules` split into those that read no workspace of `failed` and those that do."""
    kept = [rule for rule in rules if not set(config.reads(rule.budget)) & set(failed)]
    return kept, [rule for rule in rules if rule not in kept]


def unevaluated(rules: Sequence[Rule]) -> list[Unevaluated]:
    """Every limit of `rules` (the budgets reading a workspace whose export failed)."""
    return [
        Unevaluated(rule.name, metric, model, "export_failed")
        for rule in rules
        for model, limits in [(None, rule.budget.limits), *rule.budget.models.items()]
        for metric, _ in limits.items()
    ]
