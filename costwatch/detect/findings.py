"""What the detectors found, typed, from one entry point a cycle and a backtest share. Pure.

    detect(config, usage, today, covered, *, snapshots=None, hour=None, recorded=None)
        -> tuple[Finding, ...]
    due(found, sent) -> tuple[Finding, ...]          once per subject and day
    identities(finding) -> tuple[LedgerKey, ...]     its own, then those of the same news

`detect` runs every detector the configuration enables over the daily usage and turns their
frames into frozen findings (a handful: the detectors have already reduced 20,000 keys to the
few worth a word), each key's with its owner (`owners_of`: the mentions, and the channel
that routes it, else None: the default). A key x model anomaly is kept only when its key has
none for that metric: the key's names the model that drives it.

Each finding has an `identity` shaped as the ledger's key (`alerts.LedgerKey`: budget,
subject, model, metric, kind, period) with no budget and the day as the period, so the ledger
that keeps budget alerts once per threshold and period keeps these once per subject and day.
`due` is that rule: the findings whose identity was not sent yet, each once.

A key's day anomaly and its spend rate now (`spend_rate`) are the same news, "this key is far
above its normal today": one alert per key, metric and day, whichever is found first
(`identities` names both, and `due` sends neither once one was sent). The spend rate comes
first on a runaway morning (at 10:00 the day so far is far above the same hours of normal
days long before it is far above whole normal days); found in the same cycle, the anomaly
supersedes it (it says since when and which model drives it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import polars as pl

from costwatch.alerts import LedgerKey
from costwatch.config import Config
from costwatch.detect.anomaly import anomalies
from costwatch.detect.keys import key_events
from costwatch.detect.owners import owners_of
from costwatch.detect.rate import spend_rates
from costwatch.detect.unitcost import unit_costs

__all__ = ["Anomaly", "Finding", "KeyEvent", "UnitCost", "detect", "due", "identities"]


@dataclass(frozen=True)
class Anomaly:
    """A key's (or key x model's) day, or its day so far (`spend_rate`), far above normal."""

    kind: Literal["anomaly", "spend_rate"]
    day: date
    metric: str  # cost_usd | requests
    api_key_id: str
    api_key_name: str
    model: str | None  # None: the key as a whole
    value: float
    normal: float
    ratio: float | None  # None: normally nothing
    level: float
    basis: str  # same weekday | weekday/weekend | all days
    baseline_days: int
    since: date | None = None  # the run's first day (anomaly)
    hour: int | None = None  # the local hour of today so far (spend_rate)
    driver_model: str | None = None
    driver_share: float | None = None
    mention: tuple[str, ...] = ()
    channel: str | None = None

    @property
    def identity(self) -> LedgerKey:
        return ("", self.api_key_id, self.model or "", self.metric, self.kind, self.day.isoformat())


@dataclass(frozen=True)
class UnitCost:
    """A model's unit cost far from its trailing median, or its requests without cost."""

    day: date
    model: str
    change: str  # drift | zero_cost
    basis: str  # per request | per 1k tokens
    requests: float
    cost_usd: float
    rate: float | None
    normal: float | None
    ratio: float | None
    baseline_days: int
    zero_cost_requests: float
    zero_cost_keys: int
    kind: Literal["unit_cost"] = "unit_cost"

    @property
    def identity(self) -> LedgerKey:
        return ("", "", self.model, self.change, self.kind, self.day.isoformat())


@dataclass(frozen=True)
class KeyEvent:
    """A key nobody answers for: unowned spend, seen for the first time, dormant no more."""

    kind: Literal["unowned", "new_key", "dormant_key"]
    day: date
    api_key_id: str
    api_key_name: str
    cost_usd: float
    requests: float
    last_seen: date | None = None
    idle_days: int | None = None
    mention: tuple[str, ...] = ()
    channel: str | None = None

    @property
    def identity(self) -> LedgerKey:
        return ("", self.api_key_id, "", "", self.kind, self.day.isoformat())


Finding = Anomaly | UnitCost | KeyEvent
_EVENT_KINDS = {"unowned": "unowned", "new": "new_key", "dormant": "dormant_key"}


def detect(
    config: Config,
    usage: pl.DataFrame,
    today: date,
    covered: Iterable[date],
    *,
    snapshots: pl.DataFrame | None = None,
    hour: int | None = None,
    recorded: Iterable[date] | None = None,
) -> tuple[Finding, ...]:
    """Every enabled detector over `usage` (the daily usage up to today) and, given the hourly
    `snapshots` and the local `hour`, the spend rate now over the days `recorded` (those whose
    snapshot of `hour` was taken; None: the days of `covered`). Anomalies first, then the
    rate, unit costs and key events, each in its detector's order."""
    held = sorted(set(covered))
    taken = held if recorded is None else sorted(set(recorded))
    budgets = config.budgets
    found = _key_level_first(anomalies(usage, today, held, config.anomalies, budgets))
    rates = None
    if snapshots is not None and hour is not None:
        rates = spend_rates(snapshots, today, hour, taken, config.anomalies, budgets=budgets)
    events = key_events(usage, today, held, budgets, config.unowned)
    keyed = [frame for frame in (found, rates, events) if frame is not None]
    owners = _owners(config, keyed)
    result: list[Finding] = [Anomaly(kind="anomaly", **_owned(r, owners)) for r in _rows(found)]
    if rates is not None:
        result += [
            Anomaly(kind="spend_rate", **_owned({**r, "model": None}, owners)) for r in _rows(rates)
        ]
    result += [
        UnitCost(**_unit(row)) for row in _rows(unit_costs(usage, today, held, config.unit_cost))
    ]
    result += [
        KeyEvent(**_owned({**row, "kind": _EVENT_KINDS[row["kind"]]}, owners))
        for row in _rows(events)
    ]
    return tuple(result)


def due(found: Iterable[Finding], sent: Iterable[LedgerKey]) -> tuple[Finding, ...]:
    """The findings not sent yet (none of their `identities`), each news once, in the order
    given."""
    seen = set(sent)
    fresh = []
    for finding in found:
        same = identities(finding)
        if seen.isdisjoint(same):
            seen.update(same)
            fresh.append(finding)
    return tuple(fresh)


def identities(finding: Finding) -> tuple[LedgerKey, ...]:
    """The finding's `identity`, then those of the findings that tell the same news: a key's
    day anomaly and its spend rate now, of the same metric and day."""
    own = finding.identity
    if isinstance(finding, Anomaly) and finding.model is None:
        other = "spend_rate" if finding.kind == "anomaly" else "anomaly"
        return own, (*own[:4], other, own[5])
    return (own,)


def _key_level_first(found: pl.DataFrame) -> pl.DataFrame:
    """Anomalies less the key x model rows whose key has one for the same metric, in the
    detector's order."""
    keys = found.filter(pl.col("model").is_null()).select("api_key_id", "metric")
    covered = keys.with_columns(pl.lit(value=True).alias("_key_has_one"))
    return (
        found.join(covered, on=["api_key_id", "metric"], how="left", maintain_order="left")
        .filter(pl.col("model").is_null() | pl.col("_key_has_one").is_null())
        .drop("_key_has_one")
    )


def _owners(
    config: Config, frames: list[pl.DataFrame]
) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """The owner's mentions and channel of every key in `frames`, by api_key_id."""
    keys = pl.concat([f.select("api_key_id", "api_key_name") for f in frames]).unique(
        "api_key_id", keep="last"
    )
    table = owners_of(config.owners, keys).filter(pl.col("owner").is_not_null())
    return {
        row["api_key_id"]: (tuple(row["mention"]), row["channel"])
        for row in table.iter_rows(named=True)
    }


def _owned(
    row: dict[str, Any], owners: dict[str, tuple[tuple[str, ...], str | None]]
) -> dict[str, Any]:
    mention, channel = owners.get(row["api_key_id"], ((), None))
    return {**row, "mention": mention, "channel": channel}


def _unit(row: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in row.items() if k != "kind"}, "change": row["kind"]}


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [
        {key: value for key, value in row.items() if key not in ("spread",)}
        for row in frame.iter_rows(named=True)
    ]
