"""Slack's answers, hostile ones included: only Slack's own acceptance marks a row sent.

The real slack_sdk posts to the local stand-in (`slackstub.py`), which answers exactly what a
case says (any status, body, charset; a redirect to a second stand-in), from a real state file.
Property tests generate the answers; each example gets a fresh stand-in and state file, since a
programmed answer repeats for every request of the round (slack_sdk's retries included).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.web.base_client import BaseClient
from slack_sdk.webhook import WebhookClient
from slackrounds import (
    DEFAULT,
    NOW,
    enqueue,
    make_alert,
    run,
    sender,
    token_config,
    webhook_config,
)
from slackstub import TOKEN, WEBHOOK_SECRET, SlackStub

from costwatch import slack
from costwatch.config import SlackConfig
from costwatch.slack import DeliveryError, DeliveryReport
from costwatch.slack.http import MAX_BODY
from costwatch.slack.render import Rendered
from costwatch.state import OutboxItem, SqliteState

REPEAT = 3  # the first post and slack_sdk's two retries all get the same answer
HTML = b"<!DOCTYPE html><html><body><form action=/login>Sign in to continue</form></body></html>"

# Bodies an intermediary or a broken peer might answer with, and random ones.
ODD_BODIES = [
    b"",
    b" ",
    HTML,
    b"OK",
    b"ok ok",
    b"okay",
    b'"ok"',
    b"invalid_payload",
    b"no_service",
    b"null",
    b"[]",
    b"[1, 2]",
    b"{",
    b'{"ok": true',
    b'{"ok": true}',
    b'{"ok": "true"}',
    b'{"ok": 1}',
    b'{"ok": false}',
    b'{"ok": false, "error": "<b>x</b>"}',
    b'{"ok": null}',
    b"[" * 5000,
    b'{"ok": true, "n": ' + b"9" * 5000 + b"}",
    b"\xff\xfe\x00o\x00k",
    b"\x00",
    "ok\u00a0".encode(),
]
SCALARS = st.one_of(st.booleans(), st.none(), st.integers(), st.text(max_size=8))
BODIES = st.one_of(
    st.sampled_from(ODD_BODIES),
    st.binary(max_size=48),
    st.text(max_size=48).map(str.encode),
    st.dictionaries(st.sampled_from(["ok", "error", "ts"]), SCALARS).map(
        lambda value: json.dumps(value).encode()
    ),
)
STATUSES = st.one_of(
    st.sampled_from([200, 200, 200, 201, 202, 204, 400, 403, 404, 410, 429, 500, 502, 503]),
    st.integers(min_value=200, max_value=599).filter(lambda s: not 300 <= s < 400),
)
CHARSETS = st.sampled_from(["utf-8", "ascii", "latin-1", "no-such-charset", None])
LOGGERS = ("costwatch", "slack_sdk")


def webhook_accepts(status: int, body: bytes) -> bool:
    """Slack's incoming webhook accepts with HTTP 200 and the body `ok`."""
    return status == 200 and body.strip(b" \t\r\n") == b"ok"


def api_accepts(status: int, body: bytes) -> bool:
    """Slack's Web API accepts with HTTP 200 and a JSON object whose `ok` is true."""
    try:
        value = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return False
    return status == 200 and isinstance(value, dict) and value.get("ok") is True


class Captured(logging.Handler):
    """Every log record of the round, formatted (pytest's caplog is per test, not example)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)


def answered(
    config_for: str, status: int, body: bytes, charset: str | None, captured: Captured
) -> tuple[DeliveryReport, list[OutboxItem], SlackStub]:
    """One row, one delivery round against a stand-in that answers every request so."""
    content_type = "text/html" + (f"; charset={charset}" if charset else "")
    with SlackStub(retry_after=0) as stub, tempfile.TemporaryDirectory() as folder:
        stub.add_channel("ai-spend")
        headers = {"Retry-After": "0"}
        stub.answer_next(status, body, content_type=content_type, headers=headers, times=REPEAT)
        config = token_config(stub) if config_for == "token" else webhook_config(stub)
        with SqliteState.open(Path(folder) / "state.db") as state:
            enqueue(state, make_alert("support"))
            report = run(state, config, FakeClock())
            pending = state.pending()
            assert report.pending == len(pending)
    assert_no_secret(captured.lines + [repr(report)] + [str(i.last_error) for i in pending])
    return report, pending, stub


def assert_no_secret(texts: list[str]) -> None:
    for text in texts:
        assert TOKEN not in text
        assert WEBHOOK_SECRET not in text


def assert_kept(report: DeliveryReport, pending: list[OutboxItem]) -> None:
    """Not delivered: the row stays in the outbox with the error, for a later round."""
    assert (report.sent, report.failed, report.pending) == (0, 1, 1)
    (item,) = pending
    assert item.attempts == 1
    assert item.last_error


# -- webhook answers --------------------------------------------------------------------------


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=STATUSES, body=BODIES, charset=CHARSETS)
def test_a_webhook_row_is_sent_only_on_http_200_ok_and_no_answer_crashes_the_round(
    status: int, body: bytes, charset: str | None, captured: Captured
) -> None:
    report, pending, _ = answered("webhook", status, body, charset, captured)
    if webhook_accepts(status, body):
        assert (report.sent, report.pending) == (1, 0)
    else:
        assert_kept(report, pending)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (HTML, 200, "unexpected_answer"),  # a proxy's login page
        (b"", 200, "unexpected_answer"),
        (b"okay", 200, "unexpected_answer"),
        (b"ok", 201, "unexpected_answer"),
        (b"ok", 204, "unexpected_answer"),
        (b"invalid_payload", 200, "invalid_payload"),
    ],
)
def test_a_webhook_200_that_is_not_ok_keeps_the_row_and_is_counted_with_a_clear_code(
    body: bytes, status: int, code: str, captured: Captured
) -> None:
    report, pending, _ = answered("webhook", status, body, "utf-8", captured)
    assert_kept(report, pending)
    assert report.permanent_errors == {code: 1}
    assert str(pending[0].last_error).startswith(code)
    assert "Sign in" not in " ".join(captured.lines)  # described, never quoted


def test_webhook_ok_with_surrounding_whitespace_is_accepted(captured: Captured) -> None:
    report, _, _ = answered("webhook", 200, b"ok\r\n", None, captured)
    assert (report.sent, report.pending) == (1, 0)


@pytest.mark.parametrize("mode", ["token", "webhook"])
def test_an_answer_over_1_mib_is_unexpected_answer_whatever_it_starts_with(
    mode: str, captured: Captured
) -> None:
    start = b'{"ok": true, "pad": "' if mode == "token" else b"ok"
    body = start + b" " * MAX_BODY + (b'"}' if mode == "token" else b"")
    report, pending, _ = answered(mode, 200, body, "utf-8", captured)
    assert_kept(report, pending)
    assert report.permanent_errors == {"unexpected_answer": 1}


# -- Web API answers -------------------------------------------------------------------------


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=STATUSES, body=BODIES)
def test_a_web_api_row_is_sent_only_on_http_200_ok_true_and_no_answer_crashes_the_round(
    status: int, body: bytes, captured: Captured
) -> None:
    report, pending, _ = answered("token", status, body, "utf-8", captured)
    if api_accepts(status, body):
        assert (report.sent, report.pending) == (1, 0)
    else:
        assert report.sent == 0
        assert report.failed >= 1
        assert report.pending == 1
        assert pending[0].last_error


@pytest.mark.parametrize(
    "body",
    [HTML, b"", b"[1, 2]", b'"ok"', b"null", b"{", b'{"ok": "yes"}', b'{"ok": 1}', b"[" * 5000],
    ids=["html", "empty", "list", "string", "null", "broken", "ok-yes", "ok-1", "deep"],
)
def test_a_web_api_200_that_is_not_a_json_object_with_ok_true_is_unexpected_answer(
    body: bytes, captured: Captured
) -> None:
    report, pending, _ = answered("token", 200, body, "utf-8", captured)
    assert_kept(report, pending)
    assert report.permanent_errors == {"unexpected_answer": 1}
    assert str(pending[0].last_error).startswith("unexpected_answer")


# -- redirects --------------------------------------------------------------------------------


@pytest.fixture
def elsewhere() -> Iterator[SlackStub]:
    """Another host, which would accept anything sent to it."""
    with SlackStub(retry_after=0) as other:
        yield other


def _redirected_config(mode: str, stub: SlackStub) -> SlackConfig:
    return token_config(stub, retry_every="1m") if mode == "token" else webhook_config(stub)


@pytest.mark.parametrize("mode", ["token", "webhook"])
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_the_other_host_gets_nothing_and_the_row_stays(
    mode: str,
    status: int,
    elsewhere: SlackStub,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    accepting = b'{"ok": true, "ts": "1.0"}' if mode == "token" else b"ok"
    elsewhere.answer_next(200, accepting, times=10)
    with SlackStub(retry_after=0) as stub, SqliteState.open(tmp_path / "state.db") as state:
        stub.add_channel("ai-spend")
        path = "/api/chat.postMessage" if mode == "token" else f"/services/{WEBHOOK_SECRET}"
        stub.redirect_next(status, elsewhere.base_url + path, times=10)
        enqueue(state, make_alert("a"), make_alert("b"))
        config = _redirected_config(mode, stub)
        report = run(state, config, FakeClock())
        assert len(stub.requests) == 1  # one post; refused, not retried, the round stopped
        assert (report.sent, report.failed, report.pending) == (0, 2, 2)
        assert report.permanent_errors == {"redirected": 1}
        assert all(str(i.last_error).startswith("redirected") for i in state.pending())
        with pytest.raises(DeliveryError) as caught:
            sender(config).post(DEFAULT, Rendered(text="hello"))
        assert caught.value.code == "redirected"
    assert elsewhere.requests == []  # neither the token nor the webhook's path went there
    assert_no_secret([caplog.text, str(caught.value), repr(report)])


def test_a_redirected_row_is_delivered_once_the_address_answers_again(
    elsewhere: SlackStub, tmp_path: Path
) -> None:
    with SlackStub(retry_after=0) as stub, SqliteState.open(tmp_path / "state.db") as state:
        stub.add_channel("ai-spend")
        stub.redirect_next(302, elsewhere.base_url + "/api/chat.postMessage")
        enqueue(state, make_alert("a"))
        config = token_config(stub, retry_every="1m")
        assert run(state, config, FakeClock()).pending == 1
        later = NOW + timedelta(minutes=1)
        report = run(state, config, FakeClock(), now=later)
        assert (report.sent, report.pending) == (1, 0)
        assert len(stub.posts()) == 1
    assert elsewhere.requests == []


def test_test_channels_names_a_redirect_and_an_html_answer(elsewhere: SlackStub) -> None:
    with SlackStub(retry_after=0) as stub:
        stub.add_channel("ai-spend")
        stub.redirect_next(301, elsewhere.base_url + "/")
        stub.answer_next(200, HTML)
        checks = slack.test_channels(sender(token_config(stub)), [DEFAULT, "#finance"], NOW)
    assert [(c.ok, c.error) for c in checks] == [
        (False, "redirected"),
        (False, "unexpected_answer"),
    ]
    assert all("slack.api_url" in (c.remedy or "") for c in checks)
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("base", "method"),
    [
        (BaseClient, "_perform_urllib_http_request_internal"),  # WebClient's base
        (WebhookClient, "_perform_http_request_internal"),
    ],
)
def test_a_slack_sdk_without_the_method_that_opens_requests_is_refused_not_trusted(
    base: type, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for a slack_sdk upgrade that renamed it: our override would go unused and
    redirects would be followed again, so no client is made."""
    monkeypatch.delattr(base, method)
    config = SlackConfig.model_validate(
        {"token": TOKEN, "channel": DEFAULT}
        if base is BaseClient
        else {"webhook_url": f"https://hooks.slack.com/services/{WEBHOOK_SECRET}"}
    )
    with pytest.raises(RuntimeError, match="redirect"):
        sender(config)
