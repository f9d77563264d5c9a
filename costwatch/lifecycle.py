"""The alert lifecycle decided for every finding at once, in columns. Pure (polars).

`alerts`' docstring states the rules (once per threshold and period, escalation, repeat,
re-arming under a changed limit, forecasts, silences); this applies them to the findings
frame and the ledger as a handful of joins and `when` expressions, so a storm of 30,000
crossings costs what 30 do, give or take the rows: no Python object per finding or alert.
`decide` returns frames; `alerts` turns a row into an `Alert` or a `LedgerEntry` only where
one is read.

Columns: the findings are `budgets.FINDING_SCHEMA`; the ledger is `LEDGER_SCHEMA` (one row per
`LedgerEntry`); the alerts come back with the findings' columns plus `ALERT_COLUMNS` (their
order is the findings'); the ledger writes with `LEDGER_SCHEMA`, in finding order, a finding's
actual entry before its forecast entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from costwatch import globs
from costwatch.budgets import TOLERANCE, Rule
from costwatch.config import Silence, Threshold, severity_for

__all__ = ["FORECAST_LEVEL", "LEDGER_SCHEMA", "Decision", "decide", "threshold_at"]

FORECAST_LEVEL = 100.0
_UTC_US = pl.Datetime("us", "UTC")
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "budget": pl.String(),
    "subject": pl.String(),
    "model": pl.String(),
    "metric": pl.String(),
    "kind": pl.String(),
    "period": pl.String(),
    "level": pl.Float64(),
    "limit": pl.Float64(),
    "used": pl.Float64(),
    "sent_at": _UTC_US,
}
# Added to the findings' columns for each alert (the rest of `alerts.Alert` is the finding's).
ALERT_COLUMNS: dict[str, pl.DataType] = {
    "threshold": pl.Float64(),
    "kind": pl.String(),
    "severity": pl.String(),
    "channel": pl.String(),
    "mention": pl.List(pl.String()),
    "repeat": pl.Boolean(),
    "previous_used": pl.Float64(),
    "silenced_by": pl.String(),
    "silenced_until": _UTC_US,
}
_IDENTITY = ["budget", "_subject", "_model", "metric", "period"]
_ORDER = "_order"
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Decision:
    """What `decide` found: alerts to send, alerts a silence holds back, ledger writes."""

    alerts: pl.DataFrame
    silenced: pl.DataFrame
    ledger: pl.DataFrame  # LEDGER_SCHEMA


def threshold_at(level: float, thresholds: Sequence[Threshold]) -> Threshold:
    """The configured threshold at `level`, or the default severity for it."""
    for threshold in thresholds:
        if threshold.at == level:
            return threshold
    return Threshold(at=level, severity=severity_for(level), mention=())


def decide(
    findings: pl.DataFrame,
    rules: Mapping[str, Rule],
    ledger: pl.DataFrame,
    silences: Sequence[Silence],
    now: datetime,
) -> Decision:
    """Apply the lifecycle to every finding against the `ledger` of what already fired.

    Every finding with a ledger entry must be among `findings` (a finding below every
    threshold re-arms its entry only if it is seen); findings with neither a level, a due
    forecast nor an entry change nothing.
    """
    frame = _with_entries(findings, ledger).join(
        _budget_table(rules), on="budget", how="left", maintain_order="left"
    )
    frame = frame.with_columns(_rearmed()).with_columns(_due(now))
    frame = frame.with_columns(_silence(silences, now))
    due = frame.filter(pl.col("kind").is_not_null())
    due = due.join(_severities(due, rules), on=["budget", "threshold", "kind"], how="left").sort(
        _ORDER
    )
    sent = pl.col("silenced_by").is_null()
    columns = [*findings.columns, *ALERT_COLUMNS]
    return Decision(
        alerts=due.filter(sent).select(columns),
        silenced=due.filter(~sent).select(columns),
        ledger=_writes(frame, now),
    )


def _with_entries(findings: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """The findings, numbered, each beside its actual (`a_*`) and forecast (`f_*`) entry."""
    frame = findings.with_columns(
        pl.col("api_key_id").fill_null("*").alias("_subject"),
        pl.col("model").fill_null("").alias("_model"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_ORDER),
    )
    for kind, prefix in (("actual", "a_"), ("forecast", "f_")):
        entries = ledger.filter(pl.col("kind") == kind).select(
            "budget",
            pl.col("subject").alias("_subject"),
            pl.col("model").alias("_model"),
            "metric",
            "period",
            pl.lit(value=True).alias(f"{prefix}entry"),
            *(pl.col(c).alias(f"{prefix}{c}") for c in ("level", "limit", "used", "sent_at")),
        )
        frame = frame.join(entries, on=_IDENTITY, how="left", maintain_order="left")
        frame = frame.with_columns(pl.col(f"{prefix}entry").fill_null(value=False))
    return frame


def _budget_table(rules: Mapping[str, Rule]) -> pl.DataFrame:
    """Per budget: its channel and its repeat interval in microseconds (null: no repeat)."""
    names = list(rules)
    repeat = [_repeat_us(rules[name]) for name in names]
    return pl.DataFrame(
        {
            "budget": names,
            "channel": [rules[name].budget.channel for name in names],
            "_repeat_us": repeat,
        },
        schema={"budget": pl.String(), "channel": pl.String(), "_repeat_us": pl.Int64()},
    )


def _repeat_us(rule: Rule) -> int | None:
    repeat = rule.budget.repeat
    if repeat is None:
        return None
    every = repeat if isinstance(repeat, timedelta) else timedelta(seconds=repeat)
    return every // _US


def _reaches(used: pl.Expr, limit: pl.Expr, at: float) -> pl.Expr:
    return used * 100 >= limit * (at * (1 - TOLERANCE))  # `budgets.reaches`, in columns


def _rearmed() -> list[pl.Expr]:
    """Under a changed limit the fired actual level becomes min(fired, level under the new
    limit), and a fired forecast stays fired only while it is still due."""
    level, limit = pl.col("level"), pl.col("limit")
    a_changed = pl.col("a_entry") & (pl.col("a_limit") != limit)
    f_changed = pl.col("f_entry") & (pl.col("f_limit") != limit)
    return [
        a_changed.fill_null(value=False).alias("a_changed"),
        f_changed.fill_null(value=False).alias("f_changed"),
        pl.when(a_changed)
        .then(pl.min_horizontal(pl.col("a_level"), level.fill_null(0.0)))
        .otherwise(pl.col("a_level"))
        .alias("a_level"),
        pl.when(f_changed & ~pl.col("forecast_due"))
        .then(pl.lit(0.0))
        .otherwise(pl.col("f_level"))
        .alias("f_level"),
    ]


def _due(now: datetime) -> list[pl.Expr]:
    """The alert due per finding: `kind` (null: none), `threshold`, `repeat`, and the use at
    the subject's last alert sent, actual or forecast, whichever went out last."""
    level, used, limit = pl.col("level"), pl.col("used"), pl.col("limit")
    fired = pl.when(pl.col("a_entry")).then(pl.col("a_level")).otherwise(0.0)
    fresh = level.is_not_null() & (level > fired)
    a_sent = pl.col("a_entry") & pl.col("a_sent_at").is_not_null()
    f_sent = pl.col("f_entry") & pl.col("f_sent_at").is_not_null()
    since = pl.lit(now).cast(_UTC_US).dt.epoch("us") - pl.col("a_sent_at").dt.epoch("us")
    repeating = (
        level.is_not_null()
        & ~fresh
        & a_sent
        & pl.col("_repeat_us").is_not_null()
        & _reaches(used, limit, 100)
        & (since >= pl.col("_repeat_us"))
    ).fill_null(value=False)
    forecast = (
        pl.col("forecast_due")
        & ~(pl.col("a_entry") & (pl.col("a_level") >= 100)).fill_null(value=False)
        & ~(pl.col("f_entry") & (pl.col("f_level") >= FORECAST_LEVEL)).fill_null(value=False)
    ).fill_null(value=False)
    actual = fresh.fill_null(value=False) | repeating
    use_actual = a_sent & (~f_sent | (pl.col("a_sent_at") >= pl.col("f_sent_at"))).fill_null(
        value=True
    )
    return [
        pl.when(actual)
        .then(pl.lit("actual"))
        .when(forecast)
        .then(pl.lit("forecast"))
        .otherwise(None)
        .alias("kind"),
        pl.when(actual).then(level).otherwise(FORECAST_LEVEL).alias("threshold"),
        repeating.alias("repeat"),
        pl.when(use_actual)
        .then(pl.col("a_used"))
        .when(f_sent)
        .then(pl.col("f_used"))
        .otherwise(None)
        .alias("previous_used"),
    ]


def _silence(silences: Sequence[Silence], now: datetime) -> list[pl.Expr]:
    """The first active silence (in configuration order) that holds each finding's alert."""
    reason: pl.Expr = pl.lit(None, pl.String())
    until: pl.Expr = pl.lit(None, _UTC_US)
    active = [silence for silence in silences if silence.until > now]
    for silence in reversed(active):  # the first that matches wins: it is applied last
        holds = _holds(silence)
        reason = pl.when(holds).then(pl.lit(silence.reason)).otherwise(reason)
        until = pl.when(holds).then(pl.lit(silence.until).cast(_UTC_US)).otherwise(until)
    return [reason.alias("silenced_by"), until.alias("silenced_until")]


def _holds(silence: Silence) -> pl.Expr:
    """Whether `silence` selects a finding: its budget by glob, its key as a budget's `keys`
    select one (`globs.key_matches`); a shared pool, which is no one key, only by "*"."""
    holds = pl.lit(value=True)
    if silence.budget is not None:
        budget = pl.col("budget")
        holds = holds & (
            (budget == silence.budget) | budget.str.contains(globs.to_regex(silence.budget))
        )
    if silence.keys is not None:
        key = globs.any_matches(
            [silence.keys], names=pl.col("api_key_name"), ids=pl.col("api_key_id")
        ).fill_null(value=False)
        pool = pl.col("api_key_id").is_null()
        holds = holds & pl.when(pool).then(pl.lit(silence.keys == "*")).otherwise(key)
    return holds


def _severities(due: pl.DataFrame, rules: Mapping[str, Rule]) -> pl.DataFrame:
    """Severity and mentions per (budget, threshold, kind) due: a few, worked out in Python."""
    rows = []
    for budget, level, kind in due.select("budget", "threshold", "kind").unique().iter_rows():
        rule = rules[budget]
        threshold = threshold_at(level, rule.thresholds)
        severity = threshold.severity if kind == "actual" else severity_for(80)
        mention = list(dict.fromkeys((*threshold.mention, *rule.budget.mention)))
        rows.append((budget, level, kind, severity, mention))
    return pl.DataFrame(
        rows,
        schema={
            "budget": pl.String(),
            "threshold": pl.Float64(),
            "kind": pl.String(),
            "severity": pl.String(),
            "mention": pl.List(pl.String()),
        },
        orient="row",
    )


def _writes(frame: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """The ledger writes: a sent alert's entries (an actual alert also settles a due
    forecast), else an entry a limit change re-armed."""
    sent = pl.col("kind").is_not_null() & pl.col("silenced_by").is_null()
    actual_sent = sent & (pl.col("kind") == "actual")
    forecast_sent = sent & ((pl.col("kind") == "forecast") | pl.col("forecast_due"))
    fired = pl.when(pl.col("a_entry")).then(pl.col("a_level")).otherwise(0.0)
    at = pl.lit(now).cast(_UTC_US)
    slots = []
    for slot, (kind, recorded, changed, level) in enumerate(
        (
            ("actual", actual_sent, "a_changed", pl.max_horizontal(pl.col("threshold"), fired)),
            ("forecast", forecast_sent, "f_changed", pl.lit(FORECAST_LEVEL)),
        )
    ):
        prefix = kind[0] + "_"
        slots.append(
            frame.filter(recorded | pl.col(changed)).select(
                _ORDER,
                pl.lit(slot).alias("_slot"),
                "budget",
                pl.col("_subject").alias("subject"),
                pl.col("_model").alias("model"),
                "metric",
                pl.lit(kind).alias("kind"),
                "period",
                pl.when(recorded).then(level).otherwise(pl.col(f"{prefix}level")).alias("level"),
                pl.col("limit"),
                pl.when(recorded).then("used").otherwise(pl.col(f"{prefix}used")).alias("used"),
                pl.when(recorded).then(at).otherwise(pl.col(f"{prefix}sent_at")).alias("sent_at"),
            )
        )
    writes = pl.concat(slots, how="vertical").sort(_ORDER, "_slot")
    return writes.select(pl.col(c).cast(t) for c, t in LEDGER_SCHEMA.items())
