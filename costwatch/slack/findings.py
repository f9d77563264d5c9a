"""The detectors' findings as Slack messages: Block Kit blocks plus a plain-text fallback. Pure.

    render_finding(finding) -> Rendered        (`render.render` hands findings here)

Each reads, top to bottom, as a budget alert does: a header that says it in one line
("support-bot-prod spent 8.0x its normal today"), the owner's mentions, the numbers (today,
the normal and what it is the median of, since when), what drives it, and a context line
saying what kind of alert it is and how often it comes. Names from the export (keys,
models) are data, never markup: they go through `blocks.compose` into plain text, and the
mrkdwn fields hold costwatch's own words and numbers only.
"""

from __future__ import annotations

from datetime import date

from costwatch import fmt
from costwatch.detect.findings import Anomaly, Finding, KeyEvent, UnitCost
from costwatch.slack import blocks as sb
from costwatch.slack.blocks import Data, Rendered

__all__ = ["FINDINGS", "finding_line", "render_finding"]

FINDINGS = (Anomaly, UnitCost, KeyEvent)  # the notice types rendered here

NAME_CAP = 80
TEXT_NAME_CAP = 60
MARKERS = {
    "anomaly": ":chart_with_upwards_trend:",
    "spend_rate": ":stopwatch:",
    "unit_cost": ":money_with_wings:",
    "unowned": ":bust_in_silhouette:",
    "new_key": ":new:",
    "dormant_key": ":zzz:",
}
ABOUT = {
    "anomaly": "Anomaly: far above this key's own normal day. Once per key and day.",
    "spend_rate": (
        "Spend rate: today so far against the same hour of normal days. Once per key and day,"
        " instead of its anomaly."
    ),
    "unit_cost": "Unit cost: the workspace's price of this model against its trailing median.",
    "unowned": "Unowned spend: no budget but a catch-all selects this key. Once a day.",
    "new_key": "New key: never seen in the stored history. Once.",
    "dormant_key": "Dormant key: no use for a while, spending again. Once a day.",
}
WEEKDAYS = ("Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays")


def render_finding(finding: Finding) -> Rendered:
    """The message for one finding."""
    if isinstance(finding, Anomaly):
        return _anomaly(finding)
    if isinstance(finding, UnitCost):
        return _unit_cost(finding)
    return _key_event(finding)


def finding_line(finding: Finding) -> str:
    """One line for a digest: the message's header (plain text, names inert)."""
    return str(render_finding(finding).blocks[0]["text"]["text"])


def _message(
    finding: Finding,
    sentence: list[str | Data],
    facts: list[str],
    notes: list[list[str | Data]],
    mention: tuple[str, ...] = (),
) -> Rendered:
    """Header, mentions, fields, the notes as plain text, the context line; and the text."""
    marker = MARKERS[finding.kind]
    blocks = [sb.header(sb.compose([f"{marker} ", *sentence], sb.MAX_HEADER))]
    tags = sb.mentions(mention)
    if tags:
        blocks.append(sb.section(sb.mrkdwn_text(" ".join(tags))))
    blocks.append(sb.fields([sb.mrkdwn_text(fact) for fact in facts]))
    for note in notes:
        blocks.append(sb.section(sb.plain_text(sb.compose(note, sb.MAX_SECTION_TEXT))))
    blocks.append(sb.context([sb.plain_text(ABOUT[finding.kind])]))
    short = [Data(p.text, TEXT_NAME_CAP) if isinstance(p, Data) else p for p in sentence]
    tagline = f" {' '.join(tags)}" if tags else ""
    text = sb.compose(short, 400, markup=True) + tagline
    return Rendered(text=text, blocks=blocks)


def _anomaly(a: Anomaly) -> Rendered:
    who: list[str | Data] = [Data(a.api_key_name or a.api_key_id, NAME_CAP)]
    if a.model:
        who += [" on ", Data(a.model, NAME_CAP)]
    what = "spend" if a.metric == "cost_usd" else "requests"
    by = f"by {a.hour:02d}:00" if a.hour is not None else "today"
    if a.ratio is not None:
        sentence = [*who, f" at {a.ratio:.1f}x its normal {what} {by}"]
    else:
        amount = fmt.amount(a.metric, a.value, brief=True)
        sentence = [*who, f" at {amount} {by}, normally nothing"]
    today = "Today so far" if a.hour is not None else "Today"
    normal = f"Normal by {a.hour:02d}:00" if a.hour is not None else "Normal"
    facts = [
        f"*{today}*\n{fmt.amount(a.metric, a.value)}",
        f"*{normal}*\n{fmt.amount(a.metric, a.normal)} ({_median_of(a)})",
        f"*Alert level*\n{fmt.amount(a.metric, a.level)}",
    ]
    if a.since is not None:
        facts.append(f"*Since*\n{_since(a.since, a.day)}")
    notes: list[list[str | Data]] = []
    if a.driver_model is not None:
        share = f" ({fmt.percent(a.driver_share)} of the rise)" if a.driver_share else ""
        notes.append(["Driven by ", Data(a.driver_model, NAME_CAP), share])
    notes.append(["Key ", Data(a.api_key_name, NAME_CAP), " (id ", Data(a.api_key_id, 40), ")"])
    return _message(a, sentence, facts, notes, a.mention)


def _median_of(a: Anomaly) -> str:
    """What the normal is the median of, in words."""
    n = a.baseline_days
    if a.basis == "same weekday":
        return f"median of the last {n} {WEEKDAYS[a.day.weekday()]}"
    if a.basis == "weekday/weekend":
        kind = "weekend days" if a.day.weekday() >= 5 else "weekdays"
        return f"median of the last {n} {kind}"
    return f"median of the last {n} days"


def _since(since: date, day: date) -> str:
    days = (day - since).days + 1
    return "today" if days <= 1 else f"{_day(since)} ({days} days)"


def _day(day: date) -> str:
    return f"{day:%b} {day.day}"


def _unit_cost(u: UnitCost) -> Rendered:
    model = Data(u.model, NAME_CAP)
    unit = "per 1k tokens" if u.basis == "per 1k tokens" else "per request"
    if u.change == "zero_cost":
        sentence: list[str | Data] = [
            f"{fmt.count(u.zero_cost_requests)} requests of ",
            model,
            " cost nothing today",
        ]
    else:
        way = "more" if (u.ratio or 0) > 1 else "less"
        times = u.ratio if (u.ratio or 0) > 1 else 1 / (u.ratio or 1)
        sentence = [model, f" costs {times:.1f}x {way} {unit} than normal"]
    facts = [
        f"*Today*\n{_rate(u.rate)} {unit}",
        f"*Normal*\n{_rate(u.normal)} {unit} (median of {u.baseline_days} days)"
        if u.normal is not None
        else "*Normal*\nno history yet",
        f"*Requests today*\n{fmt.count(u.requests)}",
        f"*Spend today*\n{fmt.money(u.cost_usd)}",
    ]
    if u.zero_cost_requests:
        facts.append(
            f"*Requests at $0*\n{fmt.count(u.zero_cost_requests)} from {u.zero_cost_keys} key"
            + ("s" if u.zero_cost_keys != 1 else "")
        )
    why = "A price change, another model behind the same name, or rows Langdock did not price."
    return _message(u, sentence, facts, [[why]])


def _rate(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 1 else fmt.money(value)


def _key_event(e: KeyEvent) -> Rendered:
    key = Data(e.api_key_name or e.api_key_id, NAME_CAP)
    spend = fmt.money_brief(e.cost_usd)
    sentences: dict[str, list[str | Data]] = {
        "unowned": [key, f" spent {spend} today and no budget names it"],
        "new_key": ["New key ", key, f" spent {spend} today"],
        "dormant_key": [key, f" is back after {e.idle_days or 0} days: {spend} today"],
    }
    facts = [
        f"*Spend today*\n{fmt.money(e.cost_usd)}",
        f"*Requests today*\n{fmt.count(e.requests)}",
    ]
    if e.last_seen is not None:
        facts.append(f"*Last used before*\n{_day(e.last_seen)}")
    notes: list[list[str | Data]] = [
        ["Key ", Data(e.api_key_name, NAME_CAP), " (id ", Data(e.api_key_id, 40), ")"]
    ]
    if e.kind == "unowned":
        notes.append(["Give it a budget of its own (or an owner) so someone answers for it."])
    return _message(e, sentences[e.kind], facts, notes, e.mention)
