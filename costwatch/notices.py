"""What the outbox carries, typed: a budget `Alert`, an `Operational` notice, a detector's
finding (`detect.Finding`: anomaly, spend rate, unit cost, unowned, new or dormant key) or a
spend `Report` (`reports.py`), and its JSON.

    kind(notice) -> "alert" | "exports_failing" | "exports_recovered" | a finding's kind
                    | "report"
    payload(notice) -> dict                     the JSON object an outbox row stores
    read(kind, payload, *, written_at) -> Notice   the notice a row holds, or ValueError

A cycle writes notices (`payload`), delivery and `check` read them back (`read`) once, at the
edge, and everything after works on the typed notice: rendering never sees a row or a dict.
`read` is the one place that decides what a stored payload means: fields a payload does not
know are ignored (a row written by a newer costwatch), times are ISO 8601 with their offset,
and anything it cannot read as the notice's fields is a `ValueError` (delivery then leaves the
row in the outbox, refused alone). An operational row missing a field costwatch always writes
reads as "unknown" (`None`; no failures counted; `at` is when the row was written). Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, get_args

from costwatch.alerts import Alert
from costwatch.detect.findings import Anomaly, Finding, KeyEvent, UnitCost
from costwatch.health import Operational, OperationalKind
from costwatch.reports import AtRisk, Line, Report, Span

__all__ = ["FINDING_KINDS", "KINDS", "Notice", "kind", "payload", "read"]

Notice = Alert | Operational | Finding | Report
OPERATIONAL_KINDS: tuple[OperationalKind, ...] = get_args(OperationalKind)
_FINDING_TYPES: dict[str, type[Anomaly] | type[UnitCost] | type[KeyEvent]] = {
    "anomaly": Anomaly,
    "spend_rate": Anomaly,
    "unit_cost": UnitCost,
    "unowned": KeyEvent,
    "new_key": KeyEvent,
    "dormant_key": KeyEvent,
}
FINDING_KINDS: tuple[str, ...] = tuple(_FINDING_TYPES)
KINDS: tuple[str, ...] = ("alert", *OPERATIONAL_KINDS, *FINDING_KINDS, "report")
_FINDING_DATES = ("day", "since", "last_seen")

_ALERT_FIELDS = frozenset(field.name for field in dataclasses.fields(Alert))
_ALERT_TIMES = ("overrun_at", "silenced_until")


def kind(notice: Notice) -> str:
    if isinstance(notice, Alert):
        return "alert"
    return "report" if isinstance(notice, Report) else notice.kind


def payload(notice: Notice) -> dict[str, Any]:
    """The JSON-ready object the outbox stores for `notice` (times as ISO 8601, tuples as
    lists once serialised)."""
    values: dict[str, Any] = _jsonable(dataclasses.asdict(notice))
    return values


def read(kind: str, payload: Mapping[str, Any], *, written_at: datetime) -> Notice:
    """The notice an outbox row of `kind` holds; ValueError or TypeError when it holds none."""
    if kind == "alert":
        return _alert(payload)
    if kind in _FINDING_TYPES:
        return _finding(kind, payload)
    if kind == "report":
        return _report(payload)
    for operational in OPERATIONAL_KINDS:
        if kind == operational:
            return _operational(operational, payload, written_at)
    raise ValueError(f"unknown kind {kind!r}")


def _alert(payload: Mapping[str, Any]) -> Alert:
    values = {name: payload[name] for name in _ALERT_FIELDS & payload.keys()}
    for name in _ALERT_TIMES:
        values[name] = _time(values, name)
    values["mention"] = tuple(values.pop("mention", None) or ())
    values["owner_mention"] = tuple(str(m) for m in values.pop("owner_mention", None) or ())
    values["top_models"] = tuple(
        (str(model), float(cost)) for model, cost in values.pop("top_models", None) or ()
    )
    return Alert(**values)


def _finding(kind: str, payload: Mapping[str, Any]) -> Finding:
    """A finding of `kind` from its payload: its own fields, dates as ISO days, mentions as a
    tuple; a field missing or of another shape is a ValueError."""
    build = _FINDING_TYPES[kind]
    names = {field.name for field in dataclasses.fields(build)}
    values = {name: payload[name] for name in names & payload.keys()}
    for name in _FINDING_DATES & values.keys():
        if values[name] is not None:
            if not isinstance(values[name], str):
                raise ValueError(f"{name} is not a day")
            values[name] = date.fromisoformat(values[name])
    if "mention" in values:
        values["mention"] = tuple(str(m) for m in values["mention"] or ())
    if build is not UnitCost:
        values["kind"] = kind
    try:
        return build(**values)
    except TypeError as error:
        raise ValueError(f"a {kind} notice without its fields: {error}") from None


def _report(payload: Mapping[str, Any]) -> Report:
    """A report from its payload: its spans, lines, budgets at risk and findings rebuilt; a
    field missing or of another shape is a ValueError."""
    try:
        findings = payload["findings"]
        return Report(
            **{
                **{name: payload[name] for name in _REPORT_VALUES},
                "span": _span(payload["span"]),
                "previous": _span(payload["previous"]),
                "top_keys": tuple(Line(**line) for line in payload["top_keys"]),
                "top_models": tuple(Line(**line) for line in payload["top_models"]),
                "at_risk": tuple(AtRisk(**risk) for risk in payload["at_risk"]),
                "findings": tuple(_finding(str(f["kind"]), f) for f in findings),
                "at": datetime.fromisoformat(payload["at"]),
                "mention": tuple(str(m) for m in payload.get("mention") or ()),
            }
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"a report notice without its fields: {error!r}") from None


_REPORT_VALUES = (
    "name",
    "cost_usd",
    "requests",
    "previous_cost_usd",
    "previous_requests",
    "keys",
    "models",
    "findings_count",
    "channel",
)


def _span(values: Mapping[str, Any]) -> Span:
    return Span(
        name=values["name"],
        zone=str(values["zone"]),
        first=date.fromisoformat(values["first"]),
        last=date.fromisoformat(values["last"]),
        whole=bool(values["whole"]),
    )


def _operational(
    kind: OperationalKind, payload: Mapping[str, Any], written_at: datetime
) -> Operational:
    failures = payload.get("failures", 0)
    if not isinstance(failures, int) or isinstance(failures, bool):
        raise ValueError("an operational notice's failures is not a whole number")
    reason = payload.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("an operational notice's reason is not text")
    return Operational(
        kind=kind,
        at=_time(payload, "at") or written_at,
        failures=failures,
        failing_since=_time(payload, "failing_since"),
        last_success=_time(payload, "last_success"),
        reason=reason,
    )


def _time(values: Mapping[str, Any], name: str) -> datetime | None:
    value = values.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a time")
    return datetime.fromisoformat(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, date):  # a datetime too
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
