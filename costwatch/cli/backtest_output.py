"""What `costwatch backtest` prints: a table for people, Markdown for an issue or a pull
request, and JSON (an interface: fields are added, never removed or renamed; docs/backtest.md
lists them). Pure.

Every alert line says when (the replayed cycle, local time of `schedule.timezone`), which
budget, subject, model and metric, which threshold (or forecast, or a repeat), the use against
the limit, and the channel; the totals say how many alerts, to which channels, per budget, and
the first 100 %. Names from the export are data: control characters are blanked, and in
Markdown the characters that would break a table cell are escaped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from costwatch import fmt, notices
from costwatch.alerts import Alert
from costwatch.cli.output import iso, printable
from costwatch.replayed import Fired, Replay

__all__ = ["Backtest", "Totals", "render_json", "render_markdown", "render_table", "totals"]

INTRADAY = (
    "the open day's stored usage times the share of the day gone by at each point"
    " (the history holds days, not hours)"
)
AT_WORDS = {
    "day-end": "each day's last cycle of the schedule",
    "cycles": "every cycle of the schedule",
    "hourly": "every hour",
}
NO_CHANNEL = "(default)"  # no channel of its own nor slack.channel: the webhook's


@dataclass(frozen=True)
class Backtest:
    """A finished backtest: what was asked, what the replay found, where the days came from."""

    config: str
    first: date
    last: date
    zone: ZoneInfo
    at: str  # a key of AT_WORDS
    replay: Replay
    stored_days: int  # read from the state
    exported_days: int  # exported from Langdock for the replay, not stored


@dataclass(frozen=True)
class Totals:
    alerts: int
    by_channel: list[tuple[str | None, int]]  # most alerts first
    by_budget: list[tuple[str, int]]  # most alerts first
    by_alert: list[tuple[str, int]]  # "50%", "100% repeat", "forecast" ...
    first_full: Fired | None  # the first actual alert at 100 % or more
    findings: int
    findings_by_kind: list[tuple[str, int]]


def totals(replay: Replay) -> Totals:
    alerts = replay.alerts
    full = [f for f in alerts if _alert(f).kind == "actual" and _alert(f).threshold >= 100]
    return Totals(
        alerts=len(alerts),
        by_channel=Counter(f.channel for f in alerts).most_common(),
        by_budget=Counter(_alert(f).budget for f in alerts).most_common(),
        by_alert=Counter(alert_word(_alert(f)) for f in alerts).most_common(),
        first_full=full[0] if full else None,
        findings=len(replay.findings),
        findings_by_kind=Counter(f.kind for f in replay.findings).most_common(),
    )


def _alert(fired: Fired) -> Alert:
    assert isinstance(fired.notice, Alert)
    return fired.notice


def alert_word(alert: Alert) -> str:
    """80%, 100% repeat, forecast."""
    if alert.kind == "forecast":
        return "forecast"
    level = f"{alert.threshold:g}%"
    return f"{level} repeat" if alert.repeat else level


def headline(report: Backtest, sums: Totals) -> str:
    """This file would have sent 41 alerts from 2026-10-01 to 2026-12-31, 23 of them to
    #ai-spend; the first 100% on 2026-10-12."""
    span = f"from {report.first} to {report.last}"
    if not sums.alerts:
        return f"This file would have sent no budget alert {span}."
    text = f"This file would have sent {_plural(sums.alerts, 'alert')} {span}"
    channel, count = sums.by_channel[0]
    if len(sums.by_channel) > 1 or channel is not None:
        text += f", {count} of them to {channel or NO_CHANNEL}"
    if sums.first_full is not None:
        text += f"; the first 100% on {_day(sums.first_full.at, report.zone)}"
    return text + "."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _day(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).date().isoformat()


def _when(moment: datetime, zone: ZoneInfo) -> str:
    return fmt.stamp(moment.astimezone(zone))


def _intro(report: Backtest) -> list[str]:
    replay = report.replay
    days = f"{report.stored_days} day(s) from the state"
    if report.exported_days:
        days += f", {report.exported_days} exported from Langdock (not stored)"
    return [
        f"Backtest of {report.config} from {report.first} to {report.last} in"
        f" {report.zone.key}: {len(replay.points)} point(s), at {AT_WORDS[report.at]}",
        f"Usage: {days}; within a day, {INTRADAY}",
    ]


# -- the table ----------------------------------------------------------------------------------

ALERT_HEADER = ("WHEN", "BUDGET", "SUBJECT", "MODEL", "METRIC", "ALERT", "USED / LIMIT", "CHANNEL")
FINDING_HEADER = ("WHEN", "FINDING", "SUBJECT", "CHANNEL")


def _alert_cells(fired: Fired, zone: ZoneInfo) -> tuple[str, ...]:
    alert = _alert(fired)
    subject = (
        "shared" if alert.api_key_id is None else printable(alert.api_key_name or alert.subject)
    )
    return (
        _when(fired.at, zone),
        printable(alert.budget),
        subject,
        printable(alert.model or "") or "-",
        alert.metric,
        alert_word(alert),
        f"{fmt.amount(alert.metric, alert.used)} / {fmt.amount(alert.metric, alert.limit)}"
        f" ({fmt.percent(alert.ratio)})",
        fired.channel or NO_CHANNEL,
    )


def finding_subject(fired: Fired) -> str:
    """The key (and model) or the model a detector's finding is about; a report's name."""
    found = notices.payload(fired.notice)
    if fired.kind == "report":
        return printable(str(found.get("name") or "report"))
    name = found.get("api_key_name") or found.get("api_key_id")
    model = found.get("model")
    if name and model:
        return f"{printable(str(name))} / {printable(str(model))}"
    return printable(str(name or model or "-"))


def finding_word(fired: Fired) -> str:
    """anomaly (cost_usd), unit_cost (zero_cost), new_key."""
    found = notices.payload(fired.notice)
    detail = found.get("metric") or found.get("change")
    if fired.kind == "report":  # its period: report (week)
        detail = (found.get("span") or {}).get("name")
    return f"{fired.kind} ({detail})" if detail else fired.kind


def _finding_cells(fired: Fired, zone: ZoneInfo) -> tuple[str, ...]:
    return (
        _when(fired.at, zone),
        finding_word(fired),
        finding_subject(fired),
        fired.channel or NO_CHANNEL,
    )


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _count_line(label: str, counts: Sequence[tuple[str | None, int]]) -> str:
    return f"{label}: " + ", ".join(f"{name or NO_CHANNEL} {n}" for name, n in counts)


def render_table(report: Backtest) -> str:
    zone, replay, sums = report.zone, report.replay, totals(report.replay)
    lines = [*_intro(report), ""]
    if replay.alerts:
        lines += _columns(ALERT_HEADER, [_alert_cells(f, zone) for f in replay.alerts])
        lines.append("")
    lines.append(headline(report, sums))
    if sums.alerts:
        lines += [
            _count_line("Per channel", sums.by_channel),
            _count_line("Per budget", sums.by_budget),
            _count_line("Per alert", sums.by_alert),
        ]
    if replay.silenced:
        lines.append(f"Held by silences: {_plural(len(replay.silenced), 'alert')}")
    if replay.findings:
        lines += ["", f"The detectors would have sent {_plural(sums.findings, 'finding')}:"]
        lines += _columns(FINDING_HEADER, [_finding_cells(f, zone) for f in replay.findings])
    return "\n".join(lines) + "\n"


# -- Markdown -----------------------------------------------------------------------------------


def _md(cell: str) -> str:
    """A table cell's text: pipes, backslashes, backticks and HTML/mention brackets escaped."""
    for char in ("\\", "|", "`", "*", "_", "<", ">", "[", "]"):
        cell = cell.replace(char, "\\" + char)
    return cell


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(report: Backtest) -> str:
    zone, replay, sums = report.zone, report.replay, totals(report.replay)
    lines = [
        f"## Backtest: {_md(report.config)}",
        "",
        *(f"{_md(line)}  " for line in _intro(report)),
    ]
    lines += ["", f"**{_md(headline(report, sums))}**", ""]
    if replay.alerts:
        lines += _md_table(ALERT_HEADER, [_alert_cells(f, zone) for f in replay.alerts])
        lines += ["", _md(_count_line("Per channel", sums.by_channel)) + "  "]
        lines += [_md(_count_line("Per budget", sums.by_budget)) + "  "]
        lines += [_md(_count_line("Per alert", sums.by_alert)), ""]
    if replay.silenced:
        lines += [f"Held by silences: {_plural(len(replay.silenced), 'alert')}", ""]
    if replay.findings:
        lines += [f"The detectors would have sent {_plural(sums.findings, 'finding')}:", ""]
        lines += _md_table(FINDING_HEADER, [_finding_cells(f, zone) for f in replay.findings])
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# -- JSON ---------------------------------------------------------------------------------------

ALERT_FIELDS = (
    "budget",
    "scope",
    "api_key_id",
    "api_key_name",
    "model",
    "metric",
    "kind",
    "threshold",
    "severity",
    "repeat",
    "used",
    "limit",
    "ratio",
    "projected",
    "forecast_ratio",
    "forecast_method",
    "period",
    "previous_used",
)


def _alert_json(at: datetime, channel: str | None, alert: Alert, zone: ZoneInfo) -> dict[str, Any]:
    values: dict[str, Any] = {"at": iso(at), "day": _day(at, zone), "channel": channel}
    values.update({name: getattr(alert, name) for name in ALERT_FIELDS})
    values["overrun_at"] = iso(alert.overrun_at)
    return values


def render_json(report: Backtest) -> str:
    zone, replay, sums = report.zone, report.replay, totals(report.replay)
    first = sums.first_full
    document = {
        "config": report.config,
        "from": report.first.isoformat(),
        "to": report.last.isoformat(),
        "timezone": zone.key,
        "at": report.at,
        "points": len(replay.points),
        "intraday": "pro rata",
        "history": {"stored_days": report.stored_days, "exported_days": report.exported_days},
        "alerts": [_alert_json(f.at, f.channel, _alert(f), zone) for f in replay.alerts],
        "silenced": [
            {
                **_alert_json(at, alert.channel, alert, zone),
                "silenced_by": alert.silenced_by,
                "silenced_until": iso(alert.silenced_until),
            }
            for at, alert in replay.silenced
        ],
        "findings": [
            {
                "at": iso(f.at),
                "day": _day(f.at, zone),
                "kind": f.kind,
                "channel": f.channel,
                "finding": notices.payload(f.notice),
            }
            for f in replay.findings
        ],
        "totals": {
            "alerts": sums.alerts,
            "by_channel": [{"channel": c, "alerts": n} for c, n in sums.by_channel],
            "by_budget": [{"budget": b, "alerts": n} for b, n in sums.by_budget],
            "by_alert": [{"alert": a, "alerts": n} for a, n in sums.by_alert],
            "first_100": None
            if first is None
            else {"at": iso(first.at), "day": _day(first.at, zone), "budget": _alert(first).budget},
            "findings": sums.findings,
            "findings_by_kind": [{"kind": k, "findings": n} for k, n in sums.findings_by_kind],
        },
        "unevaluated": list(replay.unevaluated),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
