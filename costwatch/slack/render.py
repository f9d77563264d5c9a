"""Slack messages for people: Block Kit blocks plus a plain-text fallback. Pure.

`render(notice, now=...)` turns one notice (what an outbox row holds, read once by
`costwatch.notices`) into a `Rendered` message: a budget alert, or an operational notice
(exports failing, recovered). `render_digest` stands for many alerts to one
channel, worst first; `render_test` is what `costwatch test-slack` sends; `as_terminal_text`
reads any of them back as plain text for `costwatch demo`.

An alert reads, top to bottom: a header that says it all in one line ("support-bot-prod at 82%
of its $1,500 monthly budget", with a severity marker), the configured mentions (the subject's
owner's last, as "owner: @team", from `owners:`), the numbers
(spend against the limit, requests, the period with its zone and the time left, the forecast,
the change since the last alert), the top models by spend, and a context line naming the
budget, key and threshold. Names from the export are data and never markup (`blocks.py`).
Every message fits Slack's limits whatever the names are; `blocks.problems` checks that.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from costwatch import fmt, periods
from costwatch.alerts import Alert
from costwatch.health import Operational
from costwatch.notices import Notice
from costwatch.reports import Report
from costwatch.slack import blocks as sb
from costwatch.slack.blocks import Data, Rendered, escape
from costwatch.slack.findings import FINDINGS, finding_line, render_finding
from costwatch.slack.report import render_report

__all__ = ["Rendered", "as_terminal_text", "escape", "render", "render_digest", "render_test"]

MARKERS = {
    "critical": ":rotating_light:",
    "warning": ":warning:",
    "info": ":information_source:",
}
FORECAST_MARKER = ":chart_with_upwards_trend:"
OTHER_MARKER = ":bell:"
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
DIGEST_ROWS = 50  # alerts listed in a digest; the rest are counted ("and 12 more")
NAME_CAP = 80  # a name on its own in a sentence (header room permitting)
TEXT_NAME_CAP = 60  # a name in the notification text


def render(notice: Notice, *, now: datetime) -> Rendered:
    """The message for one notice: a budget alert, a detector's finding (`slack/findings.py`),
    or an operational notice."""
    if isinstance(notice, Alert):
        return _alert_message(notice, now)
    if isinstance(notice, FINDINGS):
        return render_finding(notice)
    if isinstance(notice, Report):
        return render_report(notice)
    return _operational(notice, now)


def render_digest(notices: Sequence[Notice], *, now: datetime) -> Rendered:
    """One message standing for several alerts to the same channel, worst first (equal ones
    in the order given: the outbox's)."""
    alerts = sorted(
        (n for n in notices if isinstance(n, Alert)), key=lambda a: (_rank(a), -a.ratio)
    )
    others = [n for n in notices if not isinstance(n, Alert)]
    counts = _severity_counts(alerts)
    marker = _marker(alerts[0]) if alerts else OTHER_MARKER
    total = len(notices)
    head = f"{total:,} budget alert{'s' if total != 1 else ''}" + (f": {counts}" if counts else "")
    blocks = [sb.header(f"{marker} {head}")]
    tags = sb.mentions([m for a in alerts for m in (*a.mention, *a.owner_mention)])
    if tags:
        blocks.append(sb.section(sb.mrkdwn_text(" ".join(tags))))
    lines = [_other_line(o) for o in others]
    lines += [_digest_line(a) for a in alerts[: max(DIGEST_ROWS - len(lines), 0)]]
    for text in sb.pack(lines):
        blocks.append(sb.section(sb.plain_text(text, emoji=True)))
    hidden = total - len(lines)
    note = "Worst first. Each line: subject · budget · use · spend of limit."
    if hidden > 0:
        note = (
            f"…and {hidden:,} more, less urgent. "
            + note
            + " `costwatch check --dry-run` lists them."
        )
    blocks.append(sb.context([sb.mrkdwn_text(note)]))
    worst = f" Worst: {_sentence(alerts[0], markup=True)}." if alerts else ""
    text = f"costwatch: {head}.{worst}" + _tagline(tags)
    return Rendered(text=text, blocks=blocks)


def render_test(channel: str | None, *, now: datetime) -> Rendered:
    """What `costwatch test-slack` sends; `channel` empty or None: an incoming webhook's own."""
    where = sb.plain(channel, 80) if channel else "the webhook's channel"
    when = f"{fmt.stamp(now)} {now.tzname() or ''}".strip()
    body = (
        f"costwatch can post to {where}. Budget alerts for this channel will arrive here "
        "as messages like this one, with the spend, the limit and the forecast."
    )
    blocks = [
        sb.header(":white_check_mark: costwatch test message"),
        sb.section(sb.plain_text(body)),
        sb.context([sb.plain_text(f"Sent by costwatch test-slack at {when}.")]),
    ]
    target = sb.mrkdwn(channel, 80) if channel else "the webhook's channel"
    return Rendered(text=f"costwatch test message for {target}", blocks=blocks)


# --- one alert -------------------------------------------------------------------------------


def _alert_message(alert: Alert, now: datetime) -> Rendered:
    period = _period(alert.period)
    blocks = [sb.header(_headline(alert, period))]
    tags = sb.mentions((*alert.mention, *alert.owner_mention))
    if tags:
        blocks.append(sb.section(sb.mrkdwn_text(_tags_line(alert, tags))))
    blocks.append(sb.fields([sb.mrkdwn_text(f) for f in _facts(alert, period, now)]))
    if alert.top_models:
        parts: list[str | Data] = ["Top models by spend: "]
        for n, (model, spend) in enumerate(alert.top_models[:3]):
            parts += [" · " if n else "", Data(model, NAME_CAP), f" {fmt.money(spend)}"]
        blocks.append(sb.section(sb.plain_text(sb.compose(parts, sb.MAX_SECTION_TEXT))))
    blocks.append(sb.context([sb.plain_text(sb.compose(_about(alert), sb.MAX_CONTEXT_TEXT))]))
    severity = "Forecast" if alert.kind == "forecast" else escape(alert.severity.capitalize())
    budget = sb.mrkdwn(alert.budget, TEXT_NAME_CAP)
    left = f", {fmt.span(period.remaining(now))} left" if period and period.remaining(now) else ""
    text = f"{severity}: {_sentence(alert, markup=True)} (budget {budget}{left})" + _tagline(tags)
    return Rendered(text=text, blocks=blocks)


def _headline(alert: Alert, period: periods.Period | None) -> str:
    parts: list[str | Data] = [f"{_marker(alert)} ", *_sentence_parts(alert, period)]
    return sb.compose(parts, sb.MAX_HEADER)


def _sentence(alert: Alert, *, markup: bool) -> str:
    """The headline without a marker, with names cut shorter: for notifications."""
    parts = [
        Data(p.text, TEXT_NAME_CAP) if isinstance(p, Data) else p
        for p in _sentence_parts(alert, _period(alert.period))
    ]
    return sb.compose(parts, 400, markup=markup)


def _sentence_parts(alert: Alert, period: periods.Period | None) -> list[str | Data]:
    """support-bot-prod on gpt-4o at 82% of its $1,500 monthly budget (and its variants)."""
    who: list[str | Data] = _subject(alert)
    if alert.model:
        who += [" on ", Data(alert.model, NAME_CAP)]
    adjective = f"{periods.ADJECTIVES[period.name]} " if period else ""
    if alert.metric == "cost_usd":
        its = f"its {fmt.money_brief(alert.limit)} {adjective}budget"
    else:
        its = f"its {adjective}limit of {fmt.amount(alert.metric, alert.limit, brief=True)}"
    if alert.kind == "forecast" and alert.projected is not None:
        by = f" by {fmt.day(period.end - timedelta(days=1))}" if period else ""
        projected = fmt.amount(alert.metric, alert.projected, brief=True)
        return [*who, f" is on course for {projected}{by}, over {its}"]
    if alert.repeat and alert.ratio > 1:
        return [*who, f" is still over {its}, at {fmt.percent(alert.ratio)}"]
    if alert.repeat:
        return [*who, f" is still at {fmt.percent(alert.ratio)} of {its}"]
    return [*who, f" at {fmt.percent(alert.ratio)} of {its}"]


def _subject(alert: Alert) -> list[str | Data]:
    if alert.scope == "shared" or alert.api_key_id is None:
        return ["Shared pool ", Data(alert.budget, NAME_CAP)]
    return [Data(alert.api_key_name or alert.api_key_id, NAME_CAP)]


def _facts(alert: Alert, period: periods.Period | None, now: datetime) -> list[str]:
    """The fields: costwatch's own words and numbers only (mrkdwn), never names."""
    used = f"{fmt.amount(alert.metric, alert.used)} of {fmt.amount(alert.metric, alert.limit)}"
    label = {"cost_usd": "Spend", "requests": "Requests", "tokens": "Tokens"}.get(
        alert.metric, escape(alert.metric)
    )
    if alert.scope == "shared" or alert.api_key_id is None:
        label = f"Pool {label.lower()}"
    if alert.model:
        label += " on this model"
    facts = [f"*{label}*\n{used} ({fmt.percent(alert.ratio)})"]
    if alert.spend_usd is not None and (alert.metric != "cost_usd" or alert.model):
        facts.append(f"*Spend, all models*\n{fmt.money(alert.spend_usd)}")
    if alert.requests is not None and (alert.metric != "requests" or alert.model):
        facts.append(
            f"*Requests{', all models' if alert.model else ''}*\n{fmt.count(alert.requests)}"
        )
    facts.append(f"*Period*\n{_period_text(alert.period, period, now)}")
    if alert.projected is not None:
        facts.append(f"*Forecast*\n{_forecast_text(alert, period)}")
    if alert.previous_used is not None:
        change = alert.used - alert.previous_used
        sign = "+" if change >= 0 else "-"
        was = fmt.amount(alert.metric, alert.previous_used, brief=True)
        delta = fmt.amount(alert.metric, abs(change), brief=True)
        facts.append(f"*Since the last alert*\n{sign}{delta} (was {was})")
    return facts


def _period_text(key: str, period: periods.Period | None, now: datetime) -> str:
    if period is None:
        return sb.mrkdwn(key, 200)
    last = period.end - timedelta(days=1)
    days = (
        fmt.day(period.start)
        if period.name == "day"
        else f"{fmt.day(period.start)} to {fmt.day(last)}"
    )
    left = period.remaining(now)
    remaining = f"{fmt.span(left)} left" if left > timedelta(0) else "period ended"
    return f"{days} ({sb.mrkdwn(period.zone.key, 100)})\n{remaining}"


def _forecast_text(alert: Alert, period: periods.Period | None) -> str:
    assert alert.projected is not None
    by = f" by {fmt.day(period.end - timedelta(days=1))}" if period else ""
    text = f"On course for {fmt.amount(alert.metric, alert.projected, brief=True)}{by}"
    if alert.forecast_ratio is not None:
        text += f" ({fmt.percent(alert.forecast_ratio)})"
    if alert.overrun_at is not None and alert.used < alert.limit:
        when = alert.overrun_at.astimezone(period.zone) if period else alert.overrun_at
        text += f"\nover the limit around {fmt.day(when)}"
    if alert.forecast_method:  # costwatch's own words, but read back from the outbox
        text += f"\n{sb.mrkdwn(method_text(alert.forecast_method), 100)}"
    return text


def method_text(method: str) -> str:
    """How a forecast was made, for people: "from the trailing 14-day rate", "from the
    weekday/weekend rates", "linear since the period's start"."""
    return method if method.startswith("linear") else f"from the {method}"


def _about(alert: Alert) -> list[str | Data]:
    """The context line: budget, key, threshold, silence."""
    parts: list[str | Data] = ["Budget ", Data(alert.budget, NAME_CAP)]
    if alert.api_key_id is not None:
        parts += [" · key "]
        if alert.api_key_name:
            parts += [Data(alert.api_key_name, NAME_CAP), " (id ", Data(alert.api_key_id, 64), ")"]
        else:
            parts += [Data(alert.api_key_id, 64)]
    if alert.kind == "forecast":
        parts += [" · forecast to overrun"]
    else:
        again = ", repeated while over" if alert.repeat else ""
        parts += [f" · {escape(alert.severity)}, {alert.threshold:g}% threshold reached{again}"]
    if alert.silenced_by is not None:
        parts += [" · silenced: ", Data(alert.silenced_by, 200)]
    return parts


# --- operational and fallbacks ---------------------------------------------------------------


def _operational(notice: Operational, now: datetime) -> Rendered:
    failing = notice.kind == "exports_failing"
    title = (
        ":rotating_light: Langdock exports failing"
        if failing
        else ":white_check_mark: Langdock exports recovered"
    )
    line = _operational_line(notice, now)
    blocks = [sb.header(title), sb.section(sb.plain_text(line))]
    if failing:
        note = "Spend is unknown until an export succeeds: check the Langdock API key and status."
        blocks.append(sb.context([sb.mrkdwn_text(note)]))
    text = _operational_line(notice, now, markup=True)
    return Rendered(text=text, blocks=blocks)


def _other_line(notice: Notice) -> str:
    """A notice other than an alert, as one line of a digest."""
    if isinstance(notice, Operational):
        return _operational_line(notice)
    if isinstance(notice, Report):
        return str(render_report(notice).blocks[0]["text"]["text"])
    assert not isinstance(notice, Alert)
    return finding_line(notice)


def _operational_line(
    notice: Operational, now: datetime | None = None, *, markup: bool = False
) -> str:
    """Langdock exports failing since …, 3 cycles in a row (timeout); last good data …"""
    inert = sb.mrkdwn if markup else sb.plain
    since = _when(notice.failing_since, now)
    good = _when(notice.last_success, now, missing="none yet")
    cycles = inert(str(notice.failures), 20)
    reason = inert(notice.reason or "unknown reason", 200)
    if notice.kind == "exports_failing":
        return (
            f"Langdock exports failing since {since}, {cycles} cycles in a row ({reason}); "
            f"last good data {good}; budgets are not being checked."
        )
    since = _when(notice.failing_since, None)
    return (
        f"Langdock exports recovered after {cycles} failed cycles since {since} "
        f"(last reason: {reason}); budgets are being checked again."
    )


def _when(
    moment: datetime | None, now: datetime | None, *, missing: str = "an unknown time"
) -> str:
    if moment is None:
        return missing
    text = f"{fmt.stamp(moment)} {moment.tzname() or ''}".strip()
    if now is not None and moment.tzinfo is not None and now >= moment:
        text += f" ({fmt.span(now - moment)} ago)"
    return text


def _digest_line(alert: Alert) -> str:
    if alert.kind == "forecast":
        level = f"on course for {fmt.percent(alert.forecast_ratio or alert.ratio)}"
    else:
        level = ("still " if alert.repeat else "") + fmt.percent(alert.ratio)
    subject: list[str | Data] = (
        ["shared pool"]
        if alert.scope == "shared" or alert.api_key_id is None
        else [Data(alert.api_key_name or alert.api_key_id, 60)]
    )
    if alert.model:
        subject += [" on ", Data(alert.model, 40)]
    used = f"{fmt.amount(alert.metric, alert.used)} of {fmt.amount(alert.metric, alert.limit)}"
    parts = [f"{_marker(alert)} ", *subject, " · ", Data(alert.budget, 40), f" · {level} · {used}"]
    return sb.compose(parts, 400)


# --- helpers ---------------------------------------------------------------------------------


def _marker(alert: Alert) -> str:
    if alert.kind == "forecast":
        return FORECAST_MARKER
    return MARKERS.get(alert.severity, OTHER_MARKER)


def _rank(alert: Alert) -> int:
    return SEVERITY_ORDER.get(alert.severity, len(SEVERITY_ORDER))


def _severity_counts(alerts: Sequence[Alert]) -> str:
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert.severity] = counts.get(alert.severity, 0) + 1
    ordered = sorted(counts, key=lambda s: (SEVERITY_ORDER.get(s, 9), s))
    return ", ".join(f"{counts[s]:,} {sb.plain(s, 20)}" for s in ordered)


def _tags_line(alert: Alert, tags: Sequence[str]) -> str:
    """The mentions, the owner's after the budget's as "owner: ..." (mentions only: each tag
    is real mention syntax from the configuration, `blocks.mentions`)."""
    owner = [tag for tag in tags if tag in alert.owner_mention and tag not in alert.mention]
    others = [tag for tag in tags if tag not in owner]
    owned = f"owner: {' '.join(owner)}" if owner else ""
    return " · ".join(part for part in (" ".join(others), owned) if part)


def _tagline(tags: Sequence[str]) -> str:
    return f" {' '.join(tags)}" if tags else ""


def _period(key: str) -> periods.Period | None:
    try:
        return periods.from_key(key)
    except ValueError:
        return None


# --- terminal --------------------------------------------------------------------------------


def as_terminal_text(rendered: Rendered) -> str:
    """How the message reads in Slack, as plain lines for a terminal (`costwatch demo`)."""
    return sb.readable(rendered.blocks)
