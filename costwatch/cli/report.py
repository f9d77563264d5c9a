"""`costwatch report`: a period's spend report, printed (and with `--send`, posted to Slack).

The period is one of `reports.CHOICES` ("last-week", "this-month", ...) in the schedule's zone,
or a configured report's (`--report NAME`: its period, zone, top and channel). Its days and the
period's before it are read from the usage history; the days the store lacks are exported
from Langdock day by day (said on stderr), so the report is always of whole days, never of
part of the period taken for all of it. The budgets at risk come from one dry-run cycle at
`--now` (`check --dry-run`'s: the budgets' current periods, forecasts included). With
`workspaces:`, every workspace's days are read (each from its partition, the missing ones
exported with its own client: `held.read_each`) and joined: the org's totals, keys
"workspace/id" named "workspace/name"; a workspace whose export fails fails the report.

It writes no state: nothing exported is stored, nothing is recorded in the ledger, and a
scheduled report of the same period still goes out. `--send` posts the report once, now,
straight to Slack (its channel: the configured report's, else `slack.channel`), and records
nothing either; a period without use sends nothing.

Exit codes: 0 the report was printed (and sent); 2 the configuration, the state, an export
or Slack could not be used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from costwatch import cycle, reporting, reports
from costwatch.cli import arguments
from costwatch.cli.check import EXIT_ERROR, EXIT_OK, state_for
from costwatch.cli.reportformat import period_words, render_json, render_markdown, render_table
from costwatch.config import Config
from costwatch.config.reports import MAX_TOP, ReportConfig
from costwatch.errors import DeliveryError, ExportError, StateError, UsageError
from costwatch.reports import Report

__all__ = ["FORMATS", "add_command", "run_report"]

FORMATS = {"table": render_table, "markdown": render_markdown, "json": render_json}
SEND_TIMEOUT = 30.0  # seconds `--send` may take


def add_command(
    commands: Any, *, load: Callable[[Path], Config | None], parse_now: Callable[[str], datetime]
) -> None:
    """`costwatch report` added to the command parsers (`commands`: argparse's subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="a period's spend report: totals, change, top keys and models, risks, anomalies",
        description="Print a spend report of a closed period from the usage history (days it"
        " lacks are exported, not stored). Writes no state; --send also posts it to Slack once,"
        " now, recording nothing (the scheduled reports of `reports:` are the daemon's).",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="FILE")
    parser.add_argument(
        "--period",
        choices=[*reports.CHOICES, "last-day"],
        help="which days (default: the --report's period, else last-week); this-* are the"
        " running period's closed days so far",
    )
    parser.add_argument(
        "--report", dest="name", metavar="NAME", help="a report of the reports section"
    )
    parser.add_argument("--format", choices=list(FORMATS), default="table")
    parser.add_argument("--top", type=_top, metavar="N", help="keys and models listed (default 10)")
    parser.add_argument(
        "--now",
        type=parse_now,
        metavar="ISO",
        help="report as of this instant (ISO 8601; without an offset, in schedule.timezone)",
    )
    parser.add_argument(
        "--send", action="store_true", help="also post it to Slack now (nothing is recorded)"
    )

    def run(args: argparse.Namespace) -> int:
        config = load(args.config)  # with workspaces:, every one's history (`partitions.py`)
        if config is None:
            return EXIT_ERROR
        return run_report(
            config,
            period=args.period,
            name=args.name,
            output_format=args.format,
            now=args.now,
            send=args.send,
            top=args.top,
        )

    parser.set_defaults(run=run)


def _top(text: str) -> int:
    return arguments.whole(text, unit="keys and models", low=1, high=MAX_TOP)


def run_report(
    config: Config,
    *,
    period: str | None,
    name: str | None = None,
    output_format: str = "table",
    now: datetime | None = None,
    send: bool = False,
    top: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the report of `period` (default: the configured report's, else last week)."""
    configured = _configured(config, name)
    if name is not None and configured is None:
        names = ", ".join(r.name for r in config.reports) or "none are configured"
        print(f"costwatch: no report named {name!r} ({names})", file=sys.stderr)
        return EXIT_ERROR
    zone = configured.effective_zone(config.schedule.timezone) if configured else None
    zone = zone or config.schedule.zone
    now = datetime.now(UTC) if now is None else (now if now.tzinfo else now.replace(tzinfo=zone))
    choice = period or (f"last-{configured.every}" if configured else "last-week")
    if choice == "last-day":
        choice = "yesterday"
    try:
        span = reports.span(choice, zone, now)
    except ValueError as error:
        print(f"costwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    if send and config.slack is None:
        print("costwatch: --send needs a slack section", file=sys.stderr)
        return EXIT_ERROR
    try:
        report = _made(config, span, now, configured, top)
    except StateError as error:
        print(f"costwatch: {error}", file=sys.stderr)
        return EXIT_ERROR
    except WorkspaceFailed as failed:
        print(f"costwatch: workspace {failed.workspace}: {_failure(failed.error)}", file=sys.stderr)
        return EXIT_ERROR
    except (ExportError, UsageError) as error:
        print(f"costwatch: {_failure(error)}", file=sys.stderr)
        return EXIT_ERROR
    (sys.stdout if out is None else out).write(FORMATS[output_format](report))
    return _send(config, report) if send else EXIT_OK


class WorkspaceFailed(Exception):
    """A workspace's export failed in the report's cycle: the org's spend is not known."""

    def __init__(self, workspace: str, error: ExportError | UsageError) -> None:
        super().__init__(workspace)
        self.workspace, self.error = workspace, error


def _failure(error: ExportError | UsageError) -> str:
    if isinstance(error, ExportError):
        return f"the Langdock export failed ({error.reason}): {error}"
    return f"the export's data cannot be used: {error}"


def _configured(config: Config, name: str | None) -> ReportConfig | None:
    return next((r for r in config.reports if r.name == name), None)


def _made(
    config: Config,
    span: reports.Span,
    now: datetime,
    configured: ReportConfig | None,
    top: int | None,
) -> Report:
    """The report: the budgets' dry-run cycle, the span's days (missing ones exported)."""
    from costwatch import langdock  # noqa: PLC0415 (httpx loads only to export)

    with (
        state_for(config, dry_run=True) as state,
        langdock.connect_all(config) as clients,
    ):
        deps = cycle.Deps(config, clients=clients, state=state, dry_run=True)
        outcome = cycle.run_once(deps, now)
        if outcome.error is not None:
            raise outcome.error
        if outcome.failed_workspaces:  # a report never takes a workspace's spend for $0
            raise WorkspaceFailed(*next(iter(outcome.failed_workspaces.items())))

        def exporting(day: date, workspace: str) -> None:
            whose = f" in workspace {workspace}" if workspace else ""
            print(f"report: {day.isoformat()}{whose} is not stored: exporting it", file=sys.stderr)

        if config.keyed_by_workspace:  # every workspace's days, ids "workspace/id"
            days = reporting.read_days(state, config, span, clients=clients, progress=exporting)
        else:
            (client,) = clients.values()
            days = reporting.read_days(state, config, span, client, progress=exporting)
    if days.exported:  # the days exported for it (never stored)
        print(
            f"report: {period_words(span)}: {len(days.exported)} day(s) exported (not stored)",
            file=sys.stderr,
        )
    return reporting.make(
        config,
        span,
        days,
        outcome.findings,
        now,
        name=configured.name if configured else "",
        top=top or (configured.top if configured else 10),
        channel=configured.channel if configured else None,
        mention=configured.mention if configured else (),
    )


def _send(config: Config, report: Report) -> int:
    """Post the report now, straight to Slack (no outbox, no ledger)."""
    if not report.spent:
        print("costwatch: no use in the period: no report sent", file=sys.stderr)
        return EXIT_OK
    from costwatch import slack  # noqa: PLC0415 (slack_sdk loads only to send)
    from costwatch.deadline import Deadline  # noqa: PLC0415

    assert config.slack is not None
    channel = report.channel or config.slack.channel
    sender = slack.sender_from_config(config.slack, timeout=SEND_TIMEOUT)
    try:
        sender.post(channel, slack.render(report, now=report.at), Deadline.after(SEND_TIMEOUT))
    except DeliveryError as error:
        print(f"costwatch: Slack refused the report: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"report sent to {channel or 'the webhook channel'}", file=sys.stderr)
    return EXIT_OK
