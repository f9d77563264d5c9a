"""The configuration file (DESIGN.md, "Configuration"): typed, frozen models, parsed once.

    load_config(path, env=None) -> Config       read the file, or raise ConfigError
    parse_config(text, *, source, env, base_dir) -> Config
    summarize(config, known_keys=None) -> str   the screen `costwatch validate` prints
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

import difflib
import functools
import os
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from costwatch import globs
from costwatch.configerrors import Loc, RawConfig, at, read_yaml, translate
from costwatch.durations import format_duration, normalize_cron, parse_duration
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
    "summarize",
]

Period = Literal["day", "week", "month", "quarter"]
Severity = Literal["info", "warning", "critical"]
Scope = Literal["key", "shared"]
DEFAULT_EVERY = timedelta(minutes=15)
_SECRET_FILE_MAX_BYTES = 64 * 1024
_T = TypeVar("_T")


# --- value types -----------------------------------------------------------------------------


def _number(value: object) -> object:
    """Numbers (and numeric strings, e.g. from ${VAR}) pass; `true` is not 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _percent(value: object) -> object:
    """80 or "80%"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return value.strip()[:-1]
    return _number(value)


def _fraction(value: object) -> object:
    """0.2 or "20%"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError("must be a fraction like 0.2 or a percentage like '20%'") from None
    return _number(value)


def _check_zone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, _zone_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"bad time zone '{name}'{hint}") from None
    return name


@functools.cache
def _zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def _check_glob(pattern: str) -> str:
    problem = globs.problem(pattern)
    if problem is not None:
        raise ValueError(problem)
    return pattern


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http or https URL")
    return url


def _check_listen(text: str) -> str:
    _split_listen(text)
    return text


def _split_listen(text: str) -> tuple[str, int]:
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d{1,5})", text
    )
    if match is None:
        raise ValueError("must be host:port, like 0.0.0.0:9108 or [::]:9108")
    if not 1 <= int(match["port"]) <= 65535:
        raise ValueError("port must be between 1 and 65535")
    return match["v6"] or match["host"], int(match["port"])


_MENTION = re.compile(r"<(?:@[A-Z0-9]+|!subteam\^[A-Z0-9]+(?:\|[^<>]*)?|!here|!channel|!everyone)>")


def _check_mention(text: str) -> str:
    if not _MENTION.fullmatch(text):
        raise ValueError("must be a Slack mention like '<@U0123ABCD>' or '<!subteam^S0123ABCD>'")
    return text


def _non_empty(items: tuple[_T, ...]) -> tuple[_T, ...]:
    if not items:
        raise ValueError("must not be empty")
    return items


def _check_channel(name: str) -> str:
    if not re.fullmatch(r"\S+", name):
        raise ValueError("must be a channel like '#ai-spend' or a channel ID, without spaces")
    return name


def _as_patterns(value: object) -> object:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise ValueError("must be a glob or a list of globs, names or key ids")
    return value


def _resolve_path(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
PositiveFloat = Annotated[float, BeforeValidator(_number), Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, BeforeValidator(_number), Field(gt=0)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Cron = Annotated[str, AfterValidator(normalize_cron)]
ZoneName = Annotated[str, AfterValidator(_check_zone)]
Glob = Annotated[str, AfterValidator(_check_glob)]
Patterns = Annotated[tuple[Glob, ...], BeforeValidator(_as_patterns)]
Url = Annotated[str, AfterValidator(_check_url)]
Mention = Annotated[str, AfterValidator(_check_mention)]
Channel = Annotated[str, AfterValidator(_check_channel)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- secrets ---------------------------------------------------------------------------------


class _Invalid:
    """Put in place of a field's input by a `before` validator: the field then reports it."""

    def __init__(self, message: str) -> None:
        self.message = message


def _raise_invalid(value: object) -> object:
    if isinstance(value, _Invalid):
        raise ValueError(value.message)
    return value


Secret = Annotated[SecretStr, Field(min_length=1), BeforeValidator(_raise_invalid)]
SecretPath = Annotated[Path, BeforeValidator(_raise_invalid)]


def _read_secret_files(data: object, info: ValidationInfo, *names: str) -> object:
    """For each `name`: exactly-one-of `name`/`name_file` check, and read the file into `name`."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name in names:
        file_key = f"{name}_file"
        if data.get(file_key) is None:
            continue
        if data.get(name) is not None:
            data[file_key] = _Invalid(f"give {name} or {file_key}, not both")
        elif isinstance(data[file_key], str):
            path = _resolve_path(Path(data[file_key]), info)
            try:
                data[name], data[file_key] = _read_secret(path), path
            except ValueError as error:
                data[file_key] = _Invalid(str(error))
    return data


def _read_secret(path: Path) -> str:
    """The stripped content; the ValueError says what is wrong, never what is in the file."""
    try:
        with path.open("rb") as file:
            content = file.read(_SECRET_FILE_MAX_BYTES).decode("utf-8").strip()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or 'error'}") from None
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"cannot read {path}: not a UTF-8 text file") from None
    if not content:
        raise ValueError(f"{path} is empty")
    return content


# --- sections --------------------------------------------------------------------------------


class LangdockConfig(_Model):
    base_url: Url = "https://api.langdock.com"
    api_key: Secret | None = None
    api_key_file: SecretPath | None = None
    timeout_seconds: PositiveFloat = 120
    max_download_mb: PositiveInt = 512
    allow_insecure_download: bool = False
    retry_max_elapsed_seconds: PositiveFloat = 300
    max_attempts: PositiveInt = 6

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object, info: ValidationInfo) -> object:
        return _read_secret_files(data, info, "api_key")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @model_validator(mode="after")
    def _key_given(self) -> Self:
        if self.api_key is None:
            raise at("api_key", "is required (or api_key_file)")
        return self

    def secret_api_key(self) -> str:
        """The API key in clear, whether written inline or read from `api_key_file`."""
        assert self.api_key is not None  # checked at load time
        return self.api_key.get_secret_value()


class ScheduleConfig(_Model):
    every: Duration | None = DEFAULT_EVERY
    cron: Cron | None = None
    timezone: ZoneName = "UTC"

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


class StateConfig(_Model):
    path: Path = Path("/var/lib/costwatch/state.db")

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        return _resolve_path(path, info)


class SlackConfig(_Model):
    token: Secret | None = None
    token_file: SecretPath | None = None
    webhook_url: Secret | None = None
    webhook_url_file: SecretPath | None = None
    channel: Channel | None = None
    api_url: Url = "https://slack.com/api/"

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object, info: ValidationInfo) -> object:
        return _read_secret_files(data, info, "token", "webhook_url")

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
        return bool(_check_url(text))
    except ValueError:
        return False


class MetricsConfig(_Model):
    listen: Annotated[str, AfterValidator(_check_listen)] = "0.0.0.0:9108"
    max_series: PositiveInt = 50000

    @property
    def host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


# --- thresholds, limits, budgets -------------------------------------------------------------


def severity_for(level: float) -> Severity:
    """The default severity of a threshold: info below 80 %, warning below 100 %, else critical."""
    return "info" if level < 80 else "warning" if level < 100 else "critical"


class Threshold(_Model):
    at: Annotated[float, BeforeValidator(_percent), Field(gt=0, allow_inf_nan=False)]  # percent
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
        return float(str(_percent(value)))
    except ValueError:
        return None


def _sorted_unique(thresholds: tuple[Threshold, ...]) -> tuple[Threshold, ...]:
    levels = [threshold.at for threshold in thresholds]
    if len(set(levels)) != len(levels):
        raise ValueError("lists the same threshold twice")
    return tuple(sorted(thresholds, key=lambda threshold: threshold.at))


Thresholds = Annotated[
    tuple[Threshold, ...], AfterValidator(_non_empty), AfterValidator(_sorted_unique)
]


class ForecastConfig(_Model):
    enabled: bool = True
    min_elapsed: Annotated[float, BeforeValidator(_fraction), Field(ge=0, le=1)] = 0.2
    min_spend_usd: Annotated[float, BeforeValidator(_number), Field(ge=0, allow_inf_nan=False)] = (
        1.0
    )

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


class Defaults(_Model):
    period: Period = "month"
    thresholds: Thresholds = (Threshold(at=50), Threshold(at=80), Threshold(at=100))
    forecast: ForecastConfig = ForecastConfig()


class Limits(_Model):
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


class Budget(_Model):
    name: Text
    keys: Annotated[Patterns, AfterValidator(_non_empty)]
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


class Silence(_Model):
    budget: Glob | None = None
    keys: Glob | None = None
    until: AwareDatetime
    reason: Text

    @model_validator(mode="after")
    def _selects_something(self) -> Self:
        if self.budget is None and self.keys is None:
            raise at("budget", "is required (or keys, or both)")
        return self


class Config(_Model):
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
    problems = sorted(raw.redacted(raw.problems), key=lambda problem: problem.line or 0)
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
            raw.add(loc, f"duplicate budget name '{name}' (also {where})", broken=False)
        first.setdefault(name.strip(), loc)


# --- summary ---------------------------------------------------------------------------------


def summarize(config: Config, known_keys: Sequence[tuple[str, str]] | None = None) -> str:
    """The one-screen description of a valid configuration; never shows a secret.

    With `known_keys` ((api_key_id, api_key_name) pairs) each budget says how many it matches.
    """
    langdock, schedule, slack = config.langdock, config.schedule, config.slack
    source = f"read from {langdock.api_key_file}" if langdock.api_key_file else "given inline"
    trigger = (
        f"every {format_duration(schedule.every)}" if schedule.every else f"cron '{schedule.cron}'"
    )
    lines = [
        f"langdock  {langdock.base_url} (API key {source})",
        f"schedule  {trigger}, time zone {schedule.timezone}",
        f"state     {config.state.path}",
        f"slack     {_describe_slack(slack)}",
        f"metrics   {config.metrics.listen} (at most {config.metrics.max_series} series)",
        f"defaults  {_describe_defaults(config.defaults)}",
        f"budgets   {len(config.budgets)}",
    ]
    for budget in config.budgets:
        lines.append(f"  {budget.name}: {_describe_budget(config, budget)}")
        if known_keys is not None:
            count = len(_matched_keys(config, budget, known_keys))
            lines.append(f"    matches {count} of {len(known_keys)} keys")
    if known_keys is not None:
        covered = {
            key for budget in config.budgets for key in _matched_keys(config, budget, known_keys)
        }
        lines.append(
            f"keys      {len(known_keys) - len(covered)} of {len(known_keys)} in no budget"
        )
    for silence in config.silences:
        what = ", ".join(
            f"{k} {v}" for k, v in (("budget", silence.budget), ("keys", silence.keys)) if v
        )
        lines.append(f"silence   {what} until {silence.until.isoformat()}: {silence.reason}")
    return "\n".join(lines)


def _describe_slack(slack: SlackConfig | None) -> str:
    if slack is None:
        return "off (no alerts are sent)"
    if slack.mode == "webhook":
        return "incoming webhook"
    return f"bot token, default channel {slack.channel}, API {slack.api_url}"


def _describe_defaults(defaults: Defaults) -> str:
    return f"period {defaults.period}, {_describe_thresholds(defaults.thresholds)}, " + (
        _describe_forecast(defaults.forecast)
    )


def _describe_thresholds(thresholds: Sequence[Threshold]) -> str:
    return "thresholds " + "/".join(f"{threshold.at:g}" for threshold in thresholds) + "%"


def _describe_forecast(forecast: ForecastConfig) -> str:
    if not forecast.enabled:
        return "forecast off"
    return (
        f"forecast once {forecast.min_elapsed:.0%} of the period has passed"
        f" and ${forecast.min_spend_usd:,.2f} is spent"
    )


def _describe_limits(limits: Limits) -> str:
    units = {"cost_usd": "${:,.2f}", "requests": "{:,.0f} requests", "tokens": "{:,.0f} tokens"}
    return ", ".join(units[metric].format(limit) for metric, limit in limits.items())


def _describe_budget(config: Config, budget: Budget) -> str:
    parts = [
        f"{'shared pool' if budget.scope == 'shared' else 'per key'}"
        + (" (fallback)" if budget.fallback else ""),
        "keys " + ", ".join(budget.keys) + ("".join(f" -{x}" for x in budget.exclude)),
        f"{budget.effective_period(config.defaults)} in "
        + budget.effective_timezone(config.schedule),
        _describe_limits(budget.limits),
        *(f"{model}: {_describe_limits(limits)}" for model, limits in budget.models.items()),
        _describe_thresholds(budget.effective_thresholds(config.defaults)),
    ]
    channel = budget.channel or (config.slack.channel if config.slack else None)
    if channel:
        parts.append(f"to {channel}")
    return "; ".join(parts)


def _matched_keys(
    config: Config, budget: Budget, known_keys: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The keys a budget covers; a fallback budget only those no other per-key budget covers."""
    others = [b for b in config.budgets if b.scope == "key" and not b.fallback]
    return [
        key
        for key in known_keys
        if budget.matches(*key) and not (budget.fallback and any(b.matches(*key) for b in others))
    ]
