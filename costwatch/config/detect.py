"""The detectors' sections: `anomalies`, `unit_cost`, `unowned` and `owners`.

Each says what its detector in `costwatch.detect` calls far from normal, with defaults that keep
small numbers quiet (a floor under which nothing is news: $0.02 -> $0.20 says nothing). The
values are read once here; the detectors take these models as they are.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from costwatch.config.types import (
    Channel,
    Mention,
    Model,
    Patterns,
    PositiveFloat,
    PositiveInt,
    Text,
    fraction,
    non_empty,
    number,
)

# Which past days a day is compared with: `auto` takes the same weekday when the window holds
# `min_baseline_days` of them, else weekdays or weekend days, else every day.
Seasonality = Literal["auto", "same_weekday", "weekday_weekend", "none"]
AnomalyMetric = Literal["cost_usd", "requests"]
ANOMALY_METRICS: tuple[AnomalyMetric, ...] = ("cost_usd", "requests")

Ratio = Annotated[float, BeforeValidator(number), Field(gt=1, allow_inf_nan=False)]
Deviations = Annotated[float, BeforeValidator(number), Field(ge=0, allow_inf_nan=False)]
Change = Annotated[float, BeforeValidator(fraction), Field(gt=0, allow_inf_nan=False)]
WindowDays = Annotated[int, BeforeValidator(number), Field(ge=7, le=366)]
BaselineDays = Annotated[int, BeforeValidator(number), Field(ge=3, le=366)]


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(items)) != len(items):
        raise ValueError("lists the same metric twice")
    return items


def _as_tuple(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _one_or_many(item: dict[str, object], description: str) -> WithJsonSchema:
    """The JSON Schema of a value the reader takes as one item or a list of them."""
    return WithJsonSchema(
        {"anyOf": [item, {"type": "array", "items": item}], "description": description}
    )


class AnomalyOverride(Model):
    """One budget's own sensitivity for the keys it selects; what it leaves out is global."""

    enabled: bool | None = None
    min_ratio: Ratio | None = None
    min_deviations: Deviations | None = None
    min_spend_usd: PositiveFloat | None = None
    min_requests: PositiveInt | None = None


class AnomalyConfig(Model):
    """A key's (and a key x model's) day far above its own trailing baseline.

    A day is anomalous when its value is at least `min_spend_usd` (or `min_requests`), at
    least `min_ratio` times the baseline's median, and more than `min_deviations` robust
    standard deviations (1.4826 x the median absolute deviation) above it.
    """

    enabled: bool = True
    metrics: Annotated[
        tuple[AnomalyMetric, ...],
        BeforeValidator(_as_tuple),
        AfterValidator(non_empty),
        AfterValidator(_unique),
        _one_or_many({"enum": list(ANOMALY_METRICS)}, "cost_usd, requests, or both"),
    ] = ANOMALY_METRICS
    models: bool = True  # also each key x model on its own
    rate: bool = True  # also today so far against the same hours of normal days
    window_days: WindowDays = 28
    min_baseline_days: BaselineDays = 4
    seasonality: Seasonality = "auto"
    min_ratio: Ratio = 3.0
    min_deviations: Deviations = 5.0
    min_spend_usd: PositiveFloat = 5.0
    min_requests: PositiveInt = 500
    budgets: dict[Text, AnomalyOverride] = Field(default_factory=dict)

    def __hash__(self) -> int:  # `budgets` is a dict
        return hash((self.window_days, self.seasonality, tuple(self.budgets)))


class UnitCostConfig(Model):
    """A model's cost per request (per 1k tokens where reported) across the workspace, today
    against its trailing median; requests without cost where the model costs money."""

    enabled: bool = True
    window_days: WindowDays = 28
    min_baseline_days: BaselineDays = 4
    min_change: Change = 1.0  # 1.0 (100%): double or half the median
    min_requests: PositiveInt = 100  # fewer requests of a model on a day: its rate says nothing


class UnownedConfig(Model):
    """Keys nobody answers for: spend no budget selects but a catch-all, a key seen for the
    first time, a key without use for `dormant_days` that starts again."""

    enabled: bool = False  # opt in: with a "*" per-key budget, every other key is unowned
    min_spend_usd: PositiveFloat = 1.0  # an unowned key's day under this says nothing
    new_keys: bool = True
    dormant: bool = True
    dormant_days: Annotated[int, BeforeValidator(number), Field(ge=1, le=366)] = 30


class Owner(Model):
    """Who answers for keys: a person or team mention, optionally a channel of their own."""

    keys: Annotated[Patterns, AfterValidator(non_empty)]
    exclude: Patterns = ()
    mention: Annotated[
        tuple[Mention, ...],
        BeforeValidator(_as_tuple),
        AfterValidator(non_empty),
        _one_or_many({"type": "string"}, "a Slack mention, or a list of them"),
    ]
    channel: Channel | None = None
