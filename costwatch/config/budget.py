"""Budgets, their limits and thresholds, and silences: the `defaults`, `budgets` and `silences`
sections of the configuration.

A budget's `period`, `timezone`, `thresholds` and `forecast` stay None when not written;
`Budget.effective_*()` resolves them against `defaults` / `schedule`; its `workspaces` None is
every workspace of the file (`Config.reads`). Which keys a budget selects is one rule
(`costwatch.globs.key_matches`), and which budgets leave keys to a fallback budget is another
(`Budget.claims`); `costwatch.budgets` applies both to an export.
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal, Protocol, Self

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, model_validator

from costwatch import globs
from costwatch.config.reader import at
from costwatch.config.types import (
    Channel,
    Duration,
    Glob,
    Mention,
    Model,
    Patterns,
    PositiveFloat,
    PositiveInt,
    Text,
    WorkspaceName,
    ZoneName,
    fraction,
    non_empty,
    number,
    percent,
)


class _Zoned(Protocol):
    """What a budget's time zone falls back to: the `schedule` section."""

    @property
    def timezone(self) -> str: ...


Period = Literal["day", "week", "month", "quarter"]
Severity = Literal["info", "warning", "critical"]
Scope = Literal["key", "shared"]
Metric = Literal["cost_usd", "requests", "tokens"]  # what a limit limits, in `Limits.items()` order
METRICS: tuple[Metric, ...] = ("cost_usd", "requests", "tokens")


# --- thresholds, limits, budgets -------------------------------------------------------------


def severity_for(level: float) -> Severity:
    """The default severity of a threshold: info below 80 %, warning below 100 %, else critical."""
    return "info" if level < 80 else "warning" if level < 100 else "critical"


class Threshold(Model):
    at: Annotated[float, BeforeValidator(percent), Field(gt=0, allow_inf_nan=False)]  # percent
    severity: Severity = "warning"
    mention: tuple[Mention, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data: object) -> object:
        if isinstance(data, int | float | str) and not isinstance(data, bool):
            data = {"at": data}
        elif not isinstance(data, dict):
            raise ValueError("must be a percentage or a mapping like {at: 80, severity: warning}")
        level = _level(data.get("at"))
        if "severity" not in data and level is not None:
            return {**data, "severity": severity_for(level)}
        return data


def _level(value: object) -> float | None:
    try:
        return float(str(percent(value)))
    except ValueError:
        return None


def _sorted_unique(thresholds: tuple[Threshold, ...]) -> tuple[Threshold, ...]:
    levels = [threshold.at for threshold in thresholds]
    if len(set(levels)) != len(levels):
        raise ValueError("lists the same threshold twice")
    return tuple(sorted(thresholds, key=lambda threshold: threshold.at))


Thresholds = Annotated[
    tuple[Threshold, ...], AfterValidator(non_empty), AfterValidator(_sorted_unique)
]


ForecastMethod = Literal["auto", "trailing", "linear"]


class ForecastConfig(Model):
    enabled: bool = True
    min_elapsed: Annotated[float, BeforeValidator(fraction), Field(ge=0, le=1)] = 0.2
    min_spend_usd: Annotated[float, BeforeValidator(number), Field(ge=0, allow_inf_nan=False)] = 1.0
    # auto: weekday/weekend rates when they differ, else one trailing rate; trailing: one rate;
    # linear: from the period's start only. Too few stored days: linear (costwatch.forecast).
    method: ForecastMethod = "auto"
    window: Annotated[int, Field(ge=7, le=90)] = 14  # closed days the rates are taken from

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: object) -> object:
        if isinstance(data, bool):
            return {"enabled": data}
        if not isinstance(data, dict):
            raise ValueError(
                "must be true, false or a mapping like {enabled: true, min_elapsed: 20%}"
            )
        return data


class Defaults(Model):
    period: Period = "month"
    thresholds: Thresholds = (Threshold(at=50), Threshold(at=80), Threshold(at=100))
    forecast: ForecastConfig = ForecastConfig()


class Limits(Model):
    cost_usd: PositiveFloat | None = None
    requests: PositiveInt | None = None
    tokens: PositiveInt | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if not self.items():
            raise at((), "give at least one of cost_usd, requests, tokens")
        return self

    def items(self) -> tuple[tuple[Metric, float], ...]:
        """The limits that are set, as (metric, limit) in the order of `METRICS`."""
        pairs: tuple[tuple[Metric, float | None], ...] = (
            ("cost_usd", self.cost_usd),
            ("requests", self.requests),
            ("tokens", self.tokens),
        )
        return tuple((metric, limit) for metric, limit in pairs if limit is not None)


class Budget(Model):
    name: Text
    keys: Annotated[Patterns, AfterValidator(non_empty)]
    exclude: Patterns = ()
    fallback: bool = False  # only keys that no other per-key budget matches
    scope: Scope = "key"
    limits: Limits
    models: dict[Glob, Limits] = Field(default_factory=dict)
    period: Period | None = None
    timezone: ZoneName | None = None
    thresholds: Thresholds | None = None
    forecast: ForecastConfig | None = None
    channel: Channel | None = None
    mention: tuple[Mention, ...] = ()
    repeat: Duration | None = None
    # The workspaces whose usage it reads (`workspaces:` of the file); None: all of them (an
    # organisation total). A workspace's own budget reads that workspace alone.
    workspaces: Annotated[tuple[WorkspaceName, ...], AfterValidator(non_empty)] | None = None

    @model_validator(mode="after")
    def _fallback_per_key(self) -> Self:
        if self.fallback and self.scope == "shared":
            raise at("fallback", "a fallback budget must have scope: key")
        return self

    def __hash__(self) -> int:  # `models` is a dict; names are unique in a Config
        return hash(self.name)

    def matches(self, key_id: str, key_name: str) -> bool:
        """Whether `keys` selects this key and `exclude` does not (ignores `fallback`)."""
        return globs.key_matches(self.keys, key_id, key_name) and not globs.key_matches(
            self.exclude, key_id, key_name
        )

    @property
    def claims(self) -> bool:
        """Whether the keys it selects are its own: not left to a fallback budget (a per-key
        budget that is not a fallback itself). The one statement of the fallback rule."""
        return self.scope == "key" and not self.fallback

    def effective_period(self, defaults: Defaults) -> Period:
        return self.period or defaults.period

    def effective_thresholds(self, defaults: Defaults) -> tuple[Threshold, ...]:
        return self.thresholds or defaults.thresholds

    def effective_forecast(self, defaults: Defaults) -> ForecastConfig:
        return self.forecast or defaults.forecast

    def effective_timezone(self, schedule: _Zoned) -> str:
        return self.timezone or schedule.timezone

    def effective_zone(self, schedule: _Zoned) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.effective_timezone(schedule))


class Silence(Model):
    budget: Glob | None = None
    keys: Glob | None = None
    until: AwareDatetime
    reason: Text

    @model_validator(mode="after")
    def _selects_something(self) -> Self:
        if self.budget is None and self.keys is None:
            raise at("budget", "is required (or keys, or both)")
        return self
