"""The table `costwatch check` prints for people. Pure.

The `TOP_KEYS` biggest spenders, the rest in one line, and the totals of all keys (`--all`
lists every key); findings, alerts, silences and waiting rows are capped at `MAX_FINDING_ROWS`
lines each the same way. Every alert line names its budget. Names from the export are data:
control characters are blanked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl

from costwatch import fmt
from costwatch.alerts import Alert
from costwatch.budgets import Unevaluated
from costwatch.cli.output import (
    ID_WIDTH,
    MAX_FINDING_ROWS,
    MODELS_WIDTH,
    NAME_WIDTH,
    TOP_KEYS,
    TOP_MODELS,
    UsageReport,
    alert_summary,
    delivery_line,
    iso,
    metric_word,
    printable,
)
from costwatch.periods import Period


def period_line(period: Period, now: datetime) -> str:
    """Month to date in Europe/Berlin: 2026-11-01 00:00 to 2026-11-25 10:30 (24.4 of 30 days)."""
    local_now = min(now, period.end).astimezone(period.zone)
    elapsed_days = period.elapsed(now).total_seconds() / 86_400
    total_days = period.length.total_seconds() / 86_400
    return (
        f"{period.name.capitalize()} to date in {period.zone.key}: "
        f"{fmt.stamp(period.start)} to {fmt.stamp(local_now)} "
        f"({elapsed_days:.1f} of {total_days:.0f} days)"
    )


def render_table(report: UsageReport) -> str:
    lines = [period_line(report.period, report.now), f"Source: {report.source}", *report.notes]
    lines += ["", *_keys_table(report)]
    if report.findings is not None:
        lines += [
            "",
            *_findings_table(report.findings, report.all_keys),
            *_unevaluated_lines(report.unevaluated),
        ]
        lines += ["", *_alerts_section(report)]
    if report.delivery is not None:
        lines += ["", delivery_line(report.delivery)]
    return "\n".join(lines) + "\n"


def _keys_table(report: UsageReport) -> list[str]:
    everything = report.per_key
    if not everything.height:
        return ["No usage in this period."]
    per_key = everything if report.all_keys else everything.head(TOP_KEYS)
    # Column lists, not a dict per row: 20,000 keys are formatted in a plain loop.
    ids = per_key.get_column("api_key_id").to_list()
    names = [printable(name or "") for name in per_key.get_column("api_key_name").to_list()]
    costs = per_key.get_column("total_cost_usd").to_list()
    requests = per_key.get_column("requests").to_list()
    top = report.top_models
    tops = _top_text(top if report.all_keys else top.filter(pl.col("api_key_id").is_in(ids)))
    name_w = max(len("KEY"), min(NAME_WIDTH, max(len(name) for name in names)))
    id_w = max(len("ID"), min(ID_WIDTH, max(len(key_id) for key_id in ids)))
    total_cost = float(everything["total_cost_usd"].sum())
    total_requests = int(everything["requests"].sum())
    widths = (
        len(str(len(ids))),
        name_w,
        id_w,
        max(len("SPEND"), len(fmt.money(total_cost))),
        max(len("REQUESTS"), len(fmt.count(total_requests))),
    )
    lines = [_line(widths, "#", "KEY", "ID", "SPEND", "REQUESTS", "TOP MODELS")]
    cut, money, count = fmt.cut, fmt.money, fmt.count
    for rank, (key_id, name, cost, used) in enumerate(
        zip(ids, names, costs, requests, strict=True), start=1
    ):
        lines.append(
            _line(
                widths,
                str(rank),
                cut(name, name_w),
                cut(key_id, id_w),
                money(cost),
                count(used),
                cut(tops.get(key_id, ""), MODELS_WIDTH),
            )
        )
    rest = everything.slice(per_key.height)
    if rest.height:
        more = f"... {rest.height:,} more key{'s' if rest.height != 1 else ''}"
        rest_cost, rest_requests = float(rest["total_cost_usd"].sum()), int(rest["requests"].sum())
        spend, used = fmt.money(rest_cost), fmt.count(rest_requests)
        lines.append(_line(widths, "", more, "", spend, used, "(--all lists every key)"))
    listed = everything.height
    keys = f"TOTAL ({listed:,} key{'s' if listed != 1 else ''})"
    lines.append(_line(widths, "", keys, "", fmt.money(total_cost), fmt.count(total_requests), ""))
    return lines


def _top_text(top: pl.DataFrame) -> dict[str, str]:
    """Per key: "gpt-4o $1,032.37, claude-3 $12.00" (its first TOP_MODELS models), printable."""
    listed: dict[str, list[str]] = {}
    for key_id, model, cost in zip(
        top.get_column("api_key_id").to_list(),
        top.get_column("model").to_list(),
        top.get_column("total_cost_usd").to_list(),
        strict=True,
    ):
        models = listed.setdefault(key_id, [])
        if len(models) < TOP_MODELS:
            models.append(f"{model} {fmt.money(cost)}")
    return {key_id: printable(", ".join(models)) for key_id, models in listed.items()}


def _findings_table(findings: pl.DataFrame, everything: bool = False) -> list[str]:
    notable = findings.filter(pl.col("level").is_not_null() | pl.col("forecast_due"))
    head = (
        f"Budgets: {findings['budget'].n_unique() if findings.height else 0} evaluated, "
        f"{findings.height:,} findings, {notable.height:,} at a threshold or forecast to overrun"
    )
    if not notable.height:
        if not findings.height:
            return [head]
        top = findings.row(0, named=True)
        return [
            head,
            f"Highest: {_subject(top)} at {fmt.percent(top['ratio'])} of budget "
            f"{top['budget']!r} ({metric_word(top['metric'])}).",
        ]
    shown = notable if everything else notable.head(MAX_FINDING_ROWS)
    table = [("BUDGET", "SUBJECT", "MODEL", "METRIC", "USED", "LIMIT", "USE", "LEVEL", "FORECAST")]
    for row in shown.iter_rows(named=True):
        table.append(
            (
                fmt.cut(printable(row["budget"]), 24),
                fmt.cut(_subject(row), NAME_WIDTH),
                fmt.cut(printable(row["model"] or "all"), 20),
                metric_word(row["metric"]),
                fmt.amount(row["metric"], row["used"]),
                fmt.amount(row["metric"], row["limit"]),
                fmt.percent(row["ratio"]),
                f"{row['level']:g}%" if row["level"] is not None else "-",
                _forecast(row),
            )
        )
    lines = [head, *_grid(table)]
    if notable.height > shown.height:
        more = notable.height - shown.height
        lines.append(f"... and {more:,} more (--all or --format json lists all)")
    return [*lines, *_methods(notable)]


def _methods(findings: pl.DataFrame) -> list[str]:
    """How the listed forecasts were made, once: "Forecast: trailing 14-day rate", or each
    method with its count when they differ."""
    if "forecast_method" not in findings.columns:
        return []
    counts = findings.get_column("forecast_method").drop_nulls().value_counts(sort=True)
    if not counts.height:
        return []
    if counts.height == 1:
        return [f"Forecast: {printable(counts.item(0, 0))}"]
    listed = ", ".join(f"{printable(method)} ({n:,})" for method, n in counts.iter_rows())
    return [f"Forecasts: {listed}"]


def _alerts_section(report: UsageReport) -> list[str]:
    verb = "that would be sent (dry run)" if report.dry_run else "planned in this run"
    channel = report.default_channel or "(default channel)"
    lines = [f"Alerts {verb}: {len(report.alerts)}"]
    shown = _shown(report.alerts, report)
    lines += _capped(
        [f"  -> {a.channel or channel}  {alert_summary(a)}" for a in shown],
        report,
        len(report.alerts),
    )
    if report.silenced:
        lines.append(f"Silenced: {len(report.silenced)}")
        quiet = _shown(report.silenced, report)
        lines += _capped(
            [f"  {alert_summary(a)}  ({_silence(a)})" for a in quiet], report, len(report.silenced)
        )
    if report.pending:
        lines.append(f"Waiting in the outbox for delivery: {len(report.pending)}")
        waiting = []
        for p in report.pending:
            error = f", last error: {p.last_error}" if p.last_error else ""
            waiting.append(
                f"  #{p.id} -> {p.channel or channel}  {p.summary}"
                f" ({p.attempts} attempt{'s' if p.attempts != 1 else ''}{error})"
            )
        lines += _capped(waiting, report)
    return lines


def _shown(alerts: Sequence[Alert], report: UsageReport) -> Sequence[Alert]:
    """The alerts a section lists: only those are formatted (a storm is 30,000)."""
    return alerts if report.all_keys else alerts[:MAX_FINDING_ROWS]


def _capped(lines: list[str], report: UsageReport, total: int | None = None) -> list[str]:
    """At most MAX_FINDING_ROWS lines (all with --all), and how many more there are of
    `total` (the lines', when not given)."""
    total = len(lines) if total is None else total
    if report.all_keys or total <= MAX_FINDING_ROWS:
        return lines
    more = total - MAX_FINDING_ROWS
    return [
        *lines[:MAX_FINDING_ROWS],
        f"  ... and {more:,} more (--all or --format json lists all)",
    ]


def _silence(alert: Alert) -> str:
    until = f" until {iso(alert.silenced_until)}" if alert.silenced_until else ""
    return f"silenced{until}: {alert.silenced_by}"


def _unevaluated_lines(unevaluated: Sequence[Unevaluated]) -> list[str]:
    if not unevaluated:
        return []
    lines = [f"Not evaluated: {len(unevaluated)} limit{'s' if len(unevaluated) != 1 else ''}"]
    return lines + [f"  {printable(u.describe())}" for u in unevaluated]


def _forecast(row: dict[str, Any]) -> str:
    if row["forecast_due"] and row["projected"] is not None:
        when = f", over on {fmt.day(row['overrun_at'])}" if row["overrun_at"] is not None else ""
        return f"on course for {fmt.amount(row['metric'], row['projected'])}{when}"
    if row["forecast_ratio"] is not None:
        return f"{fmt.percent(row['forecast_ratio'])} at period end"
    return "-"


def _subject(row: dict[str, Any]) -> str:
    if row["scope"] == "shared":
        return "(shared pool)"
    return printable(row["api_key_name"] or row["api_key_id"] or "")


def _line(widths: tuple[int, ...], *cells: str) -> str:
    rank, name, key_id, spend, requests, top = cells
    rank_w, name_w, id_w, spend_w, req_w = widths
    return (
        f"{rank:>{rank_w}}  {name:<{name_w}}  {key_id:<{id_w}}  "
        f"{spend:>{spend_w}}  {requests:>{req_w}}  {top}"
    ).rstrip()


def _grid(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned text columns, numbers right-aligned (columns 4 to 7)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if 4 <= i <= 7 else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out
