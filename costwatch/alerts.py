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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from costwatch import globs
from costwatch.budgets import Finding, FindingKey, Rule, reaches
from costwatch.config import Silence, Threshold, severity_for

Kind = Literal["actual", "forecast"]
LedgerKey = tuple[str, str, str, str, str, str]  # budget, subject, model, metric, kind, period

FORECAST_LEVEL = 100.0
_NEVER = datetime.min.replace(tzinfo=UTC)


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

    @property
    def subject(self) -> str:
        return self.api_key_id if self.api_key_id is not None else "*"


@dataclass(frozen=True)
class Plan:
    alerts: tuple[Alert, ...]  # to deliver
    silenced: tuple[Alert, ...]  # due, but suppressed by a silence
    ledger: tuple[LedgerEntry, ...]  # entries to write (insert or replace)


def known_findings(ledger: Iterable[LedgerKey]) -> set[FindingKey]:
    """The findings the ledger has an entry for, of either kind (for `budgets.noteworthy`)."""
    return {
        (budget, subject, model, metric, period)
        for budget, subject, model, metric, _, period in ledger
    }


def ledger_key(finding: Finding, kind: Kind) -> LedgerKey:
    return (
        finding.budget,
        finding.subject,
        finding.model or "",
        finding.metric,
        kind,
        finding.period,
    )


def threshold_at(level: float, thresholds: Sequence[Threshold]) -> Threshold:
    """The configured threshold at `level`, or the default severity for it."""
    for threshold in thresholds:
        if threshold.at == level:
            return threshold
    return Threshold(at=level, severity=severity_for(level), mention=())


def active_silence(silences: Sequence[Silence], finding: Finding, now: datetime) -> Silence | None:
    for silence in silences:
        if silence.until <= now:
            continue
        if silence.budget is not None and not globs.matches(silence.budget, finding.budget):
            continue
        if silence.keys is not None and not _silenced_key(silence.keys, finding):
            continue
        return silence
    return None


def plan(
    findings: Sequence[Finding],
    rules: Mapping[str, Rule],
    ledger: Mapping[LedgerKey, LedgerEntry],
    silences: Sequence[Silence],
    now: datetime,
) -> Plan:
    """Decide what to send for `findings` at `now`, given the `ledger` of what already fired.

    `findings` must include every finding that has a ledger entry (`budgets.noteworthy(frame,
    ledger)` does), not only those at a threshold: a limit raised past the subject's use re-arms
    its thresholds only if this sees the subject in that cycle.
    """
    alerts: list[Alert] = []
    silenced: list[Alert] = []
    writes: dict[LedgerKey, LedgerEntry] = {}
    for finding in findings:
        rule = rules[finding.budget]
        stored_actual = ledger.get(ledger_key(finding, "actual"))
        stored_forecast = ledger.get(ledger_key(finding, "forecast"))
        actual_entry = _rearm_actual(stored_actual, finding)
        forecast_entry = _rearm_forecast(stored_forecast, finding)
        for entry, stored in ((actual_entry, stored_actual), (forecast_entry, stored_forecast)):
            if entry is not None and entry != stored:
                writes[entry.key] = entry  # a limit change re-armed it
        last_sent = _last_sent(actual_entry, forecast_entry)
        due = _actual(finding, rule, actual_entry, last_sent, now)
        if due is None and finding.forecast_due:
            due = _forecast(finding, rule, actual_entry, forecast_entry, last_sent)
        if due is None:
            continue
        silence = active_silence(silences, finding, now)
        if silence is not None:
            silenced.append(replace(due, silenced_by=silence.reason, silenced_until=silence.until))
            continue
        alerts.append(due)
        for entry in _record(due, finding, actual_entry, now):
            writes[entry.key] = entry
    return Plan(alerts=tuple(alerts), silenced=tuple(silenced), ledger=tuple(writes.values()))


def _rearm_actual(entry: LedgerEntry | None, finding: Finding) -> LedgerEntry | None:
    """Under a changed limit the fired level becomes min(fired, level under the new limit)."""
    if entry is None or entry.limit == finding.limit:
        return entry
    return replace(entry, level=min(entry.level, finding.level or 0.0), limit=finding.limit)


def _rearm_forecast(entry: LedgerEntry | None, finding: Finding) -> LedgerEntry | None:
    """Under a changed limit a fired forecast stays fired only while it is still due."""
    if entry is None or entry.limit == finding.limit:
        return entry
    return replace(entry, level=entry.level if finding.forecast_due else 0.0, limit=finding.limit)


def _last_sent(*entries: LedgerEntry | None) -> LedgerEntry | None:
    """The entry of the subject's most recent alert, actual or forecast ("since the last
    alert" counts from whichever went out last)."""
    sent = [entry for entry in entries if entry is not None and entry.sent_at is not None]
    return max(sent, key=lambda entry: entry.sent_at or _NEVER, default=None)


def _actual(
    finding: Finding,
    rule: Rule,
    entry: LedgerEntry | None,
    last_sent: LedgerEntry | None,
    now: datetime,
) -> Alert | None:
    """The actual-threshold alert due for `finding`, given its (re-armed) ledger entry."""
    level = finding.level
    if level is None:
        return None
    if level > (entry.level if entry is not None else 0.0):
        return _alert(finding, rule, "actual", level, last_sent)
    repeat = rule.budget.repeat
    if (
        repeat is not None
        and entry is not None
        and entry.sent_at is not None
        and reaches(finding.used, finding.limit, 100)
        and now - entry.sent_at >= _as_timedelta(repeat)
    ):
        return replace(_alert(finding, rule, "actual", level, last_sent), repeat=True)
    return None


def _forecast(
    finding: Finding,
    rule: Rule,
    actual_entry: LedgerEntry | None,
    forecast_entry: LedgerEntry | None,
    last_sent: LedgerEntry | None,
) -> Alert | None:
    if actual_entry is not None and actual_entry.level >= 100:
        return None  # the limit was already announced as reached
    if forecast_entry is not None and forecast_entry.level >= FORECAST_LEVEL:
        return None  # already forecast this period, against this limit
    return _alert(finding, rule, "forecast", FORECAST_LEVEL, last_sent)


def _alert(
    finding: Finding, rule: Rule, kind: Kind, level: float, previous: LedgerEntry | None
) -> Alert:
    """The alert for `finding`; `previous` is the entry of the subject's last alert sent."""
    threshold = threshold_at(level, rule.thresholds)
    severity = threshold.severity if kind == "actual" else severity_for(80)
    return Alert(
        budget=finding.budget,
        scope=finding.scope,
        api_key_id=finding.api_key_id,
        api_key_name=finding.api_key_name,
        model=finding.model,
        metric=finding.metric,
        threshold=level,
        kind=kind,
        severity=severity,
        used=finding.used,
        limit=finding.limit,
        ratio=finding.ratio,
        projected=finding.projected,
        forecast_ratio=finding.forecast_ratio,
        overrun_at=finding.overrun_at,
        forecast_method=finding.forecast_method,
        period=finding.period,
        channel=rule.budget.channel,
        mention=tuple(dict.fromkeys((*threshold.mention, *rule.budget.mention))),
        previous_used=previous.used if previous is not None and previous.sent_at else None,
    )


def _record(
    alert: Alert, finding: Finding, entry: LedgerEntry | None, now: datetime
) -> list[LedgerEntry]:
    """Ledger writes for a sent alert. An actual alert also settles a due forecast."""
    kinds: list[Kind] = [alert.kind]
    if alert.kind == "actual" and finding.forecast_due:
        kinds.append("forecast")
    level = max(alert.threshold, entry.level if entry and alert.kind == "actual" else 0.0)
    return [
        LedgerEntry(
            budget=finding.budget,
            subject=finding.subject,
            model=finding.model or "",
            metric=finding.metric,
            kind=kind,
            period=finding.period,
            level=level if kind == "actual" else FORECAST_LEVEL,
            limit=finding.limit,
            used=finding.used,
            sent_at=now,
        )
        for kind in kinds
    ]


def _silenced_key(pattern: str, finding: Finding) -> bool:
    """A silence's `keys` selects a key as a budget's `keys` do (`globs.key_matches`); a shared
    pool, which is no one key, only by "*"."""
    if finding.api_key_id is None:
        return pattern == "*"
    return globs.key_matches([pattern], finding.api_key_id, finding.api_key_name or "")


def _as_timedelta(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)
