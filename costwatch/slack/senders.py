"""Posting one message to Slack through `slack_sdk`: the Web API with a bot token, or an incoming
webhook, behind one `Sender` (the terminal's, for `costwatch demo`, is in `terminal.py`).

- **Retries inside one post** are slack_sdk's handlers, bounded: rate limits (429),
  connection errors (refused, reset, dropped) and 500/503. A read timeout is not retried in the
  same post (it costs `timeout` each time, and Slack may have posted already).
- **Retry-After** is read robustly (seconds, fractions, an HTTP-date; negative means now;
  missing or unreadable means 1 s) and waited out only up to `RETRY_AFTER_CAP` and the time the
  post's deadline has left: asked to wait longer, the post gives up at once.
- **Deadlines**: every wait inside a post goes through its `Deadline`, and its HTTP timeout
  never outlasts it.
- **Accepted means Slack said so**: a webhook's HTTP 200 with the body `ok`, or a Web API
  HTTP 200 whose JSON object has `ok: true`. Anything else is a `DeliveryError`
  (`answers.py` says what it means; `http.py` turns what slack_sdk would choke on into errors).
- **Secrets**: slack_sdk formats request URLs and headers into its own log records, so it is
  handed a logger that emits nothing at any level; no redirect is followed, so neither the
  token nor the webhook URL reaches a host other than the configured one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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

from costwatch.config import SlackConfig
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.errors import DeliveryError
from costwatch.retryafter import parse_retry_after
from costwatch.slack.answers import (
    api_error,
    redirected,
    transport_error,
    unexpected_answer,
    webhook_error,
)
from costwatch.slack.http import (
    GuardedWebClient,
    GuardedWebhookClient,
    Redirected,
    UnexpectedAnswer,
    require_supported,
)
from costwatch.slack.render import Rendered, render_test

__all__ = [
    "MAX_RETRIES",
    "RETRY_AFTER_CAP",
    "ChannelCheck",
    "Sender",
    "sender_from_config",
    "test_channels",
]

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
        return {"timeout": seconds, "retry_handlers": handlers, "logger": SDK_LOG}


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


SDK_LOG = _silent_logger()


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


class _PausedOnDeadline(RetryHandler):
    """A slack_sdk handler whose pause before a retry is waited out through the post's
    deadline (slack_sdk sleeps with `time.sleep`, which no stop can end)."""

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
        state.next_attempt_requested = True
        pause = self.interval_calculator.calculate_sleep_duration(state.current_attempt)
        self._deadline.wait(pause)
        state.increment_current_attempt()


class _ConnectionErrorHandler(_PausedOnDeadline, ConnectionErrorRetryHandler):
    """slack_sdk's: a refused, reset or dropped connection is retried."""


class _ServerErrorHandler(_PausedOnDeadline, ServerErrorRetryHandler):
    """slack_sdk's: a 500 or 503 is retried."""


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
