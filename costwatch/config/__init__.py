"""The configuration file (docs/architecture.md, "Interfaces"): typed, frozen models, parsed once.

load_config(path, env=None) -> Config       read the file, or raise ConfigError
parse_config(text, *, source, env, base_dir) -> Config

models.py     the sections (langdock, schedule, state, history, slack, metrics) and `Config`
budget.py     defaults, budgets, limits, thresholds, silences
detect.py     the detectors' sections: anomalies, unit_cost, unowned, owners
types.py      value types and their validators: durations, zones, globs, URLs, secrets
durations.py  "1h30m" and crontab lines
reader.py     YAML with line numbers, ${VAR}; pydantic errors as problems with places
load.py       the file -> a `Config`, or a `ConfigError` with every problem at once
summary.py    what `costwatch validate` prints
schema.py     the JSON Schema of the file (`costwatch schema`; `config/costwatch.schema.json`)
"""

from costwatch.config.budget import (
    Budget,
    Defaults,
    ForecastConfig,
    Limits,
    Period,
    Scope,
    Severity,
    Silence,
    Threshold,
    severity_for,
)
from costwatch.config.load import load_config, parse_config
from costwatch.config.models import (
    Config,
    HistoryConfig,
    LangdockConfig,
    MetricsConfig,
    ScheduleConfig,
    SlackConfig,
    StateConfig,
)

__all__ = [
    "Budget",
    "Config",
    "Defaults",
    "ForecastConfig",
    "HistoryConfig",
    "LangdockConfig",
    "Limits",
    "MetricsConfig",
    "Period",
    "ScheduleConfig",
    "Scope",
    "Severity",
    "Silence",
    "SlackConfig",
    "StateConfig",
    "Threshold",
    "load_config",
    "parse_config",
    "severity_for",
]
