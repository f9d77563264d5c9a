"""What `costwatch check` prints: tables for people, one JSON object for scripts.

Pure: takes what a cycle found (spend per key, findings, planned alerts, the outbox, what
delivery did) and returns text. Names from the export are data: control characters are
blanked in tables.

The table shows the `TOP_KEYS` biggest spenders, the rest in one line, and the totals of all
keys (`--all` lists every key); findings, alerts, silences and waiting rows are capped at
`MAX_FINDING_ROWS` lines each the same way. Every alert line names its budget. The JSON object
always holds everything; its fields are an interface: added, never removed or renamed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from costwatch import fmt
from costwatch.alerts import Alert
from costwatch.budgets import Unevaluated
from costwatch.periods import Period

NAME_WIDTH = 32
ID_WIDTH = 36  # a UUID fits
MODELS_WIDTH = 64
TOP_MODELS = 3
TOP_KEYS = 20  # keys listed in the table without --all
MAX_FINDING_ROWS = 50

# The finding and alert fields of `check --format json` (DESIGN.md, an interface).
FINDING_FIELDS = (
    "budget",
    "scope",
    "api_key_id",
    "api_key_name",
    "model",
    "metric",
    "used",
    "limit",
    "ratio",
    "level",
    "forecast_ratio",
    "projected",
    "forecast_due",
    "overrun_at",
    "period",
)
ALERT_FIELDS = (
    "budget",
    "api_key_id",
    "api_key_name",
    "model",
    "metric",
    "threshold",
    "kind",
    "severity",
    "scope",
    "used",
    "limit",
    "ratio",
    "projected",
    "overrun_at",
    "period",
    "repeat",
)


@dataclass(frozen=True)
class Pending:
    """An undelivered outbox row, as `check` lists it."""

    id: int
    kind: str
    channel: str | None
    summary: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class DeliverySummary:
    """What `check` did about Slack after its cycle."""

    attempted: bool  # False: nothing was tried, and `note` says why
    sent: int = 0  # outbox rows Slack accepted
    messages: int = 0  # messages Slack accepted (a digest is one)
    failed: int = 0  # rows tried and left in the outbox
    pending: int = 0  # rows in the outbox afterwards
    errors: Mapping[str, int] = field(default_factory=dict)  # error code -> posts
    timed_out: bool = False  # the delivery timeout ended it
    note: str | None = None


@dataclass(frozen=True)
class UsageReport:
    """Everything one `check` run knows, ready to render."""

    period: Period
    now: datetime
    source: str  # "Langdock export (2 parts)" or "file export.csv"
    per_key: pl.DataFrame  # Usage.per_key
    top_models: pl.DataFrame  # Usage.top_models()
    findings: pl.DataFrame | None = None  # budgets.evaluate(); None: no budgets evaluated
    alerts: Sequence[Alert] = ()  # planned in this run
    silenced: Sequence[Alert] = ()
    pending: Sequence[Pending] = ()  # undelivered outbox rows after this run
    dry_run: bool = False
    notes: Sequence[str] = field(default_factory=tuple)
    unevaluated: Sequence[Unevaluated] = ()  # limits the export could not evaluate
    delivery: DeliverySummary | None = None  # None: not a run that delivers (dry run, demo)
    default_channel: str | None = None  # slack.channel, where alerts without their own go
    all_keys: bool = False  # list every key and alert, not only the top ones


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


def render_json(report: UsageReport) -> str:
    """The one JSON object of DESIGN.md, plus spend per key, silenced and pending alerts."""
    models = _models_by_key(report.top_models)
    findings = report.findings if report.findings is not None else pl.DataFrame()
    document = {
        "period": {
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
            "timezone": report.period.zone.key,
        },
        "findings": [_finding_json(row) for row in findings.iter_rows(named=True)],
        "alerts": [_alert_json(a, report.default_channel) for a in report.alerts],
        "silenced": [
            {
                **_alert_json(a, report.default_channel),
                "reason": a.silenced_by,
                "until": _iso(a.silenced_until),
            }
            for a in report.silenced
        ],
        "pending": [
            {
                "id": p.id,
                "kind": p.kind,
                "channel": p.channel,
                "summary": p.summary,
                "attempts": p.attempts,
                "last_error": p.last_error,
            }
            for p in report.pending
        ],
        "now": report.now.isoformat(),
        "source": report.source,
        "dry_run": report.dry_run,
        "unevaluated": [
            {
                "budget": u.budget,
                "metric": u.metric,
                "model": u.model,
                "reason": u.reason,
                "message": u.describe(),
            }
            for u in report.unevaluated
        ],
        "delivery": _delivery_json(report.delivery),
        "totals": {
            "keys": report.per_key.height,
            "requests": int(report.per_key["requests"].sum()) if report.per_key.height else 0,
            "total_cost_usd": float(report.per_key["total_cost_usd"].sum())
            if report.per_key.height
            else 0.0,
        },
        "keys": [
            {
                "api_key_id": row["api_key_id"],
                "api_key_name": row["api_key_name"],
                "requests": row["requests"],
                "total_cost_usd": row["total_cost_usd"],
                "top_models": [
                    {"model": m, "total_cost_usd": c, "requests": r}
                    for m, c, r in models.get(row["api_key_id"], [])[:TOP_MODELS]
                ],
            }
            for row in report.per_key.iter_rows(named=True)
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def alert_summary(alert: Alert) -> str:
    """support-bot-prod on gpt-4o (budget support-bot): cost $980.50 of $900.00 (109%), 100%
    reached [critical]; a shared pool reads "pool workspace on claude-*: ..."."""
    model = f" on {alert.model}" if alert.model else ""
    if alert.api_key_id is None:
        who = f"pool {alert.budget}{model}"
    else:
        who = f"{alert.api_key_name or alert.api_key_id}{model} (budget {alert.budget})"
    what = "forecast to overrun" if alert.kind == "forecast" else f"{alert.threshold:g}% reached"
    return (
        f"{_printable(who)}: {_metric(alert.metric)} "
        f"{_amount(alert.metric, alert.used)} of {_amount(alert.metric, alert.limit)} "
        f"({fmt.percent(alert.ratio)}), {what} [{alert.severity}]"
    )


def _keys_table(report: UsageReport) -> list[str]:
    everything = report.per_key
    if not everything.height:
        return ["No usage in this period."]
    per_key = everything if report.all_keys else everything.head(TOP_KEYS)
    # Column lists, not a dict per row: 20,000 keys are formatted in a plain loop.
    ids = per_key.get_column("api_key_id").to_list()
    names = [_printable(name or "") for name in per_key.get_column("api_key_name").to_list()]
    costs = per_key.get_column("total_cost_usd").to_list()
    requests = per_key.get_column("requests").to_list()
    tops = _top_text(report.top_models)
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
    return {key_id: _printable(", ".join(models)) for key_id, models in listed.items()}


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
            f"{top['budget']!r} ({_metric(top['metric'])}).",
        ]
    shown = notable if everything else notable.head(MAX_FINDING_ROWS)
    table = [("BUDGET", "SUBJECT", "MODEL", "METRIC", "USED", "LIMIT", "USE", "LEVEL", "FORECAST")]
    for row in shown.iter_rows(named=True):
        table.append(
            (
                fmt.cut(_printable(row["budget"]), 24),
                fmt.cut(_subject(row), NAME_WIDTH),
                fmt.cut(_printable(row["model"] or "all"), 20),
                _metric(row["metric"]),
                _amount(row["metric"], row["used"]),
                _amount(row["metric"], row["limit"]),
                fmt.percent(row["ratio"]),
                f"{row['level']:g}%" if row["level"] is not None else "-",
                _forecast(row),
            )
        )
    lines = [head, *_grid(table)]
    if notable.height > shown.height:
        more = notable.height - shown.height
        lines.append(f"... and {more:,} more (--all or --format json lists all)")
    return lines


def _alerts_section(report: UsageReport) -> list[str]:
    verb = "that would be sent (dry run)" if report.dry_run else "planned in this run"
    channel = report.default_channel or "(default channel)"
    lines = [f"Alerts {verb}: {len(report.alerts)}"]
    lines += _capped(
        [f"  -> {a.channel or channel}  {alert_summary(a)}" for a in report.alerts], report
    )
    if report.silenced:
        lines.append(f"Silenced: {len(report.silenced)}")
        lines += _capped(
            [f"  {alert_summary(a)}  ({_silence(a)})" for a in report.silenced], report
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


def _capped(lines: list[str], report: UsageReport) -> list[str]:
    """At most MAX_FINDING_ROWS lines (all with --all), and how many more there are."""
    if report.all_keys or len(lines) <= MAX_FINDING_ROWS:
        return lines
    more = len(lines) - MAX_FINDING_ROWS
    return [
        *lines[:MAX_FINDING_ROWS],
        f"  ... and {more:,} more (--all or --format json lists all)",
    ]


def _silence(alert: Alert) -> str:
    until = f" until {_iso(alert.silenced_until)}" if alert.silenced_until else ""
    return f"silenced{until}: {alert.silenced_by}"


def _unevaluated_lines(unevaluated: Sequence[Unevaluated]) -> list[str]:
    if not unevaluated:
        return []
    lines = [f"Not evaluated: {len(unevaluated)} limit{'s' if len(unevaluated) != 1 else ''}"]
    return lines + [f"  {_printable(u.describe())}" for u in unevaluated]


def delivery_line(delivery: DeliverySummary) -> str:
    if not delivery.attempted:
        return f"Slack: nothing delivered ({delivery.note})"
    parts = [
        f"{delivery.sent:,} row{'s' if delivery.sent != 1 else ''} delivered in "
        f"{delivery.messages:,} message{'s' if delivery.messages != 1 else ''}"
    ]
    if delivery.failed:
        errors = ", ".join(f"{code} x{n}" for code, n in sorted(delivery.errors.items()))
        parts.append(
            f"{delivery.failed:,} failed ({errors})" if errors else f"{delivery.failed:,} failed"
        )
    if delivery.note:
        parts.append(delivery.note)
    waiting = (
        f"{delivery.pending:,} still waiting in the outbox (the next run retries them)"
        if delivery.pending
        else "nothing waiting"
    )
    return f"Slack: {'; '.join(parts)}; {waiting}"


def _forecast(row: dict[str, Any]) -> str:
    if row["forecast_due"] and row["projected"] is not None:
        when = f", over on {fmt.day(row['overrun_at'])}" if row["overrun_at"] is not None else ""
        return f"on course for {_amount(row['metric'], row['projected'])}{when}"
    if row["forecast_ratio"] is not None:
        return f"{fmt.percent(row['forecast_ratio'])} at period end"
    return "-"


def _subject(row: dict[str, Any]) -> str:
    if row["scope"] == "shared":
        return "(shared pool)"
    return _printable(row["api_key_name"] or row["api_key_id"] or "")


def _metric(metric: str) -> str:
    return {"cost_usd": "cost", "requests": "requests", "tokens": "tokens"}.get(metric, metric)


def _amount(metric: str, value: float) -> str:
    return fmt.money(value) if metric == "cost_usd" else fmt.count(value)


def _alert_json(alert: Alert, default_channel: str | None) -> dict[str, Any]:
    values = {name: getattr(alert, name) for name in ALERT_FIELDS}
    values["overrun_at"] = _iso(alert.overrun_at)
    values["channel"] = alert.channel or default_channel
    return values


def _finding_json(row: dict[str, Any]) -> dict[str, Any]:
    values = {name: row[name] for name in FINDING_FIELDS}
    values["overrun_at"] = _iso(row["overrun_at"])
    return values


def _delivery_json(delivery: DeliverySummary | None) -> dict[str, Any] | None:
    if delivery is None:
        return None
    return {
        "attempted": delivery.attempted,
        "sent": delivery.sent,
        "messages": delivery.messages,
        "failed": delivery.failed,
        "pending": delivery.pending,
        "errors": dict(delivery.errors),
        "timed_out": delivery.timed_out,
        "note": delivery.note,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


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


def _models_by_key(top: pl.DataFrame) -> dict[str, list[tuple[str, float, int]]]:
    by_key: dict[str, list[tuple[str, float, int]]] = {}
    for key_id, model, cost, requests in top.select(
        "api_key_id", "model", "total_cost_usd", "requests"
    ).iter_rows():
        by_key.setdefault(key_id, []).append((model, cost, requests))
    return by_key


def _printable(text: str) -> str:
    """Names are data: control characters (newlines, escapes) must not break the table."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else " " for ch in text)
