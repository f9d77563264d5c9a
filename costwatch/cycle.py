"""One cycle of costwatch, as data flows (DESIGN.md), and nothing else.

    export the to-date range of every period in use -> load -> evaluate budgets
    -> plan alerts against the ledger -> commit ledger + outbox + history + health at once

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from costwatch import alerts, budgets, health, periods, report, usage
from costwatch.config import Config
from costwatch.deadline import Stopping
from costwatch.errors import (
    ExportError,
    ExportInternalError,
    ExportPeriodError,
    StateError,
    UsageError,
)
from costwatch.langdock import ExportResult, LangdockClient
from costwatch.periods import Period
from costwatch.report import Pending
from costwatch.state import BudgetHistoryRow, Message, OutboxItem, Store

log = logging.getLogger("costwatch.cycle")

# An alert subject's spend, requests and top (model, spend) pairs.
_Context = tuple[float, float, tuple[tuple[str, float], ...]]


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
    findings, selected = budgets.evaluate_with_selections(rules, frames, now)
    unevaluated = tuple(budgets.unevaluated(rules, frames, findings, selected))
    if unevaluated:
        log.warning(
            "%d budget limit(s) not evaluated: %s",
            len(unevaluated),
            "; ".join(item.describe() for item in unevaluated),
        )
    period_keys = [r.period.key() for r in rules]

    def planned(ledger: Mapping[alerts.LedgerKey, alerts.LedgerEntry]) -> Outcome:
        by_name = {rule.name: rule for rule in rules}
        noteworthy = budgets.noteworthy(findings, ledger)
        plan = alerts.plan(noteworthy, by_name, ledger, config.silences, now)
        return Outcome(
            now=now,
            period=default_period,
            usage=usages[default_key],
            source=source,
            findings=findings,
            plan=_with_context(plan, rules, usages, selected),
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
        messages = [] if operational is None else [_operational_message(operational, config)]
        messages += [_alert_message(alert, config) for alert in outcome.plan.alerts]
        ids = transaction.commit(
            now=now,
            ledger=outcome.plan.ledger,
            messages=messages,
            budget_history=_budget_history(findings),
            health=new_health,
        )
    deps.state.prune(now, config.state.retention)
    return dataclasses.replace(outcome, operational=operational, outbox_ids=tuple(ids))


def _with_context(
    plan: alerts.Plan,
    rules: Sequence[budgets.Rule],
    usages: Mapping[str, usage.Usage],
    selected: Mapping[str, pl.DataFrame] | None = None,
) -> alerts.Plan:
    """Add each alert's spend, requests and top models, for the people who read it.

    Per-key context comes from one per-key aggregation per export range (not a scan per
    alert: a storm of 5,000 alerts must not mean 5,000 scans); a shared pool's from its rows.
    """
    by_name = {rule.name: rule for rule in rules}
    per_key: dict[str, dict[str, _Context]] = {}
    pools: dict[str, _Context] = {}

    def key_context(
        range_key: str,
    ) -> dict[str, _Context]:
        if range_key not in per_key:
            loaded = usages[range_key]
            top: dict[str, list[tuple[str, float]]] = {}
            for key_id, model, cost in (
                loaded.top_models(3).select("api_key_id", "model", "total_cost_usd").iter_rows()
            ):
                top.setdefault(key_id, []).append((model, float(cost)))
            per_key[range_key] = {
                key_id: (float(cost), float(requests), tuple(top.get(key_id, ())))
                for key_id, cost, requests in loaded.per_key.select(
                    "api_key_id", "total_cost_usd", "requests"
                ).iter_rows()
            }
        return per_key[range_key]

    def pool_context(rule: budgets.Rule) -> _Context:
        if rule.name not in pools:
            range_key = budgets.export_key(rule.period)
            keys = selected.get(range_key) if selected is not None else None
            if keys is not None and rule.name in keys.columns:
                pools.update(_pools_context(plan, by_name, range_key, usages[range_key], keys))
        if rule.name not in pools:  # no selections at hand: this pool's rows on their own
            frame = usages[budgets.export_key(rule.period)].frame
            rows = budgets.subject_rows(rule, rules, frame, None)
            pools[rule.name] = _pool_context(
                rows.group_by("model").agg(
                    pl.col("total_cost_usd").sum(), pl.col("requests").cast(pl.Float64).sum()
                ),
                "",
            )
        return pools[rule.name]

    def enrich(alert: alerts.Alert) -> alerts.Alert:
        rule = by_name[alert.budget]
        if alert.api_key_id is None:
            spend, requests, top = pool_context(rule)
        else:
            context = key_context(budgets.export_key(rule.period))
            spend, requests, top = context.get(alert.api_key_id, (0.0, 0.0, ()))
        return dataclasses.replace(alert, spend_usd=spend, requests=requests, top_models=top)

    return dataclasses.replace(
        plan,
        alerts=tuple(enrich(a) for a in plan.alerts),
        silenced=tuple(enrich(a) for a in plan.silenced),
    )


def _pools_context(
    plan: alerts.Plan,
    by_name: Mapping[str, budgets.Rule],
    range_key: str,
    loaded: usage.Usage,
    selected: pl.DataFrame,
) -> dict[str, _Context]:
    """Spend, requests and top models of every alerted pool of one export range, in one pass:
    per row a membership flag for each pool (no join that copies the export), summed per
    model."""
    names = sorted(
        {
            a.budget
            for a in (*plan.alerts, *plan.silenced)
            if a.api_key_id is None
            and budgets.export_key(by_name[a.budget].period) == range_key
            and a.budget in selected.columns
        }
    )
    if not names:
        return {}
    columns = {name: f"_pool_{i}" for i, name in enumerate(names)}
    members = {
        column: selected.filter(pl.col(name)).get_column("api_key_id")
        for name, column in columns.items()
    }
    in_pool = [pl.col("api_key_id").is_in(keys).alias(c) for c, keys in members.items()]
    per_model = (
        loaded.frame.lazy()
        .select("model", "total_cost_usd", "requests", *in_pool)
        .group_by("model")
        .agg(
            expr
            for column in columns.values()
            for expr in (
                pl.col("total_cost_usd").filter(pl.col(column)).sum().alias(f"{column}_cost"),
                pl.col("requests")
                .cast(pl.Float64)  # a float sum cannot wrap around
                .filter(pl.col(column))
                .sum()
                .alias(f"{column}_requests"),
                pl.col(column).any().alias(f"{column}_rows"),
            )
        )
        .collect()
    )
    return {name: _pool_context(per_model, column) for name, column in columns.items()}


def _pool_context(per_model: pl.DataFrame, column: str) -> _Context:
    """From spend and requests per model (columns `total_cost_usd` and `requests`, or
    `{column}_cost`, `{column}_requests` and `{column}_rows` for one of several pools)."""
    if column:
        per_model = per_model.filter(pl.col(f"{column}_rows")).select(
            "model",
            pl.col(f"{column}_cost").alias("total_cost_usd"),
            pl.col(f"{column}_requests").alias("requests"),
        )
    top = per_model.sort(["total_cost_usd", "model"], descending=[True, False]).head(3)
    return (
        float(per_model["total_cost_usd"].sum()),
        float(per_model["requests"].sum()),
        tuple((m, float(c)) for m, c in top.select("model", "total_cost_usd").iter_rows()),
    )


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
            messages = (
                [] if operational is None else [_operational_message(operational, deps.config)]
            )
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


def _default_channel(config: Config) -> str | None:
    return config.slack.channel if config.slack is not None else None


def _alert_message(alert: alerts.Alert, config: Config) -> Message:
    return Message(
        kind="alert",
        channel=alert.channel or _default_channel(config),
        payload=alerts.alert_payload(alert),
    )


def _operational_message(operational: health.Operational, config: Config) -> Message:
    return Message(
        kind=operational.kind,
        channel=_default_channel(config),
        payload=_jsonable(dataclasses.asdict(operational)),
    )


def describe_pending(item: OutboxItem) -> Pending:
    """An outbox row as `check` lists it."""
    if item.kind == "alert":
        summary = report.alert_summary(alerts.alert_from_payload(item.payload))
    elif item.kind == "exports_failing":
        summary = (
            f"Langdock exports failing since {item.payload.get('failing_since')} "
            f"({item.payload.get('failures')} cycles, {item.payload.get('reason')})"
        )
    else:
        summary = f"Langdock exports recovered ({item.payload.get('failures')} failed cycles)"
    return Pending(
        id=item.id,
        kind=item.kind,
        channel=item.channel,
        summary=summary,
        attempts=item.attempts,
        last_error=item.last_error,
    )


def _budget_history(findings: pl.DataFrame) -> list[BudgetHistoryRow]:
    """One row per budget subject and metric (all models) for this cycle."""
    totals = findings.filter(pl.col("model").is_null())
    return [
        BudgetHistoryRow(
            budget=row["budget"],
            subject=row["api_key_id"] or "*",
            metric=row["metric"],
            used=row["used"],
            limit=row["limit"],
        )
        for row in totals.iter_rows(named=True)
    ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
