"""One cycle of costwatch, as data flows (docs/architecture.md), and nothing else.

    export the to-date range of every period in use -> load -> evaluate budgets
    -> plan alerts against the ledger -> commit ledger + outbox + health at once

Everything that touches the outside world is handed in (`Deps`): the export client (or a saved
CSV), the state, and `now`. A failed export or unusable data never evaluates budgets: it
counts as a failed cycle for export health, and after enough of them an operational alert is
queued. Slack delivery and metrics read what this leaves behind.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from costwatch import alerts, budgets, health, notices, periods, usage
from costwatch.config import Config
from costwatch.context import with_context
from costwatch.errors import (
    ExportError,
    ExportInternalError,
    ExportPeriodError,
    StateError,
    Stopping,
    UsageError,
)
from costwatch.notices import Notice
from costwatch.periods import Period
from costwatch.state import Message, Store

if TYPE_CHECKING:  # httpx loads only where an export is made (`check --csv` needs none)
    from costwatch.langdock import ExportResult, LangdockClient

log = logging.getLogger("costwatch.cycle")


@dataclass(frozen=True)
class Fetched:
    """Usage for a period to date, and how it was obtained."""

    usage: usage.Usage
    export: ExportResult | None  # None when the range was empty and nothing was asked


@dataclass(frozen=True)
class Deps:
    """What a cycle reads from and writes to. `client` or `csv` provides the usage."""

    config: Config
    client: LangdockClient | None = None
    csv: Path | None = None
    state: Store | None = None  # None: plan against an empty ledger, record nothing
    dry_run: bool = False  # plan, but record nothing


@dataclass(frozen=True)
class Outcome:
    """What one cycle found and did."""

    now: datetime
    period: Period  # the default period (for the per-key spend report)
    usage: usage.Usage | None  # the default period's usage; None when the export failed
    source: str
    findings: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=budgets.FINDING_SCHEMA)
    )
    plan: alerts.Plan | None = None
    operational: health.Operational | None = None
    outbox_ids: tuple[int, ...] = ()
    unevaluated: tuple[budgets.Unevaluated, ...] = ()  # limits the export cannot evaluate
    error: ExportError | UsageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def crossed(self) -> bool:
        """Some finding has reached a threshold."""
        return bool(self.findings.height) and self.findings["level"].is_not_null().any()


def fetch_usage(client: LangdockClient, period: Period, now: datetime) -> Fetched:
    """Export [period start, now) in the period's zone and load it (404 parts = zero usage)."""
    end = min(now, period.end).astimezone(period.zone)
    if end.astimezone(UTC) <= period.start.astimezone(UTC):  # in one zone, < ignores the fold
        log.debug("period %s has not started yet; nothing to export", period.key())
        return Fetched(usage=usage.load([]), export=None)
    with tempfile.TemporaryDirectory(prefix="costwatch-export-") as workdir:
        result = client.export_api_keys(period.start, end, Path(workdir))
        files = [
            usage.ExportFile(
                part.path,
                first_day=part.first_day,
                last_day=part.last_day,
                record_count=part.record_count,
                shape=part.shape,
            )
            for part in result.parts
            if part.path is not None
        ]
        loaded = usage.load(files)
    log.debug(
        "exported %s to %s: %d part(s), %d row(s), %d API call(s)",
        period.start.isoformat(),
        end.isoformat(),
        len(result.parts),
        loaded.rows_read,
        result.api_calls,
    )
    return Fetched(usage=loaded, export=result)


def run_once(deps: Deps, now: datetime) -> Outcome:
    """One cycle at `now`: export, evaluate, plan, record.

    Never raises for a bad export, nor for any other exception of the export, the load, the
    evaluation or the plan: that is a failed cycle of reason "internal" (a bug), logged once
    with its traceback and counted like any failed export. Raised: StateError (nothing could be
    recorded) and Stopping (a shutdown cut the cycle short).
    """
    default_period = periods.current(deps.config.defaults.period, deps.config.schedule.zone, now)
    try:
        return _run_once(deps, now, default_period)
    except (ExportError, UsageError) as error:
        return _failed(deps, now, default_period, error)
    except (StateError, Stopping):
        raise
    except Exception as exc:  # every failure of a cycle is a typed one
        return _failed(deps, now, default_period, _internal(exc))


def _run_once(deps: Deps, now: datetime, default_period: Period) -> Outcome:
    config = deps.config
    rules = budgets.rules(config, now)
    ranges = budgets.export_ranges(rules)
    default_key = budgets.export_key(default_period)
    ranges.setdefault(default_key, default_period)
    usages, source = _usage_for(deps, ranges, now)
    frames = {key: u.frame for key, u in usages.items()}
    evaluation = budgets.evaluate(rules, frames, now)
    findings = evaluation.findings
    unevaluated = tuple(budgets.unevaluated(rules, frames, evaluation))
    if unevaluated:
        log.warning(
            "%d budget limit(s) not evaluated: %s",
            len(unevaluated),
            "; ".join(item.describe() for item in unevaluated),
        )
    period_keys = [r.period.key() for r in rules]

    def planned(ledger: Mapping[alerts.LedgerKey, alerts.LedgerEntry]) -> Outcome:
        by_name = {rule.name: rule for rule in rules}
        plan = alerts.plan(findings, by_name, ledger, config.silences, now)  # in columns
        return Outcome(
            now=now,
            period=default_period,
            usage=usages[default_key],
            source=source,
            findings=findings,
            plan=with_context(plan, rules, usages, evaluation.selected),
            unevaluated=unevaluated,
        )

    if deps.state is None or deps.dry_run:
        return planned(deps.state.ledger(period_keys) if deps.state else {})
    # The ledger read and the commit in one transaction: no other writer can plan in between.
    with deps.state.transaction() as transaction:
        outcome = planned(transaction.ledger(period_keys))
        assert outcome.plan is not None
        new_health, operational = (
            health.succeeded(transaction.export_health(), now) if deps.csv is None else (None, None)
        )
        # "Exports recovered" goes first: it explains why alerts arrive again.
        messages = [] if operational is None else [_message(operational, config)]
        messages += [_message(alert, config) for alert in outcome.plan.alerts]
        ids = transaction.commit(
            now=now,
            ledger=outcome.plan.ledger,
            messages=messages,
            health=new_health,
        )
    deps.state.prune(now, config.state.retention)
    return dataclasses.replace(outcome, operational=operational, outbox_ids=tuple(ids))


def _usage_for(
    deps: Deps, ranges: Mapping[str, Period], now: datetime
) -> tuple[dict[str, usage.Usage], str]:
    if deps.csv is not None:
        return dict.fromkeys(ranges, _saved_export(deps.csv, ranges, now)), f"file {deps.csv}"
    if deps.client is None:
        raise ValueError("a cycle needs an export client or a CSV file")
    fetched = {key: fetch_usage(deps.client, period, now) for key, period in ranges.items()}
    return {key: f.usage for key, f in fetched.items()}, _describe(fetched.values())


def _saved_export(path: Path, ranges: Mapping[str, Period], now: datetime) -> usage.Usage:
    """`check --csv`: one saved export for every range in use, refused (as a live export is)
    when its period_start/period_end lie outside the period to date at `now` of any of them:
    November's export read on 3 December would forecast December from November's spend."""
    if len(ranges) > 1:
        log.warning("--csv: one saved export stands in for %d different period ranges", len(ranges))
    first = max(period.first_day for period in ranges.values())
    last = min(_last_day_to_date(period, now) for period in ranges.values())
    try:
        return usage.load_csv(path, first_day=first, last_day=max(first, last))
    except ExportPeriodError as error:
        names = " and ".join(sorted({period.name for period in ranges.values()}))
        raise UsageError(
            f"{error}: that is the {names} to date at {now.isoformat()} (--now); "
            "give a --now inside the file's period, or a file of the current one"
        ) from error


def _last_day_to_date(period: Period, now: datetime) -> date:
    """The local date of the last instant of [period start, now)."""
    end = min(now, period.end).astimezone(UTC) - timedelta(milliseconds=1)
    return end.astimezone(period.zone).date()


def _internal(exc: Exception) -> ExportInternalError:
    """An unexpected exception as a failed cycle; its traceback is logged here, once. The
    message names the exception's type and where it was raised, never its text (which might
    quote what was being sent)."""
    log.error("the cycle failed unexpectedly; this is a bug", exc_info=exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return ExportInternalError(
        f"unexpected {type(exc).__name__}{where} (a bug: the traceback is in the log)"
    )


def _failed(deps: Deps, now: datetime, period: Period, error: ExportError | UsageError) -> Outcome:
    reason = error.reason if isinstance(error, ExportError) else "usage"
    log.error("export failed (%s): %s", reason, error)
    operational = None
    ids: list[int] = []
    if deps.state is not None and not deps.dry_run and deps.csv is None:
        with deps.state.transaction() as transaction:  # read, count and write as one
            new_health, operational = health.failed(
                transaction.export_health(),
                reason,
                now,
                deps.config.langdock.failures_before_alert,
            )
            messages = [] if operational is None else [_message(operational, deps.config)]
            ids = transaction.commit(now=now, messages=messages, health=new_health)
    return Outcome(
        now=now,
        period=period,
        usage=None,
        source="export failed",
        operational=operational,
        outbox_ids=tuple(ids),
        error=error,
    )


def _describe(fetched: Iterable[Fetched]) -> str:
    exported = [f for f in fetched if f.export is not None]
    if not exported:
        return "nothing exported (the period has just begun)"
    rows = sum(f.usage.rows_read for f in exported)
    parts = sum(len(f.export.parts) for f in exported if f.export is not None)
    columns = sorted({f.usage.model_column for f in exported if f.usage.model_column})
    split = f", {parts} parts" if parts > len(exported) else ""
    column = f", model column {columns[0]!r}" if columns else ""
    ranges = f" of {len(exported)} ranges" if len(exported) > 1 else ""
    return f"Langdock export{ranges} ({rows:,} rows{split}{column})"


def _message(notice: Notice, config: Config) -> Message:
    """The outbox row for `notice`: its own channel (an alert's budget may name one), else the
    configured default channel."""
    own = notice.channel if isinstance(notice, alerts.Alert) else None
    default = config.slack.channel if config.slack is not None else None
    return Message(
        kind=notices.kind(notice), channel=own or default, payload=notices.payload(notice)
    )
