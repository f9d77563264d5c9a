"""Delivery of the outbox to Slack through `slack_sdk`: a bot token or an incoming webhook.

- **Retries inside one post** are slack_sdk's handlers, bounded: rate limits (429),
  connection errors (refused, reset, dropped) and 500/503. A read timeout is not retried in the
  same post (it costs `timeout` each time, and Slack may have posted already); the row waits
  for the next round like any other transient failure.
- **Retry-After** is read robustly (seconds, fractions, an HTTP-date; negative means now;
  missing or unreadable means 1 s) and waited out only up to `RETRY_AFTER_CAP` and the time the
  round has left: asked to wait longer, the post gives up at once and the rows wait for a later
  round, like any rate limit.
- **Deadlines**: every wait of a round (pacing, Retry-After, the pause before a retry) goes
  through the round's `Deadline` and ends when the daemon stops; no post starts after that, a
  post's timeout never outlasts it, and the round ends with `interrupted` set and the rows it
  did not reach still due. The daemon's last round on shutdown gets what is left of the grace.
- **Pacing**: at most one post per `min_interval_seconds` per channel (Slack's one message a
  second a channel); channels are served in turn, so one busy channel does not hold up the rest.
- **Digests**: more than `digest_after` alert rows for one channel in one round become one
  message; every row of it is marked sent when Slack accepts it.
- **Never dropped**: a row is marked sent right after Slack accepts its message, and otherwise
  marked failed with the error and `retry_at = now + retry_every`, so it is tried again in a
  later round, across restarts. At least once: a duplicate only if Slack posted but its answer
  was lost (a timeout), or the process died before `mark_sent`.
- **Errors retrying cannot fix** (a wrong token, an unknown or archived channel, the app not in
  the channel, a dead webhook) are logged once per error and channel per process with the
  remedy in plain words, and counted in the report. With a token, a channel error re-routes the
  message to the default channel with a line saying where it should have gone.
- **Accepted means Slack said so**: a webhook's HTTP 200 with the body `ok`, or a Web API
  HTTP 200 whose JSON object has `ok: true`. Anything else (an empty body, a proxy's HTML page,
  a redirect, JSON of another shape) is a `DeliveryError` and the rows stay; no answer can
  crash the round (`slackhttp.py` turns what slack_sdk would choke on into errors).
- **Secrets**: the token and the webhook URL (it holds the credential) appear in no log record,
  error message or report. slack_sdk formats request URLs and headers into its own log records
  (f-strings, at DEBUG and INFO), so it is handed a logger that emits nothing at any level:
  nothing is redacted afterwards because nothing with a secret is ever formatted for output.
  What costwatch reports about delivery it logs itself. No redirect is followed, so neither
  reaches a host other than the configured one.
- **Rows that cannot be rendered** are refused one by one before the round is planned, so one
  of them never holds up a digest; rows damaged in storage never get here (`State.pending`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.client import HTTPException
from typing import Any, Protocol, cast

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    FixedValueRetryIntervalCalculator,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from costwatch import slackblocks
from costwatch.config import SlackConfig
from costwatch.deadline import UNBOUNDED, Deadline, Stopping
from costwatch.retryafter import parse_retry_after
from costwatch.slackerrors import (
    DeliveryError,
    api_error,
    redirected,
    transport_error,
    unexpected_answer,
    webhook_error,
)
from costwatch.slackhttp import (
    GuardedWebClient,
    GuardedWebhookClient,
    Redirected,
    UnexpectedAnswer,
    require_supported,
)
from costwatch.slackrender import Rendered, render, render_digest, render_test
from costwatch.state import OutboxItem, Store

__all__ = [
    "RETRY_AFTER_CAP",
    "ChannelCheck",
    "DeliveryError",
    "DeliveryReport",
    "Sender",
    "deliver",
    "sender_from_config",
    "test_channels",
]

log = logging.getLogger(__name__)

MAX_RETRIES = 2  # per post, all of slack_sdk's handlers together (they share one counter)
RETRY_INTERVAL = 1.0  # seconds between retries after a connection error or a 500/503
RETRY_AFTER_CAP = 30.0  # seconds: asked to wait longer, a post leaves its rows for later


class Sender(Protocol):
    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        """Post one message within `deadline`; raises DeliveryError when Slack does not take
        it, `Stopping` when the deadline ends a wait inside the post."""


@dataclass(frozen=True)
class _Transport:
    """What every post's client is built from: a client per post, so that its timeout and its
    retry waits belong to that post's deadline."""

    timeout: float  # seconds per HTTP request, before the deadline caps it
    retry_interval: float

    def options(self, deadline: Deadline) -> dict[str, Any]:
        seconds = cast(int, deadline.cap(self.timeout))  # urllib takes float seconds
        handlers = _retry_handlers(deadline, self.retry_interval)
        return {"timeout": seconds, "retry_handlers": handlers, "logger": _sdk_log}


class _WebApiSender:
    """chat.postMessage with a bot token; accepted only on HTTP 200 with `ok: true`."""

    def __init__(self, config: SlackConfig, transport: _Transport) -> None:
        self._config = config
        self._transport = transport

    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        if channel is None:
            raise DeliveryError("no_channel", "set slack.channel", scope="message", channel=None)
        client = GuardedWebClient(
            token=self._config.secret_token(),
            base_url=self._config.api_url,
            **self._transport.options(deadline),
        )
        with _translated(channel):
            response = client.chat_postMessage(channel=channel, **_fields(message))
        data = response.data  # slack_sdk takes any truthy `ok` (1, "yes") for success
        if response.status_code != 200 or not isinstance(data, dict) or data.get("ok") is not True:
            raise unexpected_answer(response.status_code, "no ok: true", channel)


class _WebhookSender:
    """An incoming webhook: one channel, chosen when the webhook was created. Accepted only on
    HTTP 200 with the body `ok` (around it, whitespace at most)."""

    def __init__(self, config: SlackConfig, transport: _Transport) -> None:
        self._config = config
        self._transport = transport

    def post(self, channel: str | None, message: Rendered, deadline: Deadline = UNBOUNDED) -> None:
        url = self._config.secret_webhook_url()
        assert url is not None  # SlackConfig has one mode or the other
        client = GuardedWebhookClient(url, **self._transport.options(deadline))
        with _translated(channel):
            response = client.send(**_fields(message))
        body = str(response.body)
        if response.status_code != 200 or body.strip(" \t\r\n") != "ok":
            raise webhook_error(response.status_code, body, channel)


def _fields(message: Rendered) -> dict[str, Any]:
    blocks = message.blocks or None
    return {"text": message.text, "blocks": blocks, "unfurl_links": False, "unfurl_media": False}


@contextmanager
def _translated(channel: str | None) -> Iterator[None]:
    """slack_sdk's exceptions as DeliveryError, without their text or chain (they may hold
    the webhook URL)."""
    try:
        yield
    except SlackApiError as error:
        raise api_error(error, channel) from None
    except Redirected as error:
        raise redirected(error.status, channel) from None
    except UnexpectedAnswer as error:
        raise unexpected_answer(error.status, error.shape, channel) from None
    except (OSError, HTTPException, SlackClientError) as error:
        raise transport_error(error, channel) from None


# -- building a sender --------------------------------------------------------------------------


def _silent_logger() -> logging.Logger:
    """The logger slack_sdk gets: outside the logging tree, disabled, above every level.

    slack_sdk puts the webhook URL (any path, not only /services/) and request headers into
    its messages; a level above CRITICAL makes `isEnabledFor` false for all of them, and no
    handler, root or `lastResort`, is ever reached, whatever `--log-level` says.
    """
    silent = logging.Logger("costwatch.slack.sdk", level=logging.CRITICAL + 1)
    silent.propagate = False
    silent.disabled = True
    return silent


_sdk_log = _silent_logger()


def retry_after_wait(value: str | None, *, remaining: float = math.inf) -> float | None:
    """Seconds to wait before retrying a rate-limited post, or None: not within this post.

    Any header value is read, none raises: seconds (fractions too) or an HTTP-date; negative
    means now; missing or unreadable, 1 s (as slack_sdk). Longer than `RETRY_AFTER_CAP` or than
    the `remaining` time: None, and the rows wait for a later round.
    """
    seconds = parse_retry_after(value)
    wait = 1.0 if seconds is None else seconds
    return wait if wait <= min(RETRY_AFTER_CAP, remaining) else None


def _header(response: HttpResponse, name: str) -> str | None:
    for key, values in response.headers.items():
        if key.lower() == name and values:
            return str(values[0])
    return None


class _RateLimitHandler(RateLimitErrorRetryHandler):
    """A 429 retried after its Retry-After (read by `retry_after_wait`), waited out through the
    post's deadline; a longer Retry-After is not retried in this post."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__(max_retry_count=MAX_RETRIES)
        self._deadline = deadline

    def _wait(self, response: HttpResponse | None) -> float | None:
        if response is None or response.status_code != 429:
            return None
        return retry_after_wait(
            _header(response, "retry-after"), remaining=self._deadline.remaining()
        )

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return self._wait(response) is not None

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        self._deadline.wait(self._wait(response) or 0.0)
        state.increment_current_attempt()


class _ConnectionErrorHandler(ConnectionErrorRetryHandler):
    """slack_sdk's, with the pause before a retry waited out through the post's deadline."""

    def __init__(self, deadline: Deadline, interval: float) -> None:
        wait = FixedValueRetryIntervalCalculator(interval)
        super().__init__(max_retry_count=MAX_RETRIES, interval_calculator=wait)
        self._deadline = deadline

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        _pause(self, self._deadline, state)


class _ServerErrorHandler(ServerErrorRetryHandler):
    """slack_sdk's (500, 503), with the pause waited out through the post's deadline."""

    def __init__(self, deadline: Deadline, interval: float) -> None:
        wait = FixedValueRetryIntervalCalculator(interval)
        super().__init__(max_retry_count=MAX_RETRIES, interval_calculator=wait)
        self._deadline = deadline

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        _pause(self, self._deadline, state)


def _pause(handler: RetryHandler, deadline: Deadline, state: RetryState) -> None:
    """RetryHandler.prepare_for_next_attempt, but a wait the deadline can end."""
    state.next_attempt_requested = True
    deadline.wait(handler.interval_calculator.calculate_sleep_duration(state.current_attempt))
    state.increment_current_attempt()


def _retry_handlers(deadline: Deadline, interval: float = RETRY_INTERVAL) -> list[RetryHandler]:
    """slack_sdk's retries, bounded in number (`MAX_RETRIES` in all) and in time (`deadline`)."""
    return [
        _RateLimitHandler(deadline),
        _ConnectionErrorHandler(deadline, interval),
        _ServerErrorHandler(deadline, interval),
    ]


def sender_from_config(
    config: SlackConfig, *, timeout: float = 10.0, retry_interval: float = RETRY_INTERVAL
) -> Sender:
    """The sender for `config.mode`; `timeout` in seconds per HTTP request (capped by each
    post's deadline)."""
    require_supported()  # before any post: redirects must never be followed
    transport = _Transport(timeout, retry_interval)
    if config.secret_token() is not None:
        return _WebApiSender(config, transport)
    return _WebhookSender(config, transport)


# -- delivering the outbox ----------------------------------------------------------------------


@dataclass
class DeliveryReport:
    sent: int = 0  # outbox rows Slack accepted (re-routed ones included)
    messages: int = 0  # messages Slack accepted (a digest is one)
    failed: int = 0  # rows left in the outbox for a later round
    rerouted: int = 0  # rows delivered to the default channel instead of their own
    digests: int = 0
    permanent_errors: dict[str, int] = field(default_factory=dict)  # code -> posts refused
    transient_errors: dict[str, int] = field(default_factory=dict)  # code -> posts failed
    pending: int = 0  # unsent rows in the outbox after this round
    interrupted: bool = False  # the deadline ended the round; the rows not reached stay due


@dataclass(frozen=True)
class _Send:
    channel: str | None  # where the rows belong (None: the webhook's own channel)
    items: tuple[OutboxItem, ...]
    digest: bool


_REPORTED: set[tuple[str, str]] = set()  # (code, channel) logged by this process


def deliver(
    state: Store,
    sender: Sender,
    config: SlackConfig,
    now: datetime,
    *,
    deadline: Deadline = UNBOUNDED,
    sleep: Callable[[float], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    reported: set[tuple[str, str]] | None = None,
) -> DeliveryReport:
    """Send the outbox rows due at `now` within `deadline`; see the module docstring. `sleep`
    paces posts (default: `deadline.wait`). `reported` remembers which (error, channel) were
    already logged; by default, for the life of the process."""
    once = _REPORTED if reported is None else reported
    round_ = _Round(state, sender, config, now, sleep or deadline.wait, monotonic, once, deadline)
    renderable = [item for item in state.pending(now) if round_.renders(item)]
    for send in _plan(renderable, config):
        try:
            round_.send(send)
        except Stopping:  # the rows of this send and the rest were not tried: still due
            round_.report.interrupted = True
            break
    round_.report.pending = state.pending_count()
    return round_.report


def _plan(items: Sequence[OutboxItem], config: SlackConfig) -> list[_Send]:
    """Per channel: a digest for many alerts, else one message a row; channels take turns."""
    groups: dict[str | None, list[OutboxItem]] = {}
    for item in items:
        groups.setdefault(_channel(item, config), []).append(item)
    queues = []
    for channel, rows in groups.items():
        alerts = [row for row in rows if row.kind == "alert"]
        digest = len(alerts) > config.digest_after
        sends = [_Send(channel, tuple(alerts), True)] if digest else []
        sends += [
            _Send(channel, (row,), False) for row in rows if not digest or row.kind != "alert"
        ]
        queues.append(sorted(sends, key=lambda send: send.items[0].id))
    turns = itertools.zip_longest(*queues)
    return [send for turn in turns for send in turn if send is not None]


def _channel(item: OutboxItem, config: SlackConfig) -> str | None:
    """Where a row belongs (None: the webhook's own channel)."""
    return (item.channel or config.channel) if config.mode == "token" else None


@dataclass
class _Round:
    """One pass over the due rows: pacing, re-routing and what each failure rules out."""

    state: Store
    sender: Sender
    config: SlackConfig
    now: datetime
    sleep: Callable[[float], None]
    monotonic: Callable[[], float]
    reported: set[tuple[str, str]]
    deadline: Deadline = UNBOUNDED
    report: DeliveryReport = field(default_factory=DeliveryReport)
    last_post: dict[str | None, float] = field(default_factory=dict)
    rerouted: dict[str | None, DeliveryError] = field(default_factory=dict)  # why, by channel
    blocked: dict[str | None, DeliveryError] = field(default_factory=dict)  # not this round
    stopped: DeliveryError | None = None  # nothing more this round

    def renders(self, item: OutboxItem) -> bool:
        """Whether the row renders on its own; if not, it is refused now, alone, so that it
        holds up no digest and no other row."""
        try:
            render(item, now=self.now)
        except Exception:
            self._unrenderable(_Send(_channel(item, self.config), (item,), False))
            return False
        return True

    def send(self, send: _Send) -> None:
        target = self.config.channel if send.channel in self.rerouted else send.channel
        skip = self.stopped or self.blocked.get(target)
        if skip is not None:
            self._fail(send, skip)
            return
        try:
            message = _render(send, self.now)
        except Exception:
            self._unrenderable(send)
            return
        if target != send.channel:
            message = _with_note(message, send.channel, self.rerouted[send.channel])
        try:
            self._post(target, message)
        except DeliveryError as error:
            self._failed(send, target, error)
            return
        self.state.mark_sent([item.id for item in send.items], self.now)
        self.report.messages += 1
        self.report.sent += len(send.items)
        self.report.digests += int(send.digest)
        self.report.rerouted += len(send.items) if target != send.channel else 0

    def _unrenderable(self, send: _Send) -> None:
        log.exception("cannot render outbox row %s; it stays in the outbox", send.items[0].id)
        self._refused(_render_failed(send.channel), send)

    def _post(self, channel: str | None, message: Rendered) -> None:
        last = self.last_post.get(channel)
        if last is not None:
            wait = last + self.config.min_interval_seconds - self.monotonic()
            if wait > 0:
                self.sleep(wait)
        self.deadline.check()  # no post starts once the daemon stops
        try:
            self.sender.post(channel, message, self.deadline)
        finally:
            self.last_post[channel] = self.monotonic()

    def _failed(self, send: _Send, target: str | None, error: DeliveryError) -> None:
        default = self.config.channel
        if error.scope == "channel" and self.config.mode == "token" and target != default:
            self._count(error, f"re-routing its alerts to {default}")
            self.rerouted[send.channel] = error
            self.send(send)
        elif error.scope == "workspace":
            self.stopped = error
            self._refused(error, send)
        elif error.scope == "message":
            self._refused(error, send)
        else:
            self.blocked[target] = error
            self._refused(error, send)

    def _refused(self, error: DeliveryError, send: _Send) -> None:
        if error.permanent:
            self._count(error, "its alerts stay in the outbox")
        else:
            errors = self.report.transient_errors
            errors[error.code] = errors.get(error.code, 0) + 1
            log.warning("Slack delivery to %s failed: %s", _where(error.channel), error)
        self._fail(send, error)

    def _count(self, error: DeliveryError, outcome: str) -> None:
        errors = self.report.permanent_errors
        errors[error.code] = errors.get(error.code, 0) + 1
        key = (error.code, error.channel or "")
        if key not in self.reported:
            self.reported.add(key)
            log.error("Slack refused a post to %s: %s; %s", _where(error.channel), error, outcome)

    def _fail(self, send: _Send, error: DeliveryError) -> None:
        retry_at = self.now + self.config.retry_every
        for item in send.items:
            self.state.mark_failed(item.id, str(error), self.now, retry_at)
        self.report.failed += len(send.items)


def _render(send: _Send, now: datetime) -> Rendered:
    return render_digest(send.items, now=now) if send.digest else render(send.items[0], now=now)


def _render_failed(channel: str | None) -> DeliveryError:
    remedy = "costwatch cannot render this outbox row: a bug, please report it"
    return DeliveryError("render_failed", remedy, scope="message", channel=channel)


def _with_note(message: Rendered, channel: str | None, error: DeliveryError) -> Rendered:
    """The message with a first line saying where it belongs and why it is here instead."""
    note = f"Meant for {channel}, posted here: {error}"
    context = slackblocks.context([slackblocks.plain_text(slackblocks.plain(note))])
    blocks = [context, *message.blocks][: slackblocks.MAX_BLOCKS] if message.blocks else []
    return Rendered(text=f"{slackblocks.mrkdwn(note)}\n{message.text}", blocks=blocks)


def _where(channel: str | None) -> str:
    return channel or "the webhook's channel"


# -- checking the wiring ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelCheck:
    channel: str
    ok: bool
    error: str | None = None  # Slack's error code
    remedy: str | None = None  # what to do about it, in plain words


def test_channels(sender: Sender, channels: Sequence[str], now: datetime) -> list[ChannelCheck]:
    """Post the test message to each channel (once each); what worked and what to fix."""
    checks = []
    for channel in dict.fromkeys(channels):
        try:
            sender.post(channel, render_test(channel, now=now))
        except DeliveryError as error:
            checks.append(ChannelCheck(channel, False, error.code, error.remedy))
        else:
            checks.append(ChannelCheck(channel, True))
    return checks
