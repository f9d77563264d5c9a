"""The configuration's sections and the whole file (an interface: docs/architecture.md):
typed, frozen models, validated once by pydantic.

Defaults live on the models. After loading, `LangdockConfig.api_key` and `SlackConfig.token` /
`webhook_url` hold the secret whichever way it was given (`secret_api_key()`, `secret_token()`,
`secret_webhook_url()` give it in clear); the `*_file` field then holds the resolved path it
came from. Secrets are `SecretStr`: masked in every repr. The budgets, thresholds and silences
are in `costwatch.config.budget`; reading a file into a `Config` in `costwatch.config.load`.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from costwatch.config.budget import Budget, Defaults, Silence
from costwatch.config.detect import AnomalyConfig, Owner, UnitCostConfig, UnownedConfig
from costwatch.config.reader import Loc, at
from costwatch.config.reports import ReportConfig
from costwatch.config.types import (
    Channel,
    Cron,
    Duration,
    Model,
    PositiveFloat,
    PositiveInt,
    Secret,
    SecretPath,
    Text,
    Url,
    WorkspaceName,
    ZoneName,
    check_listen,
    check_url,
    header_token_problem,
    number,
    read_secret_files,
    redacted_url,
    refused,
    resolve_path,
    split_listen,
)

DEFAULT_EVERY = timedelta(minutes=15)
DEFAULT_WORKSPACE = "default"  # the name of the one workspace of a file with `langdock:`


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


class WorkspaceConfig(LangdockConfig):
    """One item of `workspaces:`: a Langdock connection (the keys of `langdock:`), its name
    (the `workspace` label of metrics, named in alerts), its own budgets (reading it alone) and
    the default channel of the budgets that read it alone."""

    name: WorkspaceName
    budgets: tuple[Budget, ...] = ()
    channel: Channel | None = None

    @model_validator(mode="after")
    def _own_budgets_read_it(self) -> Self:
        for index, budget in enumerate(self.budgets):
            if budget.workspaces is not None:
                message = "a workspace's own budget reads that workspace alone (a budget"
                message += " of the top-level budgets may name several)"
                raise at(("budgets", index, "workspaces"), message)
        return self


@dataclass(frozen=True)
class Connection:
    """A workspace as the cycle uses it: its name, how to reach it, its default channel."""

    name: str
    langdock: LangdockConfig
    channel: str | None = None


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


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StateConfig(Model):
    """SQLite at `path` (the default), or PostgreSQL at `url` (`url_file`), whose password may
    also come on its own (`password`, `password_file`); `lease` is how long a leader that
    stopped answering (paused, partitioned) keeps leadership before the database ends it."""

    path: Path = Path("/var/lib/costwatch/state.db")
    url: Secret | None = None  # postgresql://user@host:5432/db; a Secret: it may hold a password
    url_file: SecretPath | None = None
    password: Secret | None = None
    password_file: SecretPath | None = None
    lease: Duration = timedelta(seconds=15)
    # How long delivered alerts, ended periods' ledger and stored days are kept (stored days: at
    # least 94 days, so a running quarter stays whole).
    retention: Duration = timedelta(days=90)

    @model_validator(mode="before")
    @classmethod
    def _read_files(cls, data: object, info: ValidationInfo) -> object:
        if isinstance(data, dict) and "path" in data and (data.get("url") or data.get("url_file")):
            return {**data, "url": refused("give path (SQLite) or url (PostgreSQL), not both")}
        return read_secret_files(data, info, "url", "password")

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        return resolve_path(path, info)

    @field_validator("url")
    @classmethod
    def _postgres(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(POSTGRES_SCHEMES):
            raise ValueError("must be a postgresql:// URL (for SQLite, give path instead)")
        return url

    @model_validator(mode="after")
    def _lease_long_enough(self) -> Self:
        if self.lease < timedelta(seconds=2):
            raise at("lease", "must be at least 2s (the leader renews it every third of it)")
        if self.password is not None and self.url is None:
            raise at("password", "goes with url (a PostgreSQL state); SQLite has none")
        return self

    @property
    def postgres(self) -> bool:
        """Whether the state is PostgreSQL (`url`) rather than the SQLite file at `path`."""
        return self.url is not None

    def where(self) -> str:
        """The state as logs may name it: the file, or the database without its credentials."""
        if self.url is None:
            return str(self.path)
        return redacted_url(self.url.get_secret_value())


class HistoryConfig(Model):
    """The daily usage history: closed days are exported once and kept in the state, so a
    cycle exports only the open day (docs/architecture.md)."""

    enabled: bool = True  # false: every cycle exports each period to date, as before
    # A closed day exported before this long after its local midnight is exported once more,
    # settled, after it (usage can arrive late).
    settle_after: Duration = timedelta(hours=6)
    # How many closed days backfill fetches; None: the longest period in use. At most 365.
    backfill_days: Annotated[int, BeforeValidator(number), Field(ge=1, le=365)] | None = None
    # A cycle exports up to this many missing closed days itself; more missing: it exports the
    # period as a whole (and the keeper fills the days in).
    max_days_per_cycle: Annotated[int, BeforeValidator(number), Field(ge=0, le=31)] = 2
    pace: Duration = timedelta(seconds=10)  # between the exports of backfill and settling


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

    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) in clear when basic auth is on."""
        password, user = self.secret_basic_auth_password(), self.basic_auth_user
        return (user, password) if user is not None and password is not None else None

    def tls(self) -> tuple[Path, Path] | None:
        """(certificate, key) files when TLS is on."""
        cert, key = self.tls_cert_file, self.tls_key_file
        return (cert, key) if cert is not None and key is not None else None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


# --- the file -------------------------------------------------------------------------------


class Config(Model):
    """The whole file. After loading, `budgets` holds every budget: the top-level ones, then
    each workspace's own with `workspaces` set to it; a budget that reads one workspace alone
    and names no channel has that workspace's `channel`."""

    langdock: LangdockConfig | None = None
    workspaces: tuple[WorkspaceConfig, ...] = ()
    schedule: ScheduleConfig = ScheduleConfig()
    state: StateConfig = StateConfig()
    history: HistoryConfig = HistoryConfig()
    slack: SlackConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    defaults: Defaults = Defaults()
    budgets: tuple[Budget, ...] = ()
    silences: tuple[Silence, ...] = ()
    anomalies: AnomalyConfig = AnomalyConfig()
    unit_cost: UnitCostConfig = UnitCostConfig()
    unowned: UnownedConfig = UnownedConfig()
    owners: tuple[Owner, ...] = ()
    reports: tuple[ReportConfig, ...] = ()

    @property
    def connections(self) -> tuple[Connection, ...]:
        """Every workspace: the `workspaces:` list, or `langdock:` as the one named "default"."""
        if self.langdock is not None:
            return (Connection(DEFAULT_WORKSPACE, self.langdock),)
        return tuple(Connection(item.name, item, item.channel) for item in self.workspaces)

    def sole_langdock(self) -> LangdockConfig:
        """The connection of a file with one workspace (`langdock:`, or a list of one)."""
        if len(self.connections) != 1:
            raise ValueError("the file has several workspaces: read `connections`")
        return self.connections[0].langdock

    @property
    def keyed_by_workspace(self) -> bool:
        """Whether keys are named by workspace (`workspaces:`): an api_key_id is then
        "workspace/id" throughout a cycle, so one id in two workspaces is two keys."""
        return bool(self.workspaces)

    def reads(self, budget: Budget) -> tuple[str, ...]:
        """The workspaces whose usage `budget` reads (not written: all of them)."""
        if budget.workspaces is not None:
            return budget.workspaces
        return tuple(connection.name for connection in self.connections)

    def _written_budgets(self) -> list[tuple[Loc, Budget]]:
        """Each budget as written: where it is in the file, and the budget."""
        found: list[tuple[Loc, Budget]] = [(("budgets", i), b) for i, b in enumerate(self.budgets)]
        for index, item in enumerate(self.workspaces):
            found += [(("workspaces", index, "budgets", i), b) for i, b in enumerate(item.budgets)]
        return found

    @model_validator(mode="after")
    def _one_way_to_langdock(self) -> Self:
        if self.langdock is not None and self.workspaces:
            raise at("workspaces", "give langdock (one workspace) or workspaces, not both")
        if self.langdock is None and not self.workspaces:
            if "workspaces" in self.model_fields_set:
                raise at("workspaces", "must not be empty")
            raise at("langdock", "is required (or workspaces: a list of Langdock workspaces)")
        names = {connection.name for connection in self.connections}
        for index, budget in enumerate(self.budgets):
            for place, name in enumerate(budget.workspaces or ()):
                if name not in names:
                    known = ", ".join(sorted(names))
                    message = f"names no workspace of this file (workspaces: {known})"
                    raise at(("budgets", index, "workspaces", place), message)
        return self

    @model_validator(mode="after")
    def _channels_need_token(self) -> Self:
        if self.slack is not None and self.slack.mode == "webhook":
            routed = [(loc, b.channel) for loc, b in self._written_budgets()]
            routed += [(("owners", i), o.channel) for i, o in enumerate(self.owners)]
            routed += [(("workspaces", i), w.channel) for i, w in enumerate(self.workspaces)]
            routed += [(("reports", i), r.channel) for i, r in enumerate(self.reports)]
            for loc, channel in routed:
                if channel is not None:
                    message = "needs slack.token: a webhook posts to its own channel only"
                    raise at((*loc, "channel"), message)
        return self

    @model_validator(mode="after")
    def _sections_agree(self) -> Self:  # anomaly overrides name budgets; reports need history
        if self.reports and not self.history.enabled:
            raise at("reports", "needs the usage history (history.enabled: true)")
        names = {budget.name for _loc, budget in self._written_budgets()}
        for name in self.anomalies.budgets:
            if name not in names:
                raise at(("anomalies", "budgets", name), "names no budget of this file")
        return self

    @model_validator(mode="after")
    def _every_budget(self) -> Self:
        """The last step: the workspaces' own budgets joined to `budgets`, channels resolved;
        with `langdock:`, `workspaces: [default]` is every workspace (None)."""
        if not self.workspaces:
            if all(budget.workspaces is None for budget in self.budgets):
                return self
            every = tuple(budget.model_copy(update={"workspaces": None}) for budget in self.budgets)
            return self.model_copy(update={"budgets": every})
        channels = {item.name: item.channel for item in self.workspaces}
        scoped = [
            budget.model_copy(update={"workspaces": (item.name,)})
            for item in self.workspaces
            for budget in item.budgets
        ]
        every = tuple(_routed(budget, channels) for budget in (*self.budgets, *scoped))
        return self.model_copy(update={"budgets": every})


def _routed(budget: Budget, channels: dict[str, str | None]) -> Budget:
    """`budget` with the channel of the one workspace it reads, unless it names its own."""
    if budget.channel is not None or budget.workspaces is None or len(budget.workspaces) != 1:
        return budget
    channel = channels.get(budget.workspaces[0])
    return budget if channel is None else budget.model_copy(update={"channel": channel})
