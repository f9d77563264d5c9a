"""The configuration file (DESIGN.md, "Configuration"): typed, frozen models, parsed once.

    load_config(path, env=None) -> Config       read the file, or raise ConfigError
    parse_config(text, *, source, env, base_dir) -> Config
    key_matches(patterns, key_id, key_name) -> bool

Loading: the YAML is read with positions (`costwatch.configerrors`), `${VAR}` / `${VAR:-x}` /
`$$` are interpolated in string values, `*_file` secrets are read (relative paths, like
`state.path`, from the config file's folder), and pydantic validates once. Every problem found
is raised together in one `ConfigError`, each with its dotted path and line, sorted by line.

Defaults live on the models. A budget's `period`, `timezone`, `thresholds` and `forecast` stay
None when not written; `Budget.effective_*()` resolves them against `defaults` / `schedule`.
After loading, `LangdockConfig.api_key` and `SlackConfig.token` / `webhook_url` hold the secret
whichever way it was given (`secret_api_key()`, `secret_token()`, `secret_webhook_url()` give
it in clear); the `*_file` field then holds the resolved path it came from. Secrets are
`SecretStr`: masked in every repr, and no problem message contains a value from the file or the
environment (a value a validator quotes is shown as the `${NAME}` it came from).
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from costwatch import globs
from costwatch.configerrors import Loc, RawConfig, at, read_yaml, translate
from costwatch.configtypes import (
    Channel,
    Cron,
    Duration,
    Glob,
    Mention,
    Model,
    Patterns,
    PositiveFloat,
    PositiveInt,
    Secret,
    SecretPath,
    Text,
    Url,
    ZoneName,
    check_listen,
    check_url,
    fraction,
    header_token_problem,
    non_empty,
    number,
    percent,
    read_secret_files,
    resolve_path,
    split_listen,
)
from costwatch.errors import ConfigError, ConfigProblem

__all__ = [
    "Budget",
    "Config",
    "Defaults",
    "ForecastConfig",
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
    "key_matches",
    "load_config",
    "parse_config",
    "severity_for",
]

Period = Literal["day", "week", "month", "quarter"]
Severity = Literal["info", "warning", "critical"]
Scope = Literal["key", "shared"]
DEFAULT_EVERY = timedelta(minutes=15)


# --- sections --------------------------------------------------------------------------------


class LangdockConfig(Model):
    base_url: Url = "https://api.langdock.com"
    api_key: Secret | None = None
    api_key_file: SecretPath | None = None
    timeout_seconds: PositiveFloat = 120
    max_download_mb: PositiveInt = 512
    allow_insecure_download: bool = False
    retry_max_elapsed_seconds: PositiveFloat = 300
    max_attempts: PositiveInt = 6
    failures_before_alert: PositiveInt = 3  # consecutive failed cycles before an ops alert

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object, info: ValidationInfo) -> object:
        return read_secret_files(data, info, "api_key")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @model_validator(mode="after")
    def _key_given(self) -> Self:
        if self.api_key is None:
            raise at("api_key", "is required (or api_key_file)")
        problem = header_token_problem(self.api_key.get_secret_value())
        if problem is not None:  # it would fail every export, as an exception in the request
            raise at("api_key_file" if self.api_key_file is not None else "api_key", problem)
        return self

    def secret_api_key(self) -> str:
        """The API key in clear, whether written inline or read from `api_key_file`."""
        assert self.api_key is not None  # checked at load time
        return self.api_key.get_secret_value()


class ScheduleConfig(Model):
    every: Duration | None = DEFAULT_EVERY
    cron: Cron | None = None
    timezone: ZoneName = "UTC"
    jitter: Duration | None = None  # start each cycle up to this much later, at random
    shutdown_grace: Duration = timedelta(seconds=25)  # fits Kubernetes' 30 s before SIGKILL

    @model_validator(mode="before")
    @classmethod
    def _cron_replaces_every(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("cron") is not None and "every" not in data:
            return {**data, "every": None}
        return data

    @model_validator(mode="after")
    def _one_trigger(self) -> Self:
        if (self.every is None) == (self.cron is None):
            raise at("cron" if self.cron else "every", "give either every or cron (one of them)")
        return self

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class StateConfig(Model):
    path: Path = Path("/var/lib/costwatch/state.db")
    retention: Duration = timedelta(days=90)  # spend history and delivered alerts kept this long

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        return resolve_path(path, info)


class SlackConfig(Model):
    token: Secret | None = None
    token_file: SecretPath | None = None
    webhook_url: Secret | None = None
    webhook_url_file: SecretPath | None = None
    channel: Channel | None = None
    api_url: Url = "https://slack.com/api/"
    digest_after: PositiveInt = 5  # more alerts than this for one channel in one go: a digest
    min_interval_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0  # per channel
    retry_every: Duration = timedelta(seconds=30)  # while outbox rows wait after a failure

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object, info: ValidationInfo) -> object:
        return read_secret_files(data, info, "token", "webhook_url")

    @field_validator("api_url")
    @classmethod
    def _end_slash(cls, url: str) -> str:
        return url if url.endswith("/") else f"{url}/"

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        if self.token is not None and self.webhook_url is not None:
            raise at("webhook_url", "give a bot token or a webhook_url, not both")
        if self.token is None and self.webhook_url is None:
            raise at("token", "is required (or token_file, webhook_url, webhook_url_file)")
        if self.token is not None and self.channel is None:
            raise at("channel", "is required with a bot token (the default channel)")
        if self.webhook_url is not None and not _is_url(self.webhook_url.get_secret_value()):
            where = "webhook_url_file" if self.webhook_url_file else "webhook_url"
            raise at(where, "must be an https URL")
        return self

    @property
    def mode(self) -> Literal["token", "webhook"]:
        return "token" if self.token is not None else "webhook"

    def secret_token(self) -> str | None:
        return self.token.get_secret_value() if self.token is not None else None

    def secret_webhook_url(self) -> str | None:
        return self.webhook_url.get_secret_value() if self.webhook_url is not None else None


def _is_url(text: str) -> bool:
    try:
        return bool(check_url(text))
    except ValueError:
        return False


class MetricsConfig(Model):
    listen: Annotated[str, AfterValidator(check_listen)] = "0.0.0.0:9108"
    max_series: PositiveInt = 50000
    basic_auth_user: Text | None = None  # with a password: /metrics and probes ask for it
    basic_auth_password: Secret | None = None
    basic_auth_password_file: SecretPath | None = None
    tls_cert_file: Path | None = None  # with tls_key_file: serve https
    tls_key_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object, info: ValidationInfo) -> object:
        return read_secret_files(data, info, "basic_auth_password")

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(path, info) if path is not None else None

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise at("basic_auth_user", "needs basic_auth_password too (or neither)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise at("tls_cert_file", "needs tls_key_file too (or neither)")
        return self

    def secret_basic_auth_password(self) -> str | None:
        password = self.basic_auth_password
        return password.get_secret_value() if password is not None else None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


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


class ForecastConfig(Model):
    enabled: bool = True
    min_elapsed: Annotated[float, BeforeValidator(fraction), Field(ge=0, le=1)] = 0.2
    min_spend_usd: Annotated[float, BeforeValidator(number), Field(ge=0, allow_inf_nan=False)] = 1.0

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

    def items(self) -> tuple[tuple[str, float], ...]:
        """The limits that are set, as (metric, limit) in the order cost_usd, requests, tokens."""
        pairs = (("cost_usd", self.cost_usd), ("requests", self.requests), ("tokens", self.tokens))
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

    @model_validator(mode="after")
    def _fallback_per_key(self) -> Self:
        if self.fallback and self.scope == "shared":
            raise at("fallback", "a fallback budget must have scope: key")
        return self

    def __hash__(self) -> int:  # `models` is a dict; names are unique in a Config
        return hash(self.name)

    def matches(self, key_id: str, key_name: str) -> bool:
        """Whether `keys` selects this key and `exclude` does not (ignores `fallback`)."""
        return key_matches(self.keys, key_id, key_name) and not key_matches(
            self.exclude, key_id, key_name
        )

    def effective_period(self, defaults: Defaults) -> Period:
        return self.period or defaults.period

    def effective_thresholds(self, defaults: Defaults) -> tuple[Threshold, ...]:
        return self.thresholds or defaults.thresholds

    def effective_forecast(self, defaults: Defaults) -> ForecastConfig:
        return self.forecast or defaults.forecast

    def effective_timezone(self, schedule: ScheduleConfig) -> str:
        return self.timezone or schedule.timezone

    def effective_zone(self, schedule: ScheduleConfig) -> zoneinfo.ZoneInfo:
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


class Config(Model):
    langdock: LangdockConfig
    schedule: ScheduleConfig = ScheduleConfig()
    state: StateConfig = StateConfig()
    slack: SlackConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    defaults: Defaults = Defaults()
    budgets: tuple[Budget, ...] = ()
    silences: tuple[Silence, ...] = ()

    @model_validator(mode="after")
    def _channels_need_token(self) -> Self:
        if self.slack is not None and self.slack.mode == "webhook":
            for index, budget in enumerate(self.budgets):
                if budget.channel is not None:
                    message = "needs slack.token: a webhook posts to its own channel only"
                    raise at(("budgets", index, "channel"), message)
        return self


def key_matches(patterns: Sequence[str], key_id: str, key_name: str) -> bool:
    """A glob matches the key's name (case-sensitive), or a pattern equals its id."""
    return any(globs.matches(pattern, key_name) or pattern == key_id for pattern in patterns)


# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the file at `path`; `env` (default os.environ) feeds ${VAR}."""
    try:
        data = path.read_bytes()
    except OSError as error:
        problem = ConfigProblem("", f"cannot read the file: {error.strerror or 'error'}")
        raise ConfigError(str(path), [problem]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problem = ConfigProblem("", "the file is not UTF-8 text", line)
        raise ConfigError(str(path), [problem]) from None
    return parse_config(text, source=str(path), env=env, base_dir=path.absolute().parent)


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate configuration YAML; raises ConfigError with every problem, sorted by line."""
    raw = read_yaml(text, os.environ if env is None else env)
    if isinstance(raw.data, dict):
        _check_budget_names(raw)
        try:
            config = Config.model_validate(raw.data, context={"base_dir": base_dir})
        except ValidationError as error:
            for detail in error.errors(include_input=False, include_url=False):
                problem = translate(detail, raw, Config)
                if problem is not None and problem not in raw.problems:
                    raw.problems.append(problem)
        else:
            if not raw.problems:
                return config
    problems = sorted(raw.problems, key=lambda problem: problem.line or 0)
    raise ConfigError(source, problems)


def _check_budget_names(raw: RawConfig) -> None:
    budgets = raw.data.get("budgets") if isinstance(raw.data, dict) else None
    first: dict[str, Loc] = {}
    for index, budget in enumerate(budgets if isinstance(budgets, list) else []):
        name = budget.get("name") if isinstance(budget, dict) else None
        if not isinstance(name, str):
            continue
        loc: Loc = ("budgets", index, "name")
        if name.strip() in first:
            where = f"budgets[{first[name.strip()][1]}], line {raw.line(first[name.strip()])}"
            shown = raw.shown(loc)(name)
            raw.add(loc, f"duplicate budget name {shown} (also {where})", broken=False)
        first.setdefault(name.strip(), loc)
