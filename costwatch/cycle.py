"""One cycle of costwatch, as data flows (docs/architecture.md), and nothing else.

    the usage of every period in use to date (`gather.py`: per zone, today's export + the
    stored closed days, or period exports while the history is incomplete) -> evaluate
    budgets -> plan alerts against the ledger -> commit ledger + outbox + health at once

Everything that touches the outside world is handed in (`Deps`): the export client (or a saved
CSV), the state, and `now`. A failed export or unusable data never evaluates budgets: it
counts as a failed cycle for export health, and after enough of them an operational alert is
queued. Slack delivery and metrics read what this leaves behind.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from costwatch import (
    alerts,
    budgets,
    detecting,
    fetch,
    forecast,
    gather,
    health,
    notices,
    owning,
    partitions,
    periods,
    recent,
    reporting,
    usage,
    workspaces,
)
from costwatch.config import Config
from costwatch.context import with_context
from costwatch.detect import Finding
from costwatch.errors import (
    ExportError,
    ExportInternalError,
    StateError,
    Stopping,
    UsageError,
)
from costwatch.notices import Notice
from costwatch.periods import Period
from costwatch.reports import Report
from costwatch.state import Message, Store, Transaction
from costwatch.state.base import Days, History

if TYPE_CHECKING:  # httpx loads only where an export is made (`check --csv` needs none)
    from costwatch.langdock import LangdockClient

log = logging.getLogger("costwatch.cycle")


@dataclass(frozen=True)
class Deps:
    """What a cycle reads from and writes to. `client`, `source` or `csv` provides the usage;
    for a file with `workspaces:`, `clients` or `sources` (by workspace name)."""

    config: Config
    client: LangdockClient | None = None
    source: fetch.Source | None = None  # instead of `client`: a backtest's held days
    clients: Mapping[str, LangdockClient] = field(default_factory=dict)
    sources: Mapping[str, fetch.Source] = field(default_factory=dict)  # instead: held days
    csv: Path | None = None
    state: Store | None = None  # None: plan against an empty ledger, record nothing
    recent_days: recent.Cache | None = None  # stored days already read (the daemon keeps one)
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
    exported_rows: int = 0  # data rows read from Langdock's exports in this cycle
    stored_days: int = 0  # closed days of the default period read from the store
    detected: tuple[Finding, ...] = ()  # the detectors' findings queued (`detecting`)
    # Workspaces whose export failed while others' did not (their budgets are `unevaluated`).
    failed_workspaces: Mapping[str, ExportError | UsageError] = field(default_factory=dict)
    reports: tuple[Report, ...] = ()  # the scheduled reports queued (`reporting`)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def kinds(self) -> list[str]:
        """The kinds of the detectors' findings it queued (`detected`)."""
        return [finding.kind for finding in self.detected]

    @property
    def failed_reasons(self) -> list[str]:
        """Why each workspace of `failed_workspaces` failed (metric labels)."""
        return [_reason(error) for error in self.failed_workspaces.values()]

    @property
    def crossed(self) -> bool:
        """Some finding has reached a threshold."""
        return bool(self.findings.height) and self.findings["level"].is_not_null().any()


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
    gathered, failed = _gather(deps, ranges, now, default_key)
    rules, unread = workspaces.reading(config, rules, failed)
    usages = gathered.usages
    frames = {key: u.frame for key, u in usages.items()}
    evaluation = budgets.evaluate(rules, frames, now, _recent_days(deps, rules, now))
    findings = evaluation.findings
    unevaluated = (
        *budgets.unevaluated(rules, frames, evaluation),
        *workspaces.unevaluated(unread),
    )
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
            source=gathered.source,
            exported_rows=gathered.exported_rows,
            stored_days=gathered.stored_days,
            findings=findings,
            plan=owning.with_owners(
                with_context(plan, rules, usages, evaluation.selected),
                rules,
                config.owners,
                usages,
                evaluation.selected,
            ),
            unevaluated=unevaluated,
            failed_workspaces=failed,
        )

    if deps.state is None or deps.dry_run:
        return planned(deps.state.ledger(period_keys) if deps.state else {})
    # Reports read weeks of stored days: made before the transaction, which keeps them unsent.
    due = _reports(deps.state, config, findings, now) if deps.csv is None else []
    # The ledger read and the commit in one transaction: no other writer can plan in between.
    with deps.state.transaction() as transaction:
        outcome = planned(transaction.ledger(period_keys))
        assert outcome.plan is not None
        new_health, operational = _health(deps, transaction, failed, now)
        # "Exports recovered" goes first: it explains why alerts arrive again.
        messages = [] if operational is None else _messages(operational, config)
        messages += [m for alert in outcome.plan.alerts for m in _messages(alert, config)]
        read_before = deps.recent_days.frames if deps.recent_days is not None else None
        detected = _detected(transaction, config, gathered, now, read_before)
        messages += [m for finding in detected for m in _messages(finding, config)]
        made = reporting.unsent(transaction, due)
        messages += [m for report in made if report.spent for m in _messages(report, config)]
        ids = transaction.commit(
            now=now,
            ledger=outcome.plan.ledger,
            messages=messages,
            health=new_health,
        )
        detecting.record(transaction, detected, now)
        reporting.record(transaction, made, now)
    deps.state.prune(now, config.state.retention)
    return dataclasses.replace(
        outcome,
        operational=operational,
        outbox_ids=tuple(ids),
        detected=detected,
        reports=tuple(r for r in made if r.spent),
    )


def _health(
    deps: Deps,
    transaction: Transaction,
    failed: Mapping[str, ExportError | UsageError],
    now: datetime,
) -> tuple[health.ExportHealth | None, health.Operational | None]:
    """Export health after a cycle that evaluated: a success, or a failure while the export of
    some workspace failed (counted toward that workspace's `failures_before_alert`)."""
    if deps.csv is not None:
        return None, None
    if not failed:
        return health.succeeded(transaction.export_health(), now)
    name, error = next(iter(failed.items()))
    after = next(c.langdock for c in deps.config.connections if c.name == name)
    reason = f"{_reason(error)} in workspace {name}"  # the "exports failing" alert names it
    return health.failed(transaction.export_health(), reason, now, after.failures_before_alert)


def _reason(error: ExportError | UsageError) -> str:
    return error.reason if isinstance(error, ExportError) else "usage"


def _reports(store: Store, config: Config, findings: pl.DataFrame, now: datetime) -> list[Report]:
    """The scheduled reports due now (`reporting.py`); none, logged with the traceback, when
    making them fails: a report never keeps a budget alert from going out."""
    if not config.reports or not config.history.enabled:
        return []
    try:
        return reporting.due(store, config, findings, now)
    except Exception:
        log.exception("the scheduled reports failed; budget alerts go out without them")
        return []


def _detected(
    transaction: Transaction,
    config: Config,
    gathered: gather.Gathered,
    now: datetime,
    frames: recent.Frames | None,
) -> tuple[Finding, ...]:
    """The detectors' findings due now; none, logged with the traceback, when they fail: a
    detector never keeps a budget alert from going out."""
    try:
        history: Days = transaction
        if config.keyed_by_workspace:  # every workspace's days, ids qualified
            history = partitions.JoinedDays(transaction, [c.name for c in config.connections])
        return detecting.due(history, config, gathered.today, now, frames)
    except Exception:
        log.exception("the detectors failed; budget alerts go out without them")
        return ()


def _recent_days(
    deps: Deps, rules: Sequence[budgets.Rule], now: datetime
) -> dict[str, forecast.Daily]:
    """The stored days the forecasts read (`recent.py`); none for a saved file (`check --csv`
    never touches the store), without a state or with the history off: linear forecasts."""
    if deps.csv is not None or deps.state is None or not deps.config.history.enabled:
        return {}
    history = partitions.joined(deps.state, deps.config)  # every workspace's, ids qualified
    return recent.read(history, rules, now, deps.recent_days)


def _gather(
    deps: Deps, ranges: Mapping[str, Period], now: datetime, default: str
) -> tuple[gather.Gathered, dict[str, ExportError | UsageError]]:
    """The usage of every range and the workspaces whose export failed (only while another's
    did not): a saved file, the history and today's export, exports of the periods to date
    (no state, or `history.enabled: false`), each workspace's alike (`workspaces:`, each from
    its own partition of the store: `partitions.py`)."""
    if deps.csv is not None:
        return gather.saved_export(deps.csv, ranges, now), {}
    state = deps.state if deps.config.history.enabled else None

    def from_history(source: fetch.Source, history: History) -> gather.Gathered:
        if state is None:
            return gather.from_exports(source, ranges, now)
        return gather.from_store_or_exports(
            source,
            history,
            ranges,
            now,
            deps.config.history,
            default=default,
            write=not deps.dry_run,
        )

    if deps.config.keyed_by_workspace:
        sources = dict(deps.sources) or {
            name: fetch.Exports(client) for name, client in deps.clients.items()
        }
        if state is None:
            return gather.from_workspaces(sources, ranges, now)
        return gather.from_workspaces(
            sources,
            ranges,
            now,
            lambda name, source: from_history(source, partitions.Partition(state, name)),
        )
    client = deps.client or next(iter(deps.clients.values()), None)
    source = deps.source or (fetch.Exports(client) if client is not None else None)
    if source is None:
        raise ValueError("a cycle needs an export client, a source or a CSV file")
    if state is None:
        return gather.from_exports(source, ranges, now), {}
    return from_history(source, state), {}


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
                min(c.langdock.failures_before_alert for c in deps.config.connections),
            )
            messages = [] if operational is None else _messages(operational, deps.config)
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


def _messages(notice: Notice, config: Config) -> list[Message]:
    """The outbox rows for `notice`: one per channel it goes to (`owning.routes`: its own, else
    the configured default, and its owner's)."""
    default = config.slack.channel if config.slack is not None else None
    kind, payload = notices.kind(notice), notices.payload(notice)
    return [Message(kind, channel, payload) for channel in owning.routes(notice, default)]
