"""What `costwatch check` prints: the per-key spend table for people, one JSON object for scripts.

Pure: takes the period, `now` and the aggregated frames; returns text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from costwatch import fmt
from costwatch.periods import Period

NAME_WIDTH = 32
ID_WIDTH = 36  # a UUID fits
MODELS_WIDTH = 64
TOP_MODELS = 3


@dataclass(frozen=True)
class UsageReport:
    """Everything one `check` run knows about spend, ready to render."""

    period: Period
    now: Any  # datetime; Any keeps json encoding in one place below
    source: str  # "Langdock export (2 parts)" or "file export.csv"
    per_key: (
        pl.DataFrame
    )  # usage.per_key(): api_key_id, api_key_name, requests, total_cost_usd, ...
    top_models: pl.DataFrame  # usage.top_models(): api_key_id, model, total_cost_usd, requests
    rows_read: int = 0
    notes: Sequence[str] = field(default_factory=tuple)


def period_line(period: Period, now: Any) -> str:
    """ "Month to date in Europe/Berlin: 2026-11-01 00:00 to 2026-11-25 10:30 (24.4 of 30 days)"."""
    local_now = min(now, period.end).astimezone(period.zone)
    elapsed_days = period.elapsed(now).total_seconds() / 86_400
    total_days = period.length.total_seconds() / 86_400
    return (
        f"{period.name.capitalize()} to date in {period.zone.key}: "
        f"{fmt.stamp(period.start)} to {fmt.stamp(local_now)} "
        f"({elapsed_days:.1f} of {total_days:.0f} days)"
    )


def render_table(report: UsageReport) -> str:
    """The per-key table, sorted by spend (as `per_key` already is), with a totals row."""
    models = _models_by_key(report.top_models)
    rows = list(report.per_key.iter_rows(named=True))
    lines = [period_line(report.period, report.now), f"Source: {report.source}"]
    lines.extend(report.notes)
    lines.append("")
    if not rows:
        lines.append("No usage in this period.")
        return "\n".join(lines) + "\n"

    name_w = max(len("KEY"), min(NAME_WIDTH, max(len(r["api_key_name"] or "") for r in rows)))
    id_w = max(len("ID"), min(ID_WIDTH, max(len(r["api_key_id"]) for r in rows)))
    rank_w = len(str(len(rows)))
    total_cost = float(report.per_key["total_cost_usd"].sum())
    total_requests = int(report.per_key["requests"].sum())
    spend_w = max(len("SPEND"), len(fmt.money(total_cost)))
    req_w = max(len("REQUESTS"), len(fmt.count(total_requests)))

    def line(*cells: str) -> str:
        rank, name, key_id, spend, requests, top = cells
        return (
            f"{rank:>{rank_w}}  {name:<{name_w}}  {key_id:<{id_w}}  "
            f"{spend:>{spend_w}}  {requests:>{req_w}}  {top}"
        ).rstrip()

    lines.append(line("#", "KEY", "ID", "SPEND", "REQUESTS", "TOP MODELS"))
    for rank, row in enumerate(rows, start=1):
        top = ", ".join(
            f"{m} {fmt.money(c)}" for m, c, _ in models.get(row["api_key_id"], [])[:TOP_MODELS]
        )
        lines.append(
            line(
                str(rank),
                fmt.cut(_printable(row["api_key_name"] or ""), name_w),
                fmt.cut(row["api_key_id"], id_w),
                fmt.money(row["total_cost_usd"]),
                fmt.count(row["requests"]),
                fmt.cut(_printable(top), MODELS_WIDTH),
            )
        )
    keys = f"TOTAL ({len(rows):,} key{'s' if len(rows) != 1 else ''})"
    lines.append(line("", keys, "", fmt.money(total_cost), fmt.count(total_requests), ""))
    return "\n".join(lines) + "\n"


def render_json(
    report: UsageReport,
    findings: Iterable[Mapping[str, Any]] = (),
    alerts: Iterable[Mapping[str, Any]] = (),
) -> str:
    """The one JSON object of DESIGN.md, plus the per-key spend under "keys"."""
    models = _models_by_key(report.top_models)
    keys = [
        {
            "api_key_id": row["api_key_id"],
            "api_key_name": row["api_key_name"],
            "requests": row["requests"],
            "total_cost_usd": row["total_cost_usd"],
            "tokens": row.get("tokens"),
            "top_models": [
                {"model": m, "total_cost_usd": c, "requests": r}
                for m, c, r in models.get(row["api_key_id"], [])[:TOP_MODELS]
            ],
        }
        for row in report.per_key.iter_rows(named=True)
    ]
    document = {
        "period": {
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
            "timezone": report.period.zone.key,
        },
        "now": report.now.isoformat(),
        "source": report.source,
        "findings": list(findings),
        "alerts": list(alerts),
        "keys": keys,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _models_by_key(top: pl.DataFrame) -> dict[str, list[tuple[str, float, int]]]:
    by_key: dict[str, list[tuple[str, float, int]]] = {}
    for key_id, model, cost, requests in top.select(
        "api_key_id", "model", "total_cost_usd", "requests"
    ).iter_rows():
        by_key.setdefault(key_id, []).append((model, cost, requests))
    return by_key


def _printable(text: str) -> str:
    """Names are data: control characters (newlines, escapes) must not break the table."""
    return "".join(ch if ch.isprintable() else " " for ch in text)
