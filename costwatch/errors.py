"""Every error costwatch raises on purpose, in one place.

    CostwatchError
    ├── ConfigError                 the YAML file is wrong; carries every problem at once
    ├── UsageError                  an export's CSV cannot be trusted (column, first bad row)
    ├── StateError                  the state file is damaged, locked, unwritable or too new
    │   ├── NotLeaderError          PostgreSQL: this process is no longer (or not) the leader,
    │   │                           so it may not write: fenced by the epoch (`state/leader.py`)
    │   └── StateMissing            opened to read only (a dry run), the database holds no
    │                               costwatch state yet: read as "nothing stored", never created
    ├── DeliveryError               Slack did not take a message: Slack's `code`, the `remedy`
    │                               in plain words, and its `scope`: what else it rules out
    │                               (the workspace, the channel, the message, or nothing)
    └── ExportError                 the Langdock export failed; `reason` is a metric label
        ├── ExportAuthError         401: key wrong or missing the USAGE_EXPORT_API scope
        ├── ExportRequestError      another 400, or a request that cannot be sent (a host name
        │                           that is not one, a key that is not header text): not
        │                           retried; reason "too_large" when even one day is too large
        ├── ExportProtocolError     `success: false`, a body of another shape, a bad URL, more
        │                           rows than the answer's recordCount
        ├── ExportPeriodError       the CSV's period_start/period_end contradict the range
        ├── ExportDownloadError     the signed download failed, broke off or was too big
        ├── ExportIncompleteError   the file holds fewer rows than the answer's recordCount
        ├── ExportInternalError     an unexpected exception in the cycle (a bug); logged once
        │                           with its traceback
        └── ExportUnavailableError  429, 5xx, timeouts, connection errors, cut-off downloads,
                                    after all retries

Two more are not errors but signals, raised and caught on purpose:

    Stopping                        a wait or request cut short by the shutdown (or by the time
                                    it leaves): nothing of that work was recorded; said at INFO
    Retryable                       an attempt worth another (`costwatch.langdock.retry`);
                                    `reason` names what failed, and when the retries run out
                                    it becomes an ExportUnavailableError of that reason

Every failure of a cycle is an ExportError or a UsageError, so it is counted under its `reason`
(`EXPORT_FAILURE_REASONS`, derived from the classes, never listed by hand) and `costwatch
check` exits 2. Slack's codes are counted the same way (`costwatch.slack.answers`).
Messages never contain a secret: the Langdock key and Slack tokens stay out of every `str()`
and `repr()` of these errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal


class CostwatchError(Exception):
    """Base class of every error costwatch raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration file, with where it is."""

    path: str  # "budgets[2].limits.cost_usd"; "" for the whole file
    message: str
    line: int | None = None  # 1-based line in the YAML file, where known

    def __str__(self) -> str:
        where = self.path or "(file)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(CostwatchError):
    """The configuration is invalid; `problems` lists every problem found, in file order."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(self._describe())

    def _describe(self) -> str:
        count = len(self.problems)
        head = f"{self.source}: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class UsageError(CostwatchError):
    """An export's CSV is malformed: names the column and the first bad row where known."""

    reason: ClassVar[str] = "usage"

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None) -> None:
        self.column = column
        self.row = row
        super().__init__(message)


class StateError(CostwatchError):
    """The state (the SQLite file, the PostgreSQL database) cannot be used. Never answered by
    starting afresh: that would re-send the whole period's alerts."""


class NotLeaderError(StateError):
    """A write of a process that is not the leader (any more): refused in the transaction that
    would have written it, so a deposed leader commits nothing."""


class StateMissing(StateError):
    """A read-only open found no state to read (an empty PostgreSQL database): the reader goes
    on without one, as `check --dry-run` does without a SQLite file; a writer would create it."""


class ExportError(CostwatchError):
    """The export failed. `reason` is a short, stable label for metrics; a class that can carry
    other labels than its own lists them in `other_reasons`."""

    reason: str = "error"
    other_reasons: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(message)


class ExportAuthError(ExportError):
    reason = "unauthorized"


class ExportRequestError(ExportError):
    reason = "bad_request"
    other_reasons = ("too_large",)


class ExportProtocolError(ExportError):
    reason = "protocol"


class ExportPeriodError(ExportError):
    reason = "period_mismatch"


class ExportDownloadError(ExportError):
    reason = "download"


class ExportIncompleteError(ExportError):
    """The downloaded file holds fewer rows than the export answer's recordCount."""

    reason = "incomplete"


class ExportInternalError(ExportError):
    """An unexpected exception while exporting, loading or evaluating: a bug in costwatch or in
    a library it uses. The cycle fails like any other failed export; the traceback is logged."""

    reason = "internal"


class ExportUnavailableError(ExportError):
    """Retries ran out. `reason` says what kept failing."""

    reason = "unavailable"
    other_reasons = (
        "rate_limited",
        "server_error",
        "timeout",
        "connection",
        "download",
        "incomplete",
    )


def _reasons(cls: type[ExportError]) -> list[str]:
    own = [cls.reason, *cls.other_reasons]
    return own + [r for sub in cls.__subclasses__() for r in _reasons(sub)]


# Every value a failed cycle's reason can take, so metrics can create the label children up
# front: each ExportError class's, then UsageError's, then the base class's fallback last.
EXPORT_FAILURE_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys([*_reasons(ExportError)[1:], UsageError.reason, ExportError.reason])
)


class Retryable(Exception):
    """A failure worth another attempt; `reason` is a stable label for what failed."""

    def __init__(self, reason: str, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description
        self.retry_after = retry_after


# What a refused Slack post rules out (`costwatch.slack.answers`).
DeliveryScope = Literal["workspace", "channel", "message", "transient"]


class DeliveryError(CostwatchError):
    """Slack did not take a message. `code` is Slack's error (or timeout, connection, http_500);
    `remedy` says what to do; `scope` what else it rules out (see the module docstring)."""

    def __init__(
        self, code: str, remedy: str, *, scope: DeliveryScope, channel: str | None
    ) -> None:
        self.code = code
        self.remedy = remedy
        self.scope = scope
        self.channel = channel
        super().__init__(f"{code}: {remedy}")

    @property
    def permanent(self) -> bool:
        return self.scope != "transient"


class Stopping(Exception):
    """A wait or request was cut short because the daemon is shutting down."""
