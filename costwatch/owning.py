"""Who answers for an alert, and where it goes: the `owners:` section applied to every notice
about a key, budget alerts and the detectors' findings alike. Pure (polars).

    with_owners(plan, rules, owners, usages, selected) -> Plan   budget alerts with their owner
    routes(notice, default) -> channels                          where a notice is queued

A budget alert's subject is a key (a per-key budget) or a pool (a shared budget); the pool is
that key's too when the budget selects exactly one key in the range (`Evaluation.selected`).
Its owner is the key's (`detect.owners_of`: the first entry that selects it): the owner's
mentions (`owner_mention`) and channel (`owner_channel`) join the alert, in one join per export
range, however many alerts. The detectors attach the same owner to their findings
(`detect.findings`: `mention`, `channel`).

Routing, one rule for every kind: a notice goes to its own channel (a budget's or a scheduled
report's `channel`, else the default) and also to its owner's channel when it has one, once
per channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from costwatch import alerts, budgets
from costwatch.alerts import ALERT_SCHEMA, Alert, Rows
from costwatch.config.detect import Owner
from costwatch.detect.findings import Anomaly, KeyEvent
from costwatch.detect.owners import owners_of
from costwatch.reports import Report
from costwatch.usage import Usage

__all__ = ["routes", "with_owners"]

_OWNER = ("owner_mention", "owner_channel")


def with_owners(
    plan: alerts.Plan,
    rules: Sequence[budgets.Rule],
    owners: Sequence[Owner],
    usages: Mapping[str, Usage],
    selected: Mapping[str, pl.DataFrame],
) -> alerts.Plan:
    """`plan` with each alert's owner (see the module); unchanged without `owners:`."""
    if not owners or not (len(plan.alerts) or len(plan.silenced)):
        return plan
    ranges = {rule.name: budgets.export_key(rule.period) for rule in rules}
    owned = pl.concat(
        [
            _owned_subjects(owners, key, usage, selected.get(key), ranges)
            for key, usage in usages.items()
        ],
        how="vertical",
    )
    by_budget = pl.DataFrame(
        {"budget": list(ranges), "_range": list(ranges.values())},
        schema={"budget": pl.String(), "_range": pl.String()},
    )
    frames = [
        _joined(alerts.alert_frame(part), by_budget, owned) for part in (plan.alerts, plan.silenced)
    ]
    return alerts.Plan(
        alerts=Rows(frames[0], Alert), silenced=Rows(frames[1], Alert), ledger=plan.ledger
    )


def _owned_subjects(
    owners: Sequence[Owner],
    range_key: str,
    usage: Usage,
    selected: pl.DataFrame | None,
    ranges: Mapping[str, str],
) -> pl.DataFrame:
    """One range's subjects that have an owner: _range, budget ("" for a key's own alerts,
    whatever the budget), _subject (a key id, "*" for a pool), owner_mention, owner_channel."""
    keys = usage.per_key.select("api_key_id", "api_key_name")
    table = owners_of(owners, keys).filter(pl.col("owner").is_not_null())
    mine = table.select(
        pl.lit(range_key).alias("_range"),
        pl.lit("").alias("budget"),
        pl.col("api_key_id").alias("_subject"),
        pl.col("mention").alias("owner_mention"),
        pl.col("channel").alias("owner_channel"),
    )
    if selected is None:
        return mine
    parts = [mine]
    for name in (n for n, key in ranges.items() if key == range_key and n in selected.columns):
        chosen = selected.filter(pl.col(name)).get_column("api_key_id")
        if chosen.len() == 1:  # a pool of exactly one key is that key's
            one = mine.filter(pl.col("_subject") == chosen[0])
            parts.append(
                one.with_columns(pl.lit(name).alias("budget"), pl.lit("*").alias("_subject"))
            )
    return pl.concat(parts, how="vertical")


def _joined(frame: pl.DataFrame, by_budget: pl.DataFrame, owned: pl.DataFrame) -> pl.DataFrame:
    """Alerts (ALERT_SCHEMA) with the owner of their subject in their range."""
    keyed = (
        frame.with_row_index("_order")
        .join(by_budget, on="budget", how="left")
        .with_columns(
            pl.col("api_key_id").fill_null("*").alias("_subject"),
            pl.when(pl.col("api_key_id").is_null())
            .then(pl.col("budget"))
            .otherwise(pl.lit(""))
            .alias("_pool"),
        )
    )
    found = keyed.drop(_OWNER).join(
        owned.rename({"budget": "_pool"}),
        on=["_range", "_pool", "_subject"],
        how="left",
    )
    return (
        found.sort("_order")
        .with_columns(pl.col("owner_mention").fill_null([]))
        .select(pl.col(name).cast(dtype) for name, dtype in ALERT_SCHEMA.items())
    )


def routes(notice: object, default: str | None) -> tuple[str | None, ...]:
    """The channels `notice` is queued to: its own (a budget alert's budget may name one) or
    `default`, then its owner's when that is another (None: the default, or a webhook's)."""
    own: str | None = None
    owner: str | None = None
    if isinstance(notice, Alert):
        own, owner = notice.channel, notice.owner_channel
    elif isinstance(notice, Anomaly | KeyEvent):
        owner = notice.channel  # the detectors' `channel` is the owner's
    elif isinstance(notice, Report):
        own = notice.channel  # a scheduled report's own channel (it is nobody's key)
    first = own or default
    return (first,) if owner is None or owner == first else (first, owner)
