"""costwatch.workspaces: keys of several workspaces named (workspace, id), and which budgets a
failed workspace leaves unevaluated. Pure: frames in, frames out."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from costwatch import budgets, usage, workspaces
from costwatch.config import parse_config

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FILE = """\
workspaces:
  - {name: marketing, api_key: a}
  - {name: research, api_key: b}
budgets:
"""


def rows(*keys: tuple[str, str, float]) -> usage.Usage:
    frame = pl.DataFrame(
        [(key, name, "gpt-4o", 1, cost) for key, name, cost in keys],
        schema=["api_key_id", "api_key_name", "model", "requests", "total_cost_usd"],
        orient="row",
    ).with_columns(pl.lit(None, pl.Int64).alias(c) for c in usage.TOKEN_COLUMNS)
    return usage.Usage(
        frame.select(list(usage.SCHEMA)), has_tokens=False, model_column="model", rows_read=1
    )


BOTH = workspaces.combine(
    {
        "marketing": rows(("k1", "bot", 5.0), ("k2", "etl", 1.0)),
        "research": rows(("k1", "bot", 3.0)),
    }
)


def used(budget_lines: str) -> dict[tuple[str, str | None], float]:
    config = parse_config(FILE + budget_lines, env={})
    rules = budgets.rules(config, NOW)
    frames = dict.fromkeys(budgets.export_ranges(rules), BOTH.frame)
    found = budgets.evaluate(rules, frames, NOW).findings
    return {(r["budget"], r["api_key_id"]): r["used"] for r in found.iter_rows(named=True)}


def test_each_workspaces_keys_are_named_by_it_in_one_frame() -> None:
    assert BOTH.frame.select("workspace", "api_key_id").rows() == [
        ("marketing", "marketing/k1"),
        ("marketing", "marketing/k2"),
        ("research", "research/k1"),
    ]
    assert workspaces.split("research/k1") == ("research", "k1")
    assert BOTH.rows_read == 2


def test_a_key_id_selects_that_id_in_every_workspace_a_qualified_one_in_its_own() -> None:
    assert used(
        "  - {name: any, keys: [k1], limits: {cost_usd: 100}}\n"
        "  - {name: one, keys: [research/k1], limits: {cost_usd: 100}}\n"
    ) == {("any", "marketing/k1"): 5.0, ("any", "research/k1"): 3.0, ("one", "research/k1"): 3.0}


def test_a_budget_scoped_to_a_workspace_selects_only_its_keys() -> None:
    assert used(
        "  - {name: pool, keys: '*', scope: shared, limits: {cost_usd: 100},"
        " workspaces: [marketing]}\n"
        "  - {name: org, keys: '*', scope: shared, limits: {cost_usd: 100}}\n"
    ) == {("pool", None): 6.0, ("org", None): 9.0}


def test_a_fallback_takes_the_keys_no_budget_of_their_workspace_claims() -> None:
    assert used(
        "  - {name: bots, keys: bot, limits: {cost_usd: 100}, workspaces: [research]}\n"
        "  - {name: rest, keys: '*', fallback: true, limits: {cost_usd: 100}}\n"
    ) == {
        ("bots", "research/k1"): 3.0,
        ("rest", "marketing/k1"): 5.0,
        ("rest", "marketing/k2"): 1.0,
    }


def test_a_failed_workspace_leaves_every_limit_of_the_budgets_reading_it_unevaluated() -> None:
    config = parse_config(
        FILE + "  - {name: org, keys: '*', limits: {cost_usd: 1, requests: 5},"
        " models: {'gpt-*': {tokens: 9}}}\n"
        "  - {name: m, keys: '*', limits: {cost_usd: 1}, workspaces: [marketing]}\n",
        env={},
    )
    kept, unread = workspaces.reading(config, budgets.rules(config, NOW), {"research"})
    assert [rule.name for rule in kept] == ["m"]
    assert [(u.budget, u.metric, u.model, u.reason) for u in workspaces.unevaluated(unread)] == [
        ("org", "cost_usd", None, "export_failed"),
        ("org", "requests", None, "export_failed"),
        ("org", "tokens", "gpt-*", "export_failed"),
    ]
