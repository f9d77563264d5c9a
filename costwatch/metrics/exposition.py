"""The snapshot part of the exposition: what the last good cycle knew, as text-format bytes.

The **snapshot part** of `/metrics`, rendered to bytes once per successful cycle (by
`Metrics.publish`) with polars string expressions (no Python loop per key), so a scrape costs
the same at 10 keys and at 50,000 series. All gauges, period to date:

- `costwatch_key_spend_usd`, `costwatch_key_requests`, `costwatch_key_tokens{kind}` with
  `api_key_id`, `api_key_name`, `workspace`; the `costwatch_key_model_*` variants add `model`.
  `kind` is prompt, completion, cached_prompt, cache_creation or no_cache, present only where
  the export reports that count (no tokens reads as no series, never as 0).
- `costwatch_budget_limit`, `costwatch_budget_used_ratio`, `costwatch_budget_forecast_ratio`
  (absent while there is no forecast, at a period's first instant), labelled `budget`,
  `subject`, `api_key_id`, `metric` (cost_usd, requests, tokens), `model` and `workspace`.
  For a per-key
  budget `subject` is the key's name and `api_key_id` its id (two keys of the same name never
  collide); for a shared budget `subject` is `(shared)` and `api_key_id` is empty. `model` is
  `all` for the budget's own limits, else the model name or glob of a per-model limit (a glob
  literally named "all" would be ambiguous; don't configure one).
- `workspace` is "default" for a file with `langdock:`; with `workspaces:` it is the key's
  workspace and `api_key_id` the id within it (one id in two workspaces: two series), and ""
  for a shared pool (it may span workspaces) and the folded "other" key.
- `costwatch_budgets_unevaluated{budget,reason}`: how many of a budget's limits the export
  could not evaluate (a `tokens` limit on an export without token counts); no series while
  every limit is evaluated.

Label values come from the export and are escaped as the text format asks (backslash, double
quote, line feed), so no key or model name can add a label or a series.

Cardinality: `max_series` bounds every family of this part together (per key, per key and
model, per budget), as `cap.py` says: the largest spenders are kept, the rest folded into
"other" series (per key `api_key_id="other"`, per key and model `model="other"`, per budget
subject "(other)" with the highest ratios), so each family still sums to the workspace's;
`costwatch_series_truncated` counts the series folded or dropped. The shared pools' budget
series and the unevaluated family are set by the configuration and always served.

Pure: frames in, bytes out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from costwatch.budgets import FINDING_SCHEMA, Unevaluated
from costwatch.config.models import DEFAULT_WORKSPACE
from costwatch.metrics.cap import OTHER_KEY, OTHER_MODEL, OTHER_NAME, bound
from costwatch.usage import SCHEMA
from costwatch.workspaces import SEPARATOR, WORKSPACE

__all__ = [
    "ALL_MODELS",
    "OTHER_KEY",
    "OTHER_MODEL",
    "OTHER_NAME",
    "SHARED_SUBJECT",
    "Rendered",
    "Snapshot",
    "render_snapshot",
]

ALL_MODELS = "all"  # the model label of a budget's own (not per-model) limits
SHARED_SUBJECT = "(shared)"  # the subject label of a shared budget's pool
TOKEN_KINDS: dict[str, str] = {  # label value -> Usage.frame column
    "prompt": "sum_prompt_tokens",
    "completion": "sum_completion_tokens",
    "cached_prompt": "cached_prompt_tokens",
    "cache_creation": "cache_creation_tokens",
    "no_cache": "no_cache_tokens",
}
_LABELS = "__labels__"


@dataclass(frozen=True)
class Snapshot:
    """What one successful cycle knew."""

    at: datetime
    usage: pl.DataFrame  # Usage.frame of the default period: one row per key x model
    findings: pl.DataFrame  # budgets.evaluate() output (FINDING_SCHEMA)
    unevaluated: Sequence[Unevaluated] = ()  # limits the export could not evaluate


@dataclass(frozen=True)
class Rendered:
    """The snapshot part of the exposition and what the cap did."""

    text: bytes
    truncated: int  # series folded into an "other" series or dropped (`cap`)


_KEY_FAMILIES = (
    ("costwatch_key_spend_usd", "Spend per API key in the current period, in US dollars."),
    ("costwatch_key_requests", "Requests per API key in the current period."),
    ("costwatch_key_tokens", "Tokens per API key in the current period, by kind (BYOK keys)."),
)
_KEY_MODEL_FAMILIES = (
    (
        "costwatch_key_model_spend_usd",
        "Spend per API key and model in the current period, in US dollars.",
    ),
    ("costwatch_key_model_requests", "Requests per API key and model in the current period."),
    (
        "costwatch_key_model_tokens",
        "Tokens per API key and model in the current period, by kind (BYOK keys).",
    ),
)
UNEVALUATED = "costwatch_budgets_unevaluated"
_UNEVALUATED_HELP = (
    "Limits of a budget the last export could not evaluate, by reason "
    "(export_has_no_tokens, keys_report_no_tokens, export_failed): no finding, never read as"
    " within budget."
)
_BUDGET_FAMILIES = (
    ("costwatch_budget_limit", "limit", "A budget's limit, in the unit of its metric."),
    ("costwatch_budget_used_ratio", "ratio", "Used divided by limit (1 is the whole budget)."),
    (
        "costwatch_budget_forecast_ratio",
        "forecast_ratio",
        "Use projected to the period's end (the forecast), divided by the limit.",
    ),
)


def render_snapshot(snapshot: Snapshot | None, max_series: int) -> Rendered:
    """The snapshot part of the exposition (HELP and TYPE of every family, even when empty),
    at most `max_series` series over every family together (`cap.bound`; the shared pools'
    budget series and the unevaluated family are always served)."""
    usage = _usage_rows(snapshot.usage if snapshot is not None else None)
    findings = snapshot.findings if snapshot is not None else None
    unevaluated = _unevaluated_family(snapshot.unevaluated if snapshot is not None else ())
    bounded = bound(
        usage,
        findings if findings is not None else pl.DataFrame(schema=FINDING_SCHEMA),
        max_series,
        list(TOKEN_KINDS.values()),
        fixed=unevaluated.count("\n") - 2,
    )
    qualified = snapshot is not None and WORKSPACE in snapshot.usage.columns
    keys, rows, found = (
        _by_workspace(frame, qualified) for frame in (bounded.keys, bounded.rows, bounded.findings)
    )
    parts = [
        *_usage_families(keys, _KEY_FAMILIES, ("api_key_id", "api_key_name", WORKSPACE)),
        *_usage_families(
            rows, _KEY_MODEL_FAMILIES, ("api_key_id", "api_key_name", "model", WORKSPACE)
        ),
        *_budget_families(found),
        unevaluated,
    ]
    return Rendered("".join(parts).encode("utf-8"), bounded.truncated)


def _by_workspace(frame: pl.DataFrame, qualified: bool) -> pl.DataFrame:
    """`frame` with a `workspace` column: "default" for a file with `langdock:`; else the
    workspace of a "workspace/id" key, its api_key_id the id alone ("" for a shared pool and
    the folded "other")."""
    if not qualified:
        return frame.with_columns(pl.lit(DEFAULT_WORKSPACE).alias(WORKSPACE))
    key = pl.col("api_key_id")
    named = key.str.contains(SEPARATOR, literal=True).fill_null(value=False)
    return frame.with_columns(
        pl.when(named)
        .then(key.str.split_exact(SEPARATOR, 1).struct.field("field_0"))
        .otherwise(pl.lit(""))
        .alias(WORKSPACE),
        pl.when(named)
        .then(key.str.splitn(SEPARATOR, 2).struct.field("field_1"))
        .otherwise(key)
        .alias("api_key_id"),
    )


def _usage_rows(usage: pl.DataFrame | None) -> pl.DataFrame:
    columns = ["api_key_id", "api_key_name", "model", "requests", "total_cost_usd"]
    columns += TOKEN_KINDS.values()
    if usage is None:
        return pl.DataFrame(schema=SCHEMA).select(columns)
    text = pl.col("api_key_id", "api_key_name", "model")
    return usage.select(columns).with_columns(text.cast(pl.String).fill_null(""))


def _usage_families(
    rows: pl.DataFrame, families: tuple[tuple[str, str], ...], labels: tuple[str, ...]
) -> list[str]:
    (spend, spend_help), (requests, requests_help), (tokens, tokens_help) = families
    rows = rows.with_columns(_label_text(labels).alias(_LABELS))
    token_lines = [
        _lines(rows.filter(pl.col(column).is_not_null()), tokens, pl.col(column), f'kind="{kind}"')
        for kind, column in TOKEN_KINDS.items()
    ]
    return [
        _header(spend, spend_help),
        _lines(rows, spend, _number(pl.col("total_cost_usd"))),
        _header(requests, requests_help),
        _lines(rows, requests, pl.col("requests")),
        _header(tokens, tokens_help),
        *token_lines,
    ]


def _budget_families(findings: pl.DataFrame | None) -> list[str]:
    if findings is None or findings.is_empty():
        return [_header(name, text) for name, _column, text in _BUDGET_FAMILIES]
    shared = pl.col("scope") == "shared"
    labelled = findings.with_columns(
        pl.when(shared)
        .then(pl.lit(SHARED_SUBJECT))
        .otherwise(pl.col("api_key_name"))
        .alias("subject"),
        pl.when(shared).then(pl.lit("")).otherwise(pl.col("api_key_id")).alias("api_key_id"),
        pl.col("model").fill_null(ALL_MODELS),
    ).with_columns(
        pl.col("budget", "subject", "api_key_id", "metric").fill_null(""),
    )
    labels = ("budget", "subject", "api_key_id", "metric", "model", WORKSPACE)
    labelled = labelled.with_columns(_label_text(labels).alias(_LABELS))
    parts = []
    for name, column, text in _BUDGET_FAMILIES:
        present = labelled.filter(pl.col(column).is_not_null())
        parts += [_header(name, text), _lines(present, name, _number(pl.col(column)))]
    return parts


def _unevaluated_family(unevaluated: Sequence[Unevaluated]) -> str:
    """Per budget and reason, how many of its limits the export could not evaluate."""
    counts: dict[tuple[str, str], int] = {}
    for item in unevaluated:
        counts[item.budget, item.reason] = counts.get((item.budget, item.reason), 0) + 1
    lines = [
        f'{UNEVALUATED}{{budget="{_escaped(budget)}",reason="{_escaped(reason)}"}} {count}\n'
        for (budget, reason), count in counts.items()
    ]
    return _header(UNEVALUATED, _UNEVALUATED_HELP) + "".join(lines)


def _escaped(value: str) -> str:
    """`escape` for one Python string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _header(name: str, text: str) -> str:
    return f"# HELP {name} {text}\n# TYPE {name} gauge\n"


def _lines(rows: pl.DataFrame, name: str, value: pl.Expr, extra: str = "") -> str:
    """One sample line per row: `name{<labels>[,extra]} value`."""
    if rows.is_empty():
        return ""
    tail = f",{extra}}} " if extra else "} "
    line = pl.concat_str(
        pl.lit(name + "{"), pl.col(_LABELS), pl.lit(tail), value.cast(pl.String), pl.lit("\n")
    )
    text: str = rows.select(line.str.join("")).item()
    return text


def _label_text(labels: tuple[str, ...]) -> pl.Expr:
    """`a="...",b="..."` with each value escaped for the text format."""
    parts: list[pl.Expr] = []
    for position, label in enumerate(labels):
        prefix = "," if position else ""
        parts += [pl.lit(f'{prefix}{label}="'), escape(pl.col(label)), pl.lit('"')]
    return pl.concat_str(parts)


def escape(value: pl.Expr) -> pl.Expr:
    """A label value as the text format writes it: backslash, double quote, line feed escaped."""
    return (
        value.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
    )


def _number(value: pl.Expr) -> pl.Expr:
    """A float as the text format writes it (polars' shortest round-trip form; +Inf, NaN)."""
    as_float = value.cast(pl.Float64)
    return (
        pl.when(as_float.is_nan())
        .then(pl.lit("NaN"))
        .when(as_float == float("inf"))
        .then(pl.lit("+Inf"))
        .when(as_float == float("-inf"))
        .then(pl.lit("-Inf"))
        .otherwise(as_float.cast(pl.String))
    )
