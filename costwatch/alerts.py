"""The alert lifecycle: which findings become alerts, given what already fired. Pure.

An alert is identified by budget, subject (key id, or "*" for a shared pool), model ("" for all
models), metric, kind and period; the ledger remembers, per identity, the highest threshold that
fired, the limit it fired against, the use at that moment and when it was last sent.

- **Once per threshold and period.** A finding at level L fires when L is above the level the
  ledger holds. Crossing 50% and 80% between two cycles fires once, for 80%: the higher level
  inhibits the lower.
- **Escalation.** A later, higher level in the same period fires again.
- **Repeat.** With `repeat: 24h` on the budget, a subject at or over 100% of its limit is
  re-sent (at its current level) once the last send is that old.
- **New period.** Ledger entries belong to one period, so a new period starts with none.
- **Limit change.** When the limit differs from the one the ledger's level fired against, the
  fired level becomes min(fired, level under the new limit), judged in the first cycle that
  sees the new limit: raising the limit re-arms the thresholds the subject is now below,
  silently; lowering it fires only thresholds above what was already announced (e.g. the new
  limit is already exceeded). A fired forecast stays fired if it is still due under the new
  limit and is re-armed if not, so the edit alone never sends a forecast.
- **Forecast.** A due forecast fires once per period, unless an actual alert for the same
  subject fires in the same cycle (it carries the forecast and settles it) or 100% already
  fired.
- **Since the last alert.** An alert carries the subject's use when its previous alert went
  out, forecast or actual, whichever was sent last (`previous_used`).
- **Silences.** An active silence suppresses the alert without recording it, so it fires once
  the silence expires if still due. Expired silences are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, overload

import polars as pl

from costwatch.budgets import FINDING_SCHEMA, Finding, FindingKey, Rule
from costwatch.config import Silence
from costwatch.lifecycle import ALERT_COLUMNS, FORECAST_LEVEL, LEDGER_SCHEMA, decide, threshold_at

Kind = Literal["actual", "forecast"]
LedgerKey = tuple[str, str, str, str, str, str]  # budget, subject, model, metric, kind, period

__all__ = [
    "ALERT_SCHEMA",
    "FORECAST_LEVEL",
    "Alert",
    "Kind",
    "LedgerEntry",
    "LedgerKey",
    "Plan",
    "Rows",
    "alert_frame",
    "known_findings",
    "ledger_frame",
    "plan",
    "threshold_at",
]


@dataclass(frozen=True)
class LedgerEntry:
    budget: str
    subject: str
    model: str
    metric: str
    kind: Kind
    period: str
    level: float  # highest level fired; 0 when re-armed with nothing fired
    limit: float  # the limit `level` was measured against
    used: float  # use when last sent
    sent_at: datetime | None  # when last sent; None when never sent

    @property
    def key(self) -> LedgerKey:
        return (self.budget, self.subject, self.model, self.metric, self.kind, self.period)


@dataclass(frozen=True)
class Alert:
    """One message to deliver; the outbox stores it as JSON (`costwatch.notices`)."""

    budget: str
    scope: str
    api_key_id: str | None
    api_key_name: str | None
    model: str | None
    metric: str
    threshold: float  # percent; 100 for a forecast
    kind: Kind
    severity: str
    used: float
    limit: float
    ratio: float
    projected: float | None
    forecast_ratio: float | None
    overrun_at: datetime | None
    period: str
    channel: str | None
    mention: tuple[str, ...]
    repeat: bool = False
    previous_used: float | None = None  # use at the previous alert for this subject, if any
    silenced_by: str | None = None  # the silence's reason, when suppressed
    silenced_until: datetime | None = None  # and when that silence ends
    # Context for people, filled in by the cycle from the usage behind the subject:
    spend_usd: float | None = None  # the subject's spend in the period, all models
    requests: float | None = None  # the subject's requests in the period, all models
    top_models: tuple[tuple[str, float], ...] = ()  # (model, spend) by spend, at most 3
    forecast_method: str | None = None  # how `projected` was made (`costwatch.forecast`)
    # Who answers for the subject (`owners:`, `costwatch.owning`): told, and posted to as well
    owner_mention: tuple[str, ...] = ()
    owner_channel: str | None = None

    @property
    def subject(self) -> str:
        return self.api_key_id if self.api_key_id is not None else "*"


# The columns of a frame of alerts: one per `Alert` field, the context last.
ALERT_SCHEMA: dict[str, pl.DataType] = {
    **{name: FINDING_SCHEMA[name] for name in ("budget", "scope", "api_key_id", "api_key_name")},
    "model": pl.String(),
    "metric": pl.String(),
    **{name: ALERT_COLUMNS[name] for name in ("threshold", "kind", "severity")},
    **{name: FINDING_SCHEMA[name] for name in ("used", "limit", "ratio", "projected")},
    **{name: FINDING_SCHEMA[name] for name in ("forecast_ratio", "overrun_at", "period")},
    **{name: ALERT_COLUMNS[name] for name in ("channel", "mention", "repeat", "previous_used")},
    **{name: ALERT_COLUMNS[name] for name in ("silenced_by", "silenced_until")},
    "spend_usd": pl.Float64(),
    "requests": pl.Float64(),
    "top_models": pl.List(pl.Struct({"model": pl.String(), "cost": pl.Float64()})),
    "forecast_method": FINDING_SCHEMA["forecast_method"],
    "owner_mention": pl.List(pl.String()),
    "owner_channel": pl.String(),
}
_T = TypeVar("_T")


class Rows(Sequence[_T], Generic[_T]):
    """Alerts or ledger entries held as a frame, each built as an object only when read: a
    storm's 30,000 are counted, sliced and written without 30,000 objects made first.
    Equal to any sequence of the same objects."""

    def __init__(self, frame: pl.DataFrame, build: type[_T]) -> None:
        self.frame = frame
        self._build = build
        self._built: tuple[_T, ...] | None = None

    def _all(self) -> tuple[_T, ...]:
        if self._built is None:
            self._built = tuple(
                _object(self._build, row) for row in self.frame.iter_rows(named=True)
            )
        return self._built

    def __len__(self) -> int:
        return self.frame.height

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        if self._built is not None:
            return self._built[index]
        if isinstance(index, slice):
            start, stop, step = index.indices(self.frame.height)
            if step == 1:
                part = self.frame.slice(start, max(0, stop - start))
                return tuple(_object(self._build, row) for row in part.iter_rows(named=True))
            return self._all()[index]
        return _object(self._build, self.frame.row(index, named=True))

    def __iter__(self) -> Iterator[_T]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and self._all() == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Rows({list(self._all())!r})"


def _object(build: type[_T], row: dict[str, Any]) -> _T:
    """One `Alert` or `LedgerEntry` from its row (lists back to tuples)."""
    if build is Alert:
        row["mention"] = tuple(row["mention"] or ())
        row["owner_mention"] = tuple(row["owner_mention"] or ())
        row["top_models"] = tuple((top["model"], top["cost"]) for top in row["top_models"] or ())
        row["repeat"] = bool(row["repeat"])
    return build(**row)


@dataclass(frozen=True)
class Plan:
    alerts: Sequence[Alert]  # to deliver
    silenced: Sequence[Alert]  # due, but suppressed by a silence
    ledger: Sequence[LedgerEntry]  # entries to write (insert or replace)


def known_findings(ledger: Iterable[LedgerKey]) -> set[FindingKey]:
    """The findings the ledger has an entry for, of either kind (for `budgets.noteworthy`)."""
    return {
        (budget, subject, model, metric, period)
        for budget, subject, model, metric, _, period in ledger
    }


def plan(
    findings: Sequence[Finding] | pl.DataFrame,
    rules: Mapping[str, Rule],
    ledger: Mapping[LedgerKey, LedgerEntry],
    silences: Sequence[Silence],
    now: datetime,
) -> Plan:
    """Decide what to send for `findings` (a frame with FINDING_SCHEMA, or objects) at `now`,
    given the `ledger` of what already fired: `costwatch.lifecycle` applies the rules of this
    module's docstring to all of them at once.

    `findings` must include every finding that has a ledger entry (all of `evaluate`'s do, as
    does `budgets.noteworthy(frame, ledger)`), not only those at a threshold: a limit raised
    past the subject's use re-arms its thresholds only if this sees the subject in that cycle.
    """
    frame = findings if isinstance(findings, pl.DataFrame) else _finding_frame(findings)
    decision = decide(frame, rules, ledger_frame(ledger.values()), silences, now)
    return Plan(
        alerts=Rows(_as_alerts(decision.alerts), Alert),
        silenced=Rows(_as_alerts(decision.silenced), Alert),
        ledger=Rows(decision.ledger, LedgerEntry),
    )


def alert_frame(alerts: Sequence[Alert]) -> pl.DataFrame:
    """`alerts` as a frame with ALERT_SCHEMA (the frame itself when they are `Rows`)."""
    if isinstance(alerts, Rows):
        return alerts.frame
    columns: dict[str, list[Any]] = {name: [] for name in ALERT_SCHEMA}
    for alert in alerts:
        for name in ALERT_SCHEMA:
            columns[name].append(getattr(alert, name))
    columns["mention"] = [list(m) for m in columns["mention"]]
    columns["owner_mention"] = [list(m) for m in columns["owner_mention"]]
    columns["top_models"] = [[{"model": m, "cost": c} for m, c in t] for t in columns["top_models"]]
    return pl.DataFrame(columns, schema=ALERT_SCHEMA)


def ledger_frame(entries: Iterable[LedgerEntry]) -> pl.DataFrame:
    """Ledger entries as a frame with LEDGER_SCHEMA."""
    columns: dict[str, list[Any]] = {name: [] for name in LEDGER_SCHEMA}
    for entry in entries:
        for name in LEDGER_SCHEMA:
            columns[name].append(getattr(entry, name))
    return pl.DataFrame(columns, schema=LEDGER_SCHEMA)


def _finding_frame(findings: Sequence[Finding]) -> pl.DataFrame:
    names = list(FINDING_SCHEMA)
    rows = [tuple(getattr(finding, name) for name in names) for finding in findings]
    return pl.DataFrame(rows, schema=FINDING_SCHEMA, orient="row")


def _as_alerts(decided: pl.DataFrame) -> pl.DataFrame:
    """Decided alerts with ALERT_SCHEMA: the context (filled in later by `context`) empty."""
    return decided.with_columns(
        pl.lit(None, pl.Float64()).alias("spend_usd"),
        pl.lit(None, pl.Float64()).alias("requests"),
        pl.lit([], ALERT_SCHEMA["top_models"]).alias("top_models"),
        pl.lit([], ALERT_SCHEMA["owner_mention"]).alias("owner_mention"),
        pl.lit(None, pl.String()).alias("owner_channel"),
    ).select(pl.col(name).cast(dtype) for name, dtype in ALERT_SCHEMA.items())
