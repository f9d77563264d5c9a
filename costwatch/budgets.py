"""Budgets: which keys a budget selects, what they used against its limits, where that is heading.

Pure and vectorised: usage arrives as polars frames (one per export range), findings leave as
one frame with a row per budget x subject (key or shared pool) x model-or-all x metric, so
20,000 keys and 200 budgets cost a handful of polars queries, not a Python loop per key.

Rules (the README's "Budgets" section says the same for users):
- `keys` and `exclude` are globs over `api_key_name` or exact `api_key_id`s, and a
  `fallback: true` budget takes only keys that no other per-key budget selects: which keys a
  budget selects is `costwatch.selection`'s, for the evaluation and `validate` alike.
- `scope: key` checks each selected key on its own; `scope: shared` the selected keys' sum.
- A per-model limit (`models: {glob: limits}`) checks the spend on the models matching the glob,
  summed, within each subject ("gpt-4*" is the GPT-4 family together).
- `tokens` is prompt plus completion tokens, and is checked only for subjects whose rows carry
  tokens (a key without token columns gets no tokens finding, never a reassuring 0);
  `unevaluated` names the limits that got no finding that way, and why.
- Level: the highest threshold (percent) that `used` has reached: `used * 100 >= at * limit`,
  where "reached" forgives one part in 10**12 (`TOLERANCE`). Spend is a float sum of decimal CSV
  values, so $1.16 of $1.45 computes as 79.99999999999999 %; the tolerance makes it 80 %, while
  a cent below a threshold stays below it for any limit under $10**9.
- Forecast: where use is heading by the period's end, and whether that is worth an alert, is
  `costwatch.forecast`'s; each finding names the method it used (`forecast_method`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import polars as pl

from costwatch import forecast, periods
from costwatch.config import Config, ForecastConfig, Limits, Threshold
from costwatch.config.budget import METRICS, Budget, Metric
from costwatch.periods import Period
from costwatch.selection import KeyTables, mask, row_tokens

__all__ = [
    "FINDING_SCHEMA",
    "METRICS",
    "Evaluation",
    "Finding",
    "FindingKey",
    "Metric",
    "Rule",
    "Unevaluated",
    "as_findings",
    "evaluate",
    "export_key",
    "export_ranges",
    "noteworthy",
    "reaches",
    "rules",
    "unevaluated",
]

TOLERANCE = 1e-12  # relative: how far below a threshold a float sum may be and still reach it


FINDING_SCHEMA: dict[str, pl.DataType] = {
    "budget": pl.String(),
    "scope": pl.String(),
    "api_key_id": pl.String(),
    "api_key_name": pl.String(),
    "model": pl.String(),
    "metric": pl.String(),
    "used": pl.Float64(),
    "limit": pl.Float64(),
    "ratio": pl.Float64(),
    "level": pl.Float64(),
    "projected": pl.Float64(),
    "forecast_ratio": pl.Float64(),
    "forecast_due": pl.Boolean(),
    "overrun_at": pl.Datetime("us", "UTC"),
    "forecast_method": pl.String(),
    "period": pl.String(),
}


@dataclass(frozen=True)
class Rule:
    """A configured budget with its defaults applied and its current period."""

    budget: Budget
    period: Period
    thresholds: tuple[Threshold, ...]  # ascending by `at` (the config sorts them)
    forecast: ForecastConfig

    @property
    def name(self) -> str:
        return self.budget.name


# A finding's identity within its period: budget, subject (key id or "*"), model ("" for all
# models), metric, period key.
FindingKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Finding:
    """One budget x subject x model-or-all x metric, as evaluated at one instant."""

    budget: str
    scope: Literal["key", "shared"]
    api_key_id: str | None  # None for a shared pool
    api_key_name: str | None
    model: str | None  # None: all models; else the configured model name or glob
    metric: Metric
    used: float
    limit: float
    ratio: float
    level: float | None  # highest threshold reached, percent
    projected: float | None  # projected use at the period's end (`costwatch.forecast`)
    forecast_ratio: float | None
    forecast_due: bool
    overrun_at: datetime | None  # when the projection reaches the limit
    period: str  # Period.key()
    forecast_method: str | None = None  # how `projected` was made; None: no projection

    @property
    def subject(self) -> str:
        """The key's id, or "*" for a shared pool."""
        return self.api_key_id if self.api_key_id is not None else "*"

    @property
    def key(self) -> FindingKey:
        return (self.budget, self.subject, self.model or "", self.metric, self.period)


def reaches(used: float, limit: float, at: float) -> bool:
    """Whether `used` has reached `at` percent of `limit` (the rule `evaluate` applies)."""
    return used * 100 >= limit * (at * (1 - TOLERANCE))  # the same operations as `_reaches`


def _reaches(used: pl.Expr, limit: pl.Expr, at: float) -> pl.Expr:
    return used * 100 >= limit * (at * (1 - TOLERANCE))


def rules(config: Config, now: datetime) -> list[Rule]:
    """Every budget of the configuration, resolved against the defaults, at `now`."""
    defaults = config.defaults
    resolved = []
    for budget in config.budgets:
        zone = budget.effective_zone(config.schedule)
        resolved.append(
            Rule(
                budget=budget,
                period=periods.current(budget.effective_period(defaults), zone, now),
                thresholds=budget.effective_thresholds(defaults),
                forecast=budget.effective_forecast(defaults),
            )
        )
    return resolved


def export_key(period: Period) -> str:
    """Periods that start at the same instant in the same zone share one to-date export."""
    return f"{period.start.astimezone(UTC).isoformat()}@{period.zone.key}"


def export_ranges(resolved: Iterable[Rule]) -> dict[str, Period]:
    """The distinct export ranges a cycle needs: one per distinct period start and zone.

    An export aggregates its whole range, so a week cannot be cut out of a month's export;
    only periods that begin together (a month and its quarter in the quarter's first month,
    a day and its month on the 1st) share one. The longest period of each group is kept.
    """
    ranges: dict[str, Period] = {}
    for rule in resolved:
        key = export_key(rule.period)
        if key not in ranges or rule.period.length > ranges[key].length:
            ranges[key] = rule.period
    return ranges


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` found: `findings` (FINDING_SCHEMA, worst first), and per export range
    which keys each budget selects (`selected`: `api_key_id` and a boolean column per budget of
    that range, named after the budget), for the alert context and `unevaluated`."""

    findings: pl.DataFrame
    selected: dict[str, pl.DataFrame]


def evaluate(
    resolved: Sequence[Rule],
    usage_by_range: Mapping[str, pl.DataFrame],
    now: datetime,
    daily_by_range: Mapping[str, forecast.Daily] | None = None,
) -> Evaluation:
    """All findings, one frame with FINDING_SCHEMA, worst (highest ratio) first, and the keys
    each budget selects.

    Each export range is aggregated once per key (and once per key for each model glob in
    use); budgets then select among those per-key rows, so 200 budgets over a 1,000,000-row
    export cost a few small queries per budget over the keys, not 200 scans of the export.
    `daily_by_range` holds the stored closed days a range's forecasts are made from (a range
    without them, or None: linear since the period's start; `costwatch.forecast`).
    """
    tables: dict[str, KeyTables] = {}
    sums: dict[tuple[str, tuple[date, ...]], forecast.WindowSums] = {}
    # Subjects of rules that are judged alike (thresholds, period, forecast) are judged at once.
    alike: dict[str, tuple[Rule, tuple[date, ...], list[pl.DataFrame]]] = {}
    budgets = [other.budget for other in resolved]
    for index, rule in enumerate(resolved):
        key = export_key(rule.period)
        if key not in tables:
            patterns = [
                pattern
                for other in resolved
                if export_key(other.period) == key
                for pattern in other.budget.models
            ]
            tables[key] = KeyTables(usage_by_range[key], budgets, patterns)
        history = (daily_by_range or {}).get(key)
        days = forecast.window(history, rule, now)
        parts = alike.setdefault(_judged_alike(rule), (rule, days, []))[2]
        own = _subject_parts(rule, tables[key], mask(index))
        if own:
            # One query per rule (all its models and metrics): one collect, not one per step;
            # a single query over every rule would hold all their copies at once.
            part = pl.concat(own, how="vertical").collect()
            if history is not None and days:
                if (key, days) not in sums:
                    sums[key, days] = forecast.WindowSums(history, days, budgets)
                part = sums[key, days].attach(part, index, rule.budget)
            parts.append(part)
    frames = [
        _judge(rule, pl.concat(parts, how="vertical"), now, days)
        for rule, days, parts in alike.values()
        if parts
    ]
    frames = [frame for frame in frames if frame.height]
    selected = {
        key: table.masks.select(
            "api_key_id",
            *(
                pl.col(mask(i)).alias(rule.name)
                for i, rule in enumerate(resolved)
                if export_key(rule.period) == key
            ),
        )
        for key, table in tables.items()
    }
    if not frames:
        return Evaluation(pl.DataFrame(schema=FINDING_SCHEMA), selected)
    findings = pl.concat(frames, how="vertical").sort(
        ["ratio", "budget", "api_key_name"], descending=[True, False, False], nulls_last=True
    )
    return Evaluation(findings, selected)


# Why a configured limit got no finding although the export has rows (a metric label value).
UNEVALUATED_REASONS: dict[str, str] = {
    "export_has_no_tokens": "the export reports no tokens (only BYOK workspaces do)",
    "keys_report_no_tokens": "none of the keys it selects reports tokens in the export",
    "export_failed": "the export of a workspace it reads failed in this cycle",
}


@dataclass(frozen=True)
class Unevaluated:
    """A configured limit the export cannot be compared with: reported, never read as "within
    budget" (a tokens-only budget on an export without token columns used to give "0
    evaluated, 0 findings" and exit 0)."""

    budget: str
    metric: Metric
    model: str | None  # None: the budget's own limit; else the per-model glob
    reason: str  # a key of UNEVALUATED_REASONS

    def describe(self) -> str:
        on = f" on {self.model}" if self.model else ""
        return (
            f"budget {self.budget!r}: its {self.metric} limit{on} is not evaluated: "
            f"{UNEVALUATED_REASONS[self.reason]}"
        )


def unevaluated(
    resolved: Sequence[Rule],
    usage_by_range: Mapping[str, pl.DataFrame],
    evaluation: Evaluation | None = None,
) -> list[Unevaluated]:
    """The limits of `resolved` that the usage cannot evaluate, in configuration order.

    Tokens are the one metric an export may lack: a range with rows but no token counts
    cannot evaluate any `tokens` limit. With the `evaluation` of the same usage, a budget's
    own tokens limit is also reported when it selects
    keys and none of them reports tokens. A range without rows (an empty period) evaluates
    nothing and is no reason: zero usage is zero tokens.
    """
    reports_tokens: dict[str, bool] = {}
    out: list[Unevaluated] = []
    for rule in resolved:
        key = export_key(rule.period)
        frame = usage_by_range[key]
        if not frame.height:
            continue
        if key not in reports_tokens:
            reports_tokens[key] = bool(frame.select(row_tokens(frame).is_not_null().any()).item())
        limits = [(None, rule.budget.limits), *rule.budget.models.items()]
        for model, limit in limits:
            if limit.tokens is None:
                continue
            if not reports_tokens[key]:
                out.append(Unevaluated(rule.name, "tokens", model, "export_has_no_tokens"))
            elif model is None and _selects_keys_without_tokens(rule, evaluation, key):
                out.append(Unevaluated(rule.name, "tokens", None, "keys_report_no_tokens"))
    return out


def _selects_keys_without_tokens(rule: Rule, evaluation: Evaluation | None, key: str) -> bool:
    if evaluation is None or key not in evaluation.selected:
        return False
    findings, table = evaluation.findings, evaluation.selected[key]
    if rule.name not in table.columns or not table.get_column(rule.name).any():
        return False
    own = (pl.col("budget") == rule.name) & (pl.col("metric") == "tokens")
    return findings.filter(own & pl.col("model").is_null()).is_empty()


def noteworthy(findings: pl.DataFrame, known: Collection[FindingKey] = ()) -> list[Finding]:
    """The findings `alerts.plan` must see, as objects.

    Those that reached a threshold or are forecast to overrun, and every finding whose
    identity is `known` (`alerts.known_findings(ledger)`: what already fired): after a limit
    is raised a subject may be below every threshold, and `plan` must see it in that cycle to
    re-arm its thresholds (seen only later, at a higher level, the level in between would be
    taken as already announced).
    """
    due = pl.col("level").is_not_null() | pl.col("forecast_due")
    if known:
        names, subject, model, metric, period = (
            list(column) for column in zip(*known, strict=True)
        )
        entries = pl.DataFrame(
            {
                "budget": names,
                "_subject": subject,
                "_model": model,
                "metric": metric,
                "period": period,
                "_known": [True] * len(names),
            },
            schema_overrides={"_known": pl.Boolean()},
        )
        keyed = findings.with_columns(
            pl.col("api_key_id").fill_null("*").alias("_subject"),
            pl.col("model").fill_null("").alias("_model"),
        ).join(
            entries,
            on=["budget", "_subject", "_model", "metric", "period"],
            how="left",
        )
        findings = keyed.filter(due | pl.col("_known").fill_null(value=False)).select(
            findings.columns
        )
    else:
        findings = findings.filter(due)
    return as_findings(findings)


def as_findings(findings: pl.DataFrame) -> list[Finding]:
    return [Finding(**row) for row in findings.iter_rows(named=True)]


def _judged_alike(rule: Rule) -> str:
    """Equal for rules whose subjects `_judge` treats alike."""
    return repr((tuple(t.at for t in rule.thresholds), rule.period, rule.forecast))


def _subject_parts(rule: Rule, tables: KeyTables, mask: str) -> list[pl.LazyFrame]:
    """The rule's subjects (`_subjects`), for all models and for each model glob."""
    selected = pl.col(mask)
    parts = [_subjects(rule, tables.all_models.lazy().filter(selected), None, rule.budget.limits)]
    for pattern, limits in rule.budget.models.items():
        on_models = tables.for_models(pattern).lazy().filter(selected)
        parts.append(_subjects(rule, on_models, pattern, limits))
    return [part for part in parts if part is not None]


def _subjects(
    rule: Rule, per_key: pl.LazyFrame, model: str | None, limits: Limits
) -> pl.LazyFrame | None:
    """Used vs limit per subject and metric, long format: one row per subject x metric.

    `per_key` holds the budget's selected keys, already summed per key. None: no limits.
    """
    if rule.budget.scope == "shared":
        totals = per_key.select(
            pl.lit(None, pl.String()).alias("api_key_id"),
            pl.lit(None, pl.String()).alias("api_key_name"),
            *(pl.col(m).sum() for m in (*METRICS, "_token_rows")),
        )
    else:
        totals = per_key
    rows = []
    for metric in METRICS:
        limit = getattr(limits, metric)
        if limit is None:
            continue
        subjects = totals.filter(pl.col("_token_rows") > 0) if metric == "tokens" else totals
        rows.append(
            subjects.select(
                pl.lit(rule.name).alias("budget"),
                pl.lit(rule.budget.scope).alias("scope"),
                "api_key_id",
                "api_key_name",
                pl.lit(model, pl.String()).alias("model"),
                pl.lit(metric).alias("metric"),
                pl.col(metric).cast(pl.Float64).fill_null(0.0).alias("used"),
                pl.lit(float(limit)).alias("limit"),
            )
        )
    if not rows:
        return None
    return pl.concat(rows, how="vertical")


def _judge(
    rule: Rule, subjects: pl.DataFrame, now: datetime, days: tuple[date, ...]
) -> pl.DataFrame:
    """Ratio, level and forecast for each row of `subjects` (`days`: `forecast.window`)."""
    used, limit = pl.col("used"), pl.col("limit")
    level: pl.Expr = pl.lit(None, pl.Float64())
    for threshold in rule.thresholds:  # ascending: the last reached wins
        level = pl.when(_reaches(used, limit, threshold.at)).then(threshold.at).otherwise(level)
    judged = forecast.judge(
        subjects, rule.period, rule.forecast, now, reached=_reaches(used, limit, 100), days=days
    )
    return judged.with_columns(
        (used / limit).alias("ratio"),
        level.alias("level"),
        (pl.col("projected") / limit).alias("forecast_ratio"),
        pl.lit(rule.period.key()).alias("period"),
    ).select(list(FINDING_SCHEMA))
