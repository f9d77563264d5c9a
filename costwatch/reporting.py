"""Spend reports from the usage history: the days read (and, for `costwatch report`, the
missing ones exported), the report made (`reports.py`), and in the daemon's cycle the reports
due now.

    read_days(history, config, span, client=None) -> held.Days    a span's days and the detectors'
                                (`clients` by workspace with `workspaces:`: every one's, joined)
    make(config, span, days, findings, now, ...) -> Report   the report, pure from here on
    due(store, config, findings, now) -> [Report]            the reports due, not sent yet
    unsent(transaction, reports) -> [Report]                 those still unsent, in the cycle's
    record(transaction, reports, now)                        transaction: never again

The span and the period before it (for the comparison) are read from the store; a day it lacks
is exported (`held.py`: never stored) when a client is given (the command), else it stays missing:
the daemon waits for the keeper to store it and never reports part of a period as the whole.
The detectors' windows before the span are read as stored (a day not stored is unknown to
them, as in a cycle).

A configured report is due from the first `at` after its period's end until the next period
ends (then that one's report is the due one); it is sent once per period: a notice
`NoticeKey("report", name, period key)` in the ledger, recorded in the transaction that queues
it (`record`), so a restart, a second replica or the next cycle never sends it twice. A report
reads weeks of days, so it is made before that transaction (`due`, reading only) and checked
again inside it (`unsent`). A period
without use is recorded too, and nothing is queued for it. The record is kept `retention`
after the period's end (`state/notices.py`); a report is never due once its record could be
gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from costwatch import detecting, held, partitions, reports
from costwatch.config import Config
from costwatch.config.reports import ReportConfig
from costwatch.reports import Report, Span
from costwatch.state.base import History, NoticeKey, Store, Transaction

if TYPE_CHECKING:  # httpx loads only where an export is made
    from costwatch.langdock import LangdockClient

__all__ = ["days_needed", "due", "make", "notice", "read_days", "record", "unsent"]

log = logging.getLogger("costwatch.reporting")


def read_days(
    history: History | None,
    config: Config,
    span: Span,
    client: LangdockClient | None = None,
    *,
    clients: Mapping[str, LangdockClient] | None = None,
    progress: Callable[[date, str], None] | None = None,
) -> held.Days:
    """The stored days of `span`, of the period before it and of the detectors' windows; with
    `client`, the days of the span and of the period before that the store lacks exported
    (`held.py`; `progress` is told each day, and its workspace, before its export). With
    `clients` (by workspace, `workspaces:`), `history` is the store: every workspace's days
    from its partition, each exported with its own client, joined (`held.read_each`)."""
    previous = span.previous()
    wanted = held.Wanted(first_read(config, span), span.last, (*previous.days, *span.days))

    def told(step: held.Step) -> None:
        if progress is not None and step.fetched is None:
            progress(step.day, step.workspace)

    if clients is not None:
        (days,) = held.read_each(history, {span.zone: wanted}, clients, progress=told).values()
        return days
    (days,) = held.read(history, {span.zone: wanted}, client, progress=told).values()
    return days


def make(
    config: Config,
    span: Span,
    days: held.Days,
    findings: pl.DataFrame | None,
    now: datetime,
    *,
    name: str = "",
    top: int = 10,
    channel: str | None = None,
    mention: tuple[str, ...] = (),
) -> Report:
    """The report of `span` (ValueError when a day of it is not covered)."""
    window = detecting.window_days(config)
    detected = reports.findings_of(config, days.usage, span, days.covered, window)
    return reports.build(
        span,
        days.usage,
        days.covered,
        at=now,
        findings=findings,
        detected=detected,
        top=top,
        name=name,
        channel=channel,
        mention=mention,
    )


def due(store: Store, config: Config, findings: pl.DataFrame, now: datetime) -> list[Report]:
    """The configured reports due at `now` and not sent yet, made from the store, with the
    budgets at risk of `findings` (the cycle's evaluation at `now`). A report whose period
    has a day the store lacks waits (logged, with the days); one of a period without use is
    returned too (the caller records it, and sends nothing)."""
    out = []
    for report in config.reports:
        span = period_of(report, config, now)
        if (
            now < reports.due_at(span, *report.due)
            or span.period.end <= now - config.state.retention
        ):
            continue
        if store.notices_sent([notice(report.name, span)]):
            continue
        history = partitions.joined(store, config)
        # which days are stored is one cheap query; the usage is read once they all are
        absent = reports.missing(span, history.stored_days(span.zone, span.first, span.last))
        if absent:
            log.info(
                "report %r of %s waits: %d day(s) not stored yet (%s)",
                report.name,
                span.key,
                len(absent),
                ", ".join(day.isoformat() for day in absent[:7]),
            )
            continue
        made = make(
            config,
            span,
            read_days(history, config, span),
            findings,
            now,
            name=report.name,
            top=report.top,
            channel=report.channel,
            mention=report.mention,
        )
        if not made.spent:
            log.info("report %r of %s: no use in the period, nothing sent", report.name, span.key)
        out.append(made)
    return out


def unsent(transaction: Transaction, made: list[Report]) -> list[Report]:
    """Those of `made` not recorded as sent, as the transaction sees it."""
    sent = transaction.notices_sent(notice(r.name, r.span) for r in made)
    return [r for r in made if notice(r.name, r.span) not in sent]


def record(transaction: Transaction, made: list[Report], now: datetime) -> None:
    """Record each report as sent for its period (in the caller's transaction)."""
    transaction.record_notices((notice(r.name, r.span) for r in made), now)


def notice(name: str, span: Span) -> NoticeKey:
    """The notice a configured report is sent once as, per period."""
    return NoticeKey(kind="report", subject=name, period=span.key)


def period_of(report: ReportConfig, config: Config, now: datetime) -> Span:
    """The period a configured report covers at `now`: the last whole one."""
    return reports.last_whole(report.every, report.effective_zone(config.schedule.timezone), now)


def days_needed(config: Config, now: datetime) -> int:
    """How many closed days back the configured reports read at `now` (their period and the
    one before): the keeper keeps at least these stored. 0 without reports."""
    needed = 0
    for report in config.reports:
        span = period_of(report, config, now)
        first = min(
            span.previous().first, span.first - timedelta(days=detecting.window_days(config))
        )
        needed = max(needed, (now.astimezone(span.period.zone).date() - first).days)
    return needed


def first_read(config: Config, span: Span) -> date:
    """The first day a report of `span` reads: its previous period's, or the detectors'
    window before its first day, whichever is earlier."""
    window = timedelta(days=detecting.window_days(config))
    return min(span.previous().first, span.first - window)
