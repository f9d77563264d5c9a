"""A spend report as a Slack message: Block Kit blocks plus a plain-text fallback. Pure.

    render_report(report) -> Rendered        (`render.render` hands reports here)

It reads top to bottom: a header with the period's spend and its change ("Weekly spend:
$1,235, +23% on the week before"), the configured mentions, the numbers (spend, change,
requests, the period), the top keys and the top models (each with its share and its change),
the budgets at risk in their current periods, what the detectors found on the period's days,
and a context line naming the report. Names from the export (keys, models, budgets) are data,
never markup: they go through `blocks.compose` into plain text; mrkdwn holds costwatch's own
words and numbers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from costwatch import fmt, periods
from costwatch.reports import AtRisk, Line, Report, describe
from costwatch.slack import blocks as sb
from costwatch.slack.blocks import Data, Rendered

__all__ = ["render_report"]

MARKER = ":bar_chart:"
RISK_MARKERS = {
    "forecast": ":chart_with_upwards_trend:",  # forecast over its limit
    "reached": ":warning:",  # a threshold reached
    "over": ":rotating_light:",  # over its limit
}
NAME_CAP = 60


def render_report(report: Report) -> Rendered:
    """The message for one report."""
    span = report.span
    title = (
        f"{periods.ADJECTIVES[span.name].capitalize()} spend: {fmt.money_brief(report.cost_usd)}"
    )
    change = _change_words(report)
    blocks = [sb.header(f"{MARKER} {title}{', ' + change if change else ''}")]
    tags = sb.mentions(report.mention)
    if tags:
        blocks.append(sb.section(sb.mrkdwn_text(" ".join(tags))))
    blocks.append(sb.fields([sb.mrkdwn_text(fact) for fact in _facts(report)]))
    for heading, lines in (
        (f"Top keys by spend ({report.keys:,} used)", _lines(report.top_keys, report)),
        (f"Top models by spend ({report.models:,} used)", _lines(report.top_models, report)),
        ("Budgets at risk in their current periods", [_risk(r) for r in report.at_risk]),
        (f"Detectors' findings ({report.findings_count:,})", _findings(report)),
    ):
        if not lines:
            continue
        blocks.append(sb.section(sb.mrkdwn_text(f"*{heading}*")))
        blocks += [sb.section(sb.plain_text(text, emoji=True)) for text in sb.pack(lines)]
    about: list[str | Data] = ["Spend report"]
    if report.name:
        about += [" ", Data(report.name, NAME_CAP)]
    about += [f" · {_span_words(report)} ({span.zone}) · made {fmt.stamp(report.at)}"]
    about += [" · once per period" if report.name else " · sent by costwatch report"]
    blocks.append(sb.context([sb.plain_text(sb.compose(about, sb.MAX_CONTEXT_TEXT))]))
    text = f"costwatch: {title.lower()}" + (f", {change}" if change else "")
    text += f" ({_span_words(report)})" + (f" {' '.join(tags)}" if tags else "")
    return Rendered(text=text, blocks=blocks[: sb.MAX_BLOCKS])


def _change_words(report: Report) -> str:
    """ "+23% on the week before", "+$12 on the week before" (nothing spent before), or ""."""
    if report.change_usd is None:
        return ""
    before = f"the {report.span.name} before" if report.span.whole else "the same days before"
    if report.change_ratio is None:
        return f"{_signed(report.change_usd)} on {before}"
    return f"{_signed_percent(report.change_ratio)} on {before}"


def _facts(report: Report) -> list[str]:
    facts = [f"*Spend*\n{fmt.money(report.cost_usd)}"]
    if report.previous_cost_usd is None:
        facts.append("*Change*\nno comparison: the period before is not all stored")
    else:
        change = _signed(report.change_usd or 0.0)
        if report.change_ratio is not None:
            change += f" ({_signed_percent(report.change_ratio)})"
        facts.append(f"*Change*\n{change}, was {fmt.money(report.previous_cost_usd)}")
    requests = fmt.count(report.requests)
    if report.previous_requests is not None:
        requests += f" (was {fmt.count(report.previous_requests)})"
    facts.append(f"*Requests*\n{requests}")
    facts.append(f"*Period*\n{_span_words(report)}\n{sb.mrkdwn(report.span.zone, 100)}")
    return facts


def _span_words(report: Report) -> str:
    span = report.span
    first, last = span.first, span.last
    if first == last:
        return f"{first:%a} {_day(first)}"
    days = f"{_day(first)} to {_day(last)}"
    return days if span.whole else f"{days} (so far)"


def _lines(rows: Sequence[Line], report: Report) -> list[str]:
    out = []
    for n, row in enumerate(rows, start=1):
        share = f" ({fmt.percent(row.cost_usd / report.cost_usd)})" if report.cost_usd else ""
        parts: list[str | Data] = [f"{n}. ", Data(row.name, NAME_CAP)]
        parts += [f"  {fmt.money(row.cost_usd)}{share}", _row_change(row)]
        out.append(sb.compose(parts, 400))
    return out


def _row_change(row: Line) -> str:
    before = row.previous_cost_usd
    if before is None:
        return ""
    if before == 0:
        return ", new" if row.cost_usd else ""
    return f", {_signed_percent((row.cost_usd - before) / before)}"


def _risk(risk: AtRisk) -> str:
    if risk.level is None:
        marker = RISK_MARKERS["forecast"]
    else:
        marker = RISK_MARKERS["over"] if risk.ratio >= 1 else RISK_MARKERS["reached"]
    who: list[str | Data] = (
        [Data(risk.api_key_name or risk.api_key_id, NAME_CAP)]
        if risk.api_key_id is not None
        else ["shared pool"]
    )
    if risk.model:
        who += [" on ", Data(risk.model, 40)]
    limit = fmt.amount(risk.metric, risk.limit, brief=True)
    what = f" · {fmt.percent(risk.ratio)} of {limit}{_adjective(risk.period)}"
    if risk.forecast_ratio is not None and risk.projected is not None:
        what += f", on course for {fmt.percent(risk.forecast_ratio)}"
    return sb.compose([f"{marker} ", *who, " · budget ", Data(risk.budget, 40), what], 400)


def _adjective(key: str) -> str:
    try:
        return f" {periods.ADJECTIVES[periods.from_key(key).name]}"
    except ValueError:
        return ""


def _findings(report: Report) -> list[str]:
    lines = [
        sb.compose([Data(text, NAME_CAP) if data else text for text, data in describe(f)], 400)
        for f in report.findings
    ]
    hidden = report.findings_count - len(report.findings)
    if hidden > 0:
        lines.append(f"…and {hidden:,} more")
    return lines


def _signed(usd: float) -> str:
    return ("+" if usd >= 0 else "") + fmt.money(usd)


def _signed_percent(ratio: float) -> str:
    return ("+" if ratio >= 0 else "") + fmt.percent(ratio)


def _day(day: date) -> str:
    return f"{day:%b} {day.day}"
