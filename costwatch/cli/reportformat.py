"""What `costwatch report` prints: a table for people, Markdown for a wiki or a ticket, JSON
for scripts. Pure: a `reports.Report` in, text out.

Names from the export are data: control characters are blanked in the table and Markdown,
and Markdown's own characters are escaped there (a key named `*urgent*` stays those letters).
The JSON fields are an interface: added, never removed or renamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from costwatch import fmt, notices, periods
from costwatch.cli.output import iso, printable
from costwatch.detect import Finding
from costwatch.reports import AtRisk, Line, Piece, Report, Span, describe

__all__ = ["period_words", "render_json", "render_markdown", "render_table"]

NAME_WIDTH = 40


def period_words(span: Span) -> str:
    """ "week of Nov 23 to Nov 29, 2026 (Europe/Berlin)"; a part: "... so far (3 of 7 days)"."""
    days = _days(span.first, span.last)
    what = f"{span.name} of {days}" if span.name != "day" else _day(span.first, year=True)
    if not span.whole:
        total = len(Span(span.name, span.zone, span.period.first_day, span.period.last_day).days)
        what += f" so far ({len(span.days)} of {total} days)"
    return f"{what} ({span.zone})"


def render_table(report: Report) -> str:
    """The report as text for a terminal."""
    lines = [f"Spend report: {period_words(report.span)}", ""]
    lines += [f"  {label:<10}{value}" for label, value in _totals(report)]
    lines += ["", f"Top keys by spend ({report.keys:,} key(s) used)"]
    lines += _table_lines(report.top_keys, report, "key")
    lines += ["", f"Top models by spend ({report.models:,} model(s) used)"]
    lines += _table_lines(report.top_models, report, "model")
    lines += ["", f"Budgets at risk (their current periods at {fmt.stamp(report.at)})"]
    lines += [f"  {_risk(r, printable)}" for r in report.at_risk] or ["  none"]
    lines += ["", f"Detector findings on its days ({report.findings_count:,})"]
    lines += [f"  {_finding(f, printable)}" for f in report.findings] or ["  none"]
    lines += _more(report)
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The report as Markdown (GitHub's flavour: tables)."""
    lines = [f"## Spend report: {period_words(report.span)}", ""]
    lines += [f"- **{label}:** {value}" for label, value in _totals(report)]
    for title, rows, what in (
        (f"Top keys by spend ({report.keys:,} used)", report.top_keys, "Key"),
        (f"Top models by spend ({report.models:,} used)", report.top_models, "Model"),
    ):
        lines += ["", f"### {title}", ""]
        compared = report.previous_cost_usd is not None
        head = f"| {what} | Spend | Share | Requests |" + (" Before | Change |" if compared else "")
        lines += [head, "|" + "---|" * (6 if compared else 4)]
        for row in rows:
            cells = [_md(printable(row.name)), fmt.money(row.cost_usd), _share(row, report)]
            cells.append(fmt.count(row.requests))
            if compared:
                cells += [fmt.money(row.previous_cost_usd or 0.0), _change(row)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"### Budgets at risk (current periods at {fmt.stamp(report.at)})", ""]
    lines += [f"- {_risk(r, _md_data)}" for r in report.at_risk] or ["- none"]
    lines += ["", f"### Detector findings on its days ({report.findings_count:,})", ""]
    lines += [f"- {_finding(f, _md_data)}" for f in report.findings] or ["- none"]
    lines += [line.strip() for line in _more(report)]
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The report as one JSON object (the outbox's payload, plus what people read from it)."""
    body: dict[str, Any] = {
        "report": report.name or None,
        "period": {
            "name": report.span.name,
            "key": report.span.key,
            "zone": report.span.zone,
            "first_day": report.span.first.isoformat(),
            "last_day": report.span.last.isoformat(),
            "whole": report.span.whole,
        },
        "cost_usd": report.cost_usd,
        "requests": report.requests,
        "previous": {
            "first_day": report.previous.first.isoformat(),
            "last_day": report.previous.last.isoformat(),
            "cost_usd": report.previous_cost_usd,
            "requests": report.previous_requests,
        },
        "change_usd": report.change_usd,
        "change_ratio": report.change_ratio,
        "keys": report.keys,
        "models": report.models,
        "top_keys": [_line_json(line, "api_key_id", "api_key_name") for line in report.top_keys],
        "top_models": [_line_json(line, None, "model") for line in report.top_models],
        "at_risk": [_risk_json(risk) for risk in report.at_risk],
        "findings": [{"kind": notices.kind(f), **notices.payload(f)} for f in report.findings],
        "findings_count": report.findings_count,
        "at": iso(report.at),
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


# --- parts -----------------------------------------------------------------------------------


def _totals(report: Report) -> list[tuple[str, str]]:
    before = f"the {report.span.name} before" if report.span.whole else "the same days before"
    spend = fmt.money(report.cost_usd)
    if report.previous_cost_usd is None:
        spend += f" (no comparison: {before} is not all stored)"
    else:
        spend += f" ({_signed(report.change_usd or 0.0)}"
        if report.change_ratio is not None:
            spend += f", {_signed_percent(report.change_ratio)}"
        spend += f" on {before}: {fmt.money(report.previous_cost_usd)})"
    requests = fmt.count(report.requests)
    if report.previous_requests is not None:
        requests += f" ({before}: {fmt.count(report.previous_requests)})"
    return [("Spend", spend), ("Requests", requests)]


def _table_lines(rows: Sequence[Line], report: Report, what: str) -> list[str]:
    if not rows:
        return ["  none"]
    compared = report.previous_cost_usd is not None
    head = f"  {what:<{NAME_WIDTH}} {'spend':>12} {'share':>6} {'requests':>12}"
    head += f" {'before':>12} {'change':>8}" if compared else ""
    out = [head]
    for row in rows:
        line = f"  {fmt.cut(printable(row.name), NAME_WIDTH):<{NAME_WIDTH}}"
        line += f" {fmt.money(row.cost_usd):>12} {_share(row, report):>6}"
        line += f" {fmt.count(row.requests):>12}"
        if compared:
            line += f" {fmt.money(row.previous_cost_usd or 0.0):>12} {_change(row):>8}"
        out.append(line.rstrip())
    return out


def _share(row: Line, report: Report) -> str:
    return fmt.percent(row.cost_usd / report.cost_usd) if report.cost_usd else "-"


def _change(row: Line) -> str:
    before = row.previous_cost_usd
    if before is None:
        return ""
    if before == 0:
        return "new" if row.cost_usd else "-"
    return _signed_percent((row.cost_usd - before) / before)


def _signed(usd: float) -> str:
    return ("+" if usd >= 0 else "") + fmt.money(usd)


def _signed_percent(ratio: float) -> str:
    return ("+" if ratio >= 0 else "") + fmt.percent(ratio)


def _risk(risk: AtRisk, inert: Callable[[str], str]) -> str:
    """support-bot-prod (budget team-a, month): 104% of $1,000; on course for 130%."""
    subject = "shared pool"
    if risk.api_key_id is not None:
        subject = inert(risk.api_key_name or risk.api_key_id)
    if risk.model:
        subject += f" on {inert(risk.model)}"
    period = _period_name(risk.period)
    used = f"{fmt.percent(risk.ratio)} of {fmt.amount(risk.metric, risk.limit, brief=True)}"
    text = f"{subject} (budget {inert(risk.budget)}{period}): {used}"
    if risk.forecast_ratio is not None and risk.projected is not None:
        text += f"; on course for {fmt.percent(risk.forecast_ratio)}"
    return text


def _period_name(key: str) -> str:
    try:
        return f", {periods.ADJECTIVES[periods.from_key(key).name]}"
    except ValueError:
        return ""


def _finding(finding: Finding, inert: Callable[[str], str]) -> str:
    pieces: tuple[Piece, ...] = describe(finding)
    return "".join(inert(text) if data else text for text, data in pieces)


def _more(report: Report) -> list[str]:
    hidden = report.findings_count - len(report.findings)
    return [f"  ...and {hidden:,} more findings"] if hidden > 0 else []


def _line_json(line: Line, ident: str | None, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {name: line.name}
    if ident is not None:
        out[ident] = line.id
    out |= {
        "cost_usd": line.cost_usd,
        "requests": line.requests,
        "previous_cost_usd": line.previous_cost_usd,
    }
    return out


def _risk_json(risk: AtRisk) -> dict[str, Any]:
    return {name: getattr(risk, name) for name in AtRisk.__dataclass_fields__}


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def _md(text: str) -> str:
    """Markdown's own characters escaped (names are data)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_data(text: str) -> str:
    return _md(printable(text))


def _days(first: date, last: date) -> str:
    if first == last:
        return _day(first, year=True)
    return f"{_day(first, year=first.year != last.year)} to {_day(last, year=True)}"


def _day(day: date, *, year: bool = False) -> str:
    return f"{day:%b} {day.day}" + (f", {day.year}" if year else "")
