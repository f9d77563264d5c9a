"""What `costwatch check` prints: one JSON object for scripts (`table.py`: the table for people).

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

from costwatch import fmt, notices, owning
from costwatch.alerts import Alert
from costwatch.budgets import Unevaluated
from costwatch.detect import Anomaly, Finding, KeyEvent, UnitCost
from costwatch.periods import Period
from costwatch.reports import Report
from costwatch.state.base import OutboxItem

NAME_WIDTH = 32
ID_WIDTH = 36  # a UUID fits
MODELS_WIDTH = 64
TOP_MODELS = 3
TOP_KEYS = 20  # keys listed in the table without --all
MAX_FINDING_ROWS = 50

# The finding and alert fields of `check --format json` (an interface: docs/architecture.md).
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
    "forecast_method",
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
    "forecast_method",
)

# The detectors' findings of the cycle in `check --format json`'s "detected", per kind (an
# interface too); each also carries owner_mention, owner_channel and channels.
DETECTED_FIELDS: dict[type[Finding], tuple[str, ...]] = {
    Anomaly: (
        "kind", "day", "metric", "api_key_id", "api_key_name", "model", "value", "normal",
        "ratio", "level", "basis", "baseline_days", "since", "hour", "driver_model",
        "driver_share",
    ),
    UnitCost: (
        "kind", "day", "model", "change", "basis", "requests", "cost_usd", "rate", "normal",
        "ratio", "baseline_days", "zero_cost_requests", "zero_cost_keys",
    ),
    KeyEvent: (
        "kind", "day", "api_key_id", "api_key_name", "cost_usd", "requests", "last_seen",
        "idle_days",
    ),
}  # fmt: skip


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
    detected: Sequence[Finding] = ()  # the detectors' findings of the cycle (due; a dry run's too)


def render_json(report: UsageReport) -> str:
    """The one JSON object of `check --format json`, plus spend per key, silenced and pending
    alerts."""
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
                "until": iso(a.silenced_until),
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
        "detected": [_detected_json(f, report.default_channel) for f in report.detected],
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
    what = f"{alert.threshold:g}% reached"
    if alert.kind == "forecast":
        how = f" ({alert.forecast_method})" if alert.forecast_method else ""
        what = f"forecast to overrun{how}"
    return (
        f"{printable(who)}: {metric_word(alert.metric)} "
        f"{fmt.amount(alert.metric, alert.used)} of {fmt.amount(alert.metric, alert.limit)} "
        f"({fmt.percent(alert.ratio)}), {what} [{alert.severity}]"
    )


def describe_pending(item: OutboxItem) -> Pending:
    """An outbox row as `check` lists it: what its notice says, in one line."""
    try:
        notice = notices.read(item.kind, item.payload, written_at=item.created_at)
    except (ValueError, TypeError):
        summary = f"a {item.kind!r} row that cannot be read"
    else:
        summary = notice_summary(notice)
    return Pending(
        id=item.id,
        kind=item.kind,
        channel=item.channel,
        summary=summary,
        attempts=item.attempts,
        last_error=item.last_error,
    )


def notice_summary(notice: notices.Notice) -> str:
    if isinstance(notice, Alert):
        return alert_summary(notice)
    if isinstance(notice, Anomaly):
        on = f" on {notice.model}" if notice.model else ""
        normal = fmt.amount(notice.metric, notice.normal)
        return (
            f"{printable(notice.api_key_name + on)}: {metric_word(notice.metric)} "
            f"{fmt.amount(notice.metric, notice.value)}, normally {normal} [{notice.kind}]"
        )
    if isinstance(notice, UnitCost):
        return f"{printable(notice.model)}: {notice.change} {notice.basis} [unit_cost]"
    if isinstance(notice, KeyEvent):
        return f"{printable(notice.api_key_name)}: {fmt.money(notice.cost_usd)} [{notice.kind}]"
    if isinstance(notice, Report):
        name = printable(notice.name or "report")
        return f"{name}: {notice.span.key}, {fmt.money(notice.cost_usd)} [report]"
    if notice.kind == "exports_failing":
        since = iso(notice.failing_since)
        return f"Langdock exports failing since {since} ({notice.failures} cycles, {notice.reason})"
    return f"Langdock exports recovered ({notice.failures} failed cycles)"


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


def metric_word(metric: str) -> str:
    return {"cost_usd": "cost", "requests": "requests", "tokens": "tokens"}.get(metric, metric)


def _alert_json(alert: Alert, default_channel: str | None) -> dict[str, Any]:
    values = {name: getattr(alert, name) for name in ALERT_FIELDS}
    values["overrun_at"] = iso(alert.overrun_at)
    values["channel"] = alert.channel or default_channel
    values["owner_mention"] = list(alert.owner_mention)
    values["owner_channel"] = alert.owner_channel
    values["channels"] = list(owning.routes(alert, default_channel))
    return values


def _finding_json(row: dict[str, Any]) -> dict[str, Any]:
    values = {name: row[name] for name in FINDING_FIELDS}
    values["overrun_at"] = iso(row["overrun_at"])
    return values


def _detected_json(finding: Finding, default_channel: str | None) -> dict[str, Any]:
    """A detector's finding: its kind's fields (days as ISO dates), its owner, its channels."""
    stored = notices.payload(finding)  # JSON-ready, as the outbox holds it
    values = {name: stored.get(name) for name in DETECTED_FIELDS[type(finding)]}
    values["owner_mention"] = list(stored.get("mention") or [])
    values["owner_channel"] = stored.get("channel")
    values["channels"] = list(owning.routes(finding, default_channel))
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


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _models_by_key(top: pl.DataFrame) -> dict[str, list[tuple[str, float, int]]]:
    by_key: dict[str, list[tuple[str, float, int]]] = {}
    for key_id, model, cost, requests in top.select(
        "api_key_id", "model", "total_cost_usd", "requests"
    ).iter_rows():
        by_key.setdefault(key_id, []).append((model, cost, requests))
    return by_key


def printable(text: str) -> str:
    """Names are data: control characters (newlines, escapes) must not break the table."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else " " for ch in text)
