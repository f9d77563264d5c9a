"""Slack delivery: the real slack_sdk against the local stand-in (`slackstub.py`) over loopback.

Outbox rows are made the real way (`SqliteState.commit` with `Alert` payloads) in a real state file.
Pacing never waits: `sleep` and `monotonic` are a fake clock. slack_sdk's own retry waits are
real but short (`retry_interval`, `Retry-After: 0`), except where a test proves the wait.
Assertions are on routing, counts, ids, mentions and retries, never on message wording.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import Background, returns_within, wait_for
from slackrounds import (
    DEFAULT,
    LATER,
    MENTIONS,
    NOW,
    Recorder,
    chat_posts,
    enqueue,
    make_alert,
    run,
    sender,
    slack_errors,
    texts_posted,
    token_config,
    webhook_config,
)
from slackstub import TOKEN, WEBHOOK_SECRET, SlackStub

from costwatch import slack
from costwatch.config import SlackConfig
from costwatch.deadline import UNBOUNDED, Deadline, StopSignal
from costwatch.health import Operational
from costwatch.metrics import Metrics
from costwatch.slack import DeliveryError, DeliveryReport, sender_from_config
from costwatch.slack.render import Rendered
from costwatch.state import Message, SqliteState


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # slack_sdk's loggers included


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(retry_after=0) as server:
        for name in ("ai-spend", "support-eng", "finance"):
            server.add_channel(name)
        server.add_channel("private", member=False)
        server.add_channel("old", archived=True)
        yield server


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    with SqliteState.open(tmp_path / "state.db") as opened:
        yield opened


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- routing --------------------------------------------------------------------------------


def test_each_alert_goes_to_its_budget_channel(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, make_alert("support", "#support-eng"), make_alert("cfo", "#finance"))
    report = run(state, token_config(stub), clock)
    assert (report.sent, report.messages, report.failed, report.pending) == (2, 2, 0, 0)
    assert [r.channel for r in stub.posts()] == ["#support-eng", "#finance"]
    assert len(stub.posts("support-eng")) == len(stub.posts("finance")) == 1


def test_an_alert_without_a_budget_channel_goes_to_the_default_channel(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, make_alert("every-key"), channel=None)  # a row with no channel at all
    enqueue(state, make_alert("workspace"))  # the cycle's default
    report = run(state, token_config(stub), clock)
    assert report.sent == 2
    assert len(stub.posts(DEFAULT)) == 2


def test_the_bot_token_goes_in_the_authorization_header(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, make_alert("support"))
    run(state, token_config(stub), clock)
    (post,) = stub.posts()
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.body["text"]  # a notification text, besides any blocks


def test_mentions_of_the_budget_reach_slack(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, make_alert("support", "#support-eng", mention=MENTIONS))
    run(state, token_config(stub), clock)
    (post,) = stub.posts("support-eng")
    for mention in MENTIONS:
        assert mention in post.text


# -- digests --------------------------------------------------------------------------------


def test_six_alerts_for_one_channel_become_one_digest_and_six_rows_sent(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, *(make_alert(f"b{i}", "#finance") for i in range(6)))
    report = run(state, token_config(stub, digest_after=5), clock)
    assert (report.messages, report.digests, report.sent, report.pending) == (1, 1, 6, 0)
    assert len(stub.posts("finance")) == 1
    assert state.pending() == []


def test_five_alerts_for_one_channel_are_five_messages(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, *(make_alert(f"b{i}", "#finance") for i in range(5)))
    report = run(state, token_config(stub, digest_after=5), clock)
    assert (report.messages, report.digests, report.sent) == (5, 0, 5)
    assert len(stub.posts("finance")) == 5


def test_digests_are_per_channel_and_leave_operational_notices_alone(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, *(make_alert(f"b{i}", "#finance") for i in range(3)))
    enqueue(state, *(make_alert(f"d{i}") for i in range(3)))
    failing = Operational("exports_failing", NOW, 4, NOW - timedelta(hours=1), None, "timeout")
    payload = json.loads(json.dumps(dataclasses.asdict(failing), default=str))
    state.commit(now=NOW, messages=[Message("exports_failing", DEFAULT, payload)])
    report = run(state, token_config(stub, digest_after=2), clock)
    assert (report.digests, report.messages, report.sent, report.pending) == (2, 3, 7, 0)
    assert len(stub.posts("finance")) == 1
    assert len(stub.posts(DEFAULT)) == 2  # the digest of three, and the notice on its own


@settings(max_examples=25, deadline=None)
@given(
    channels=st.lists(st.sampled_from(["#finance", "#support-eng", None]), max_size=14),
    digest_after=st.integers(min_value=1, max_value=5),
)
def test_every_row_is_sent_exactly_once_in_as_many_messages_as_the_digest_rule_says(
    channels: list[str | None], digest_after: int
) -> None:
    clock = FakeClock()
    with SlackStub() as stub, tempfile.TemporaryDirectory() as folder:
        for name in ("ai-spend", "support-eng", "finance"):
            stub.add_channel(name)
        with SqliteState.open(Path(folder) / "state.db") as state:
            for i, channel in enumerate(channels):
                enqueue(state, make_alert(f"b{i}", channel))
            report = run(state, token_config(stub, digest_after=digest_after), clock)
            assert state.pending_count() == 0
        counts = Counter(channel or DEFAULT for channel in channels)
        expected = sum(1 if n > digest_after else n for n in counts.values())
        assert (report.sent, report.messages) == (len(channels), expected)
        assert len(stub.posts()) == expected


# -- pacing ---------------------------------------------------------------------------------


def test_posts_to_one_channel_are_paced_and_channels_take_turns(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, *(make_alert(f"s{i}", "#support-eng") for i in range(3)))
    enqueue(state, *(make_alert(f"f{i}", "#finance") for i in range(3)))
    config = token_config(stub, min_interval_seconds=1.0)
    recorder = Recorder(sender(config), clock)
    report = run(state, config, clock, via=recorder)
    assert report.sent == 6
    channels = [channel for _, channel in recorder.posts]
    assert channels == ["#support-eng", "#finance"] * 3
    for channel in ("#support-eng", "#finance"):
        times = [at for at, c in recorder.posts if c == channel]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
    assert clock.sleeps == [1.0, 1.0]  # the other channel's turn costs no wait


# -- retries --------------------------------------------------------------------------------


def test_a_rate_limited_post_is_retried_by_slack_sdk_after_retry_after(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    stub.retry_after = 1
    stub.fail_next(429)
    enqueue(state, make_alert("support"))
    started = time.monotonic()
    report = run(state, token_config(stub), clock)
    assert time.monotonic() - started >= 1.0  # slack_sdk waited what Retry-After said
    assert chat_posts(stub) == [429, 200]
    assert (report.sent, report.failed) == (1, 0)


def test_a_server_error_is_retried_then_the_post_succeeds(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    stub.fail_next(500)
    enqueue(state, make_alert("support"))
    report = run(state, token_config(stub), clock)
    assert chat_posts(stub) == [500, 200]
    assert (report.sent, report.failed, report.pending) == (1, 0, 0)


def test_a_dropped_connection_is_retried_then_the_post_succeeds(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    stub.drop_next()
    enqueue(state, make_alert("support"))
    report = run(state, token_config(stub), clock)
    assert chat_posts(stub) == [0, 200]
    assert report.sent == 1


def test_a_rate_limit_storm_keeps_the_rows_and_spares_other_channels(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    stub.fail_next(429, times=3)  # the first post and both of slack_sdk's retries
    enqueue(state, make_alert("s0", "#support-eng"), make_alert("s1", "#support-eng"))
    enqueue(state, make_alert("f0", "#finance"))
    report = run(state, token_config(stub), clock)
    assert chat_posts(stub) == [429, 429, 429, 200]  # #support-eng not tried again this round
    assert (report.sent, report.failed, report.pending) == (1, 2, 2)
    assert report.permanent_errors == {}
    assert {item.last_error.split(":")[0] for item in state.pending() if item.last_error} == {
        "ratelimited"
    }


def test_a_timeout_leaves_the_row_for_a_later_round(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    config = token_config(stub, retry_every="10m")
    stub.delay_next(2.0)
    (row,) = enqueue(state, make_alert("support"))
    report = run(state, config, clock, via=sender(config, timeout=0.3))
    assert (report.sent, report.failed, report.pending) == (0, 1, 1)
    (item,) = state.pending()
    assert (item.id, item.attempts) == (row, 1)
    assert item.last_error is not None
    assert item.last_error.startswith("timeout")
    assert run(state, config, clock, now=NOW + timedelta(minutes=5)).sent == 0  # not due yet
    assert run(state, config, clock, now=NOW + timedelta(minutes=10)).sent == 1
    assert state.pending_count() == 0


def test_the_outbox_survives_a_failure_and_a_restart_and_sends_each_alert_once(
    stub: SlackStub, tmp_path: Path, clock: FakeClock
) -> None:
    config = token_config(stub, retry_every="1m")
    path = tmp_path / "state.db"
    with SqliteState.open(path) as first:
        ids = enqueue(first, *(make_alert(f"b{i}", "#finance") for i in range(3)))
        stub.fail_next(500, times=3)  # one post, retried twice by slack_sdk, then given up
        report = run(first, config, clock)
        assert (report.sent, report.failed, report.pending) == (0, 3, 3)
        waiting = first.pending()
        assert [item.id for item in waiting] == ids
        assert all(item.attempts == 1 and item.last_error for item in waiting)
    assert stub.posts() == []
    with SqliteState.open(path) as second:
        report = run(second, config, clock, now=NOW + timedelta(minutes=1))
        assert (report.sent, report.messages, report.pending) == (3, 3, 0)
        assert run(second, config, clock, now=NOW + timedelta(hours=1)).messages == 0
    texts = texts_posted(stub, "finance")
    assert len(texts) == 3
    for budget in ("b0", "b1", "b2"):
        assert sum(budget in text for text in texts) == 1


# -- errors that retrying cannot fix ----------------------------------------------------------


def test_invalid_auth_sends_nothing_is_logged_once_with_the_remedy_and_keeps_the_rows(
    stub: SlackStub, state: SqliteState, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = token_config(stub, token="xoxb-0000-wrong-token")
    enqueue(state, make_alert("a", "#support-eng"), make_alert("b"), make_alert("c", "#finance"))
    reported: set[tuple[str, str]] = set()
    report = run(state, config, clock, reported=reported)
    assert chat_posts(stub) == [200]  # one refusal; the rest are not tried this round
    assert stub.posts() == []
    assert report.permanent_errors == {"invalid_auth": 1}
    assert (report.sent, report.failed, report.pending) == (0, 3, 3)
    assert all("invalid_auth" in (item.last_error or "") for item in state.pending())
    again = run(state, config, clock, now=LATER, reported=reported)
    assert again.permanent_errors == {"invalid_auth": 1}
    logged = [m for m in slack_errors(caplog) if "invalid_auth" in m]
    assert len(logged) == 1
    assert "check slack.token" in logged[0]


@pytest.mark.parametrize(
    "case",
    [
        ("#nowhere", "channel_not_found", "#nowhere"),
        ("#private", "not_in_channel", "invite the app to #private: /invite @costwatch"),
        ("#old", "is_archived", "#old is archived"),
    ],
)
def test_a_channel_error_reroutes_the_alert_to_the_default_channel(
    stub: SlackStub,
    state: SqliteState,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    case: tuple[str, str, str],
) -> None:
    channel, code, remedy = case
    enqueue(state, make_alert("support", channel), make_alert("other", channel))
    report = run(state, token_config(stub), clock)
    assert (report.sent, report.rerouted, report.failed, report.pending) == (2, 2, 0, 0)
    assert report.permanent_errors == {code: 1}  # the second row went straight to the default
    posts = stub.posts(DEFAULT)
    assert len(posts) == 2
    assert all(channel in post.text and code in post.text for post in posts)
    logged = [m for m in slack_errors(caplog) if code in m]
    assert len(logged) == 1
    assert remedy in logged[0]


def test_when_the_default_channel_fails_too_the_rows_stay_in_the_outbox(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    config = token_config(stub, channel="#private")
    enqueue(state, make_alert("a", "#nowhere"), make_alert("b"), channel="#private")
    report = run(state, config, clock)
    assert stub.posts() == []
    assert report.permanent_errors == {"channel_not_found": 1, "not_in_channel": 1}
    assert (report.sent, report.failed, report.pending) == (0, 2, 2)


def test_a_message_slack_refuses_keeps_its_row_and_the_others_go_on(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    stub.fail_next(200, error="invalid_blocks")
    enqueue(state, make_alert("a"), make_alert("b"))
    report = run(state, token_config(stub), clock)
    assert report.permanent_errors == {"invalid_blocks": 1}
    assert (report.sent, report.failed, report.pending) == (1, 1, 1)


# -- webhooks -------------------------------------------------------------------------------


def test_webhook_mode_posts_every_row_to_the_webhook(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, make_alert("a", "#support-eng"), make_alert("b"), make_alert("c"))
    report = run(state, webhook_config(stub, min_interval_seconds=1.0), clock)
    assert (report.sent, report.messages, report.pending) == (3, 3, 0)
    posts = stub.posts()
    assert len(posts) == 3
    assert all(post.path == f"/services/{WEBHOOK_SECRET}" for post in posts)
    assert all("authorization" not in post.headers for post in posts)
    assert clock.sleeps == [1.0, 1.0]  # one channel: paced


def test_webhook_mode_digests_many_alerts(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    enqueue(state, *(make_alert(f"b{i}", "#finance") for i in range(7)))
    report = run(state, webhook_config(stub), clock)
    assert (report.messages, report.digests, report.sent) == (1, 1, 7)


def test_webhook_mode_retries_a_server_error(
    stub: SlackStub, state: SqliteState, clock: FakeClock
) -> None:
    stub.fail_next(503)
    enqueue(state, make_alert("a"))
    report = run(state, webhook_config(stub), clock)
    assert [r.status for r in stub.requests] == [503, 200]
    assert report.sent == 1


def test_a_webhook_that_is_gone_keeps_the_rows_and_says_how_to_fix_it(
    stub: SlackStub, state: SqliteState, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = webhook_config(stub, url=f"{stub.base_url}/services/T0/B0/deleted")
    enqueue(state, make_alert("a"), make_alert("b"))
    report = run(state, config, clock)
    assert [r.status for r in stub.requests] == [404]
    assert report.permanent_errors == {"no_service": 1}
    assert (report.sent, report.failed, report.pending) == (0, 2, 2)
    (logged,) = [m for m in slack_errors(caplog) if "no_service" in m]
    assert "create a new incoming webhook" in logged


@pytest.mark.parametrize(
    ("error", "status"), [("invalid_token", 403), ("channel_is_archived", 410)]
)
def test_webhook_errors_are_reported_with_slacks_code(
    stub: SlackStub, state: SqliteState, clock: FakeClock, error: str, status: int
) -> None:
    stub.webhook_error = error
    enqueue(state, make_alert("a"))
    report = run(state, webhook_config(stub), clock)
    assert [r.status for r in stub.requests] == [status]
    assert report.permanent_errors == {error: 1}
    assert report.pending == 1


# -- test-slack -----------------------------------------------------------------------------


def test_test_channels_reports_each_channel_ok_or_its_error_and_remedy(stub: SlackStub) -> None:
    channels = [DEFAULT, "#support-eng", "#nowhere", "#private", "#old", DEFAULT]
    checks = slack.test_channels(sender(token_config(stub)), channels, NOW)
    assert [(c.channel, c.ok, c.error) for c in checks] == [
        (DEFAULT, True, None),
        ("#support-eng", True, None),
        ("#nowhere", False, "channel_not_found"),
        ("#private", False, "not_in_channel"),
        ("#old", False, "is_archived"),
    ]
    assert all(c.remedy for c in checks if not c.ok)
    assert "/invite @costwatch" in (checks[3].remedy or "")
    assert [r.channel for r in stub.posts()] == [DEFAULT, "#support-eng"]


def test_test_channels_with_a_wrong_token_says_to_check_the_token(stub: SlackStub) -> None:
    config = token_config(stub, token="xoxb-0000-wrong-token")
    (check,) = slack.test_channels(sender(config), [DEFAULT], NOW)
    assert (check.ok, check.error) == (False, "invalid_auth")
    assert "slack.token" in (check.remedy or "")


def test_test_channels_through_a_webhook(stub: SlackStub) -> None:
    (check,) = slack.test_channels(sender(webhook_config(stub)), ["webhook"], NOW)
    assert check.ok
    assert len(stub.posts()) == 1


# -- secrets --------------------------------------------------------------------------------


def test_the_token_and_the_webhook_url_never_leak(
    stub: SlackStub, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    for config in (token_config(stub), webhook_config(stub)):
        with SqliteState.open(tmp_path / f"{config.mode}.db") as state:
            enqueue(state, make_alert("a"), make_alert("b"))
            stub.drop_next(3)  # slack_sdk retries, logging the URL it retries
            report = run(state, config, clock)
            seen += [repr(report), *(item.last_error or "" for item in state.pending())]
        stub.fail_next(500, times=3)
        with pytest.raises(DeliveryError) as caught:
            sender(config).post(DEFAULT, Rendered(text="hello"))
        seen += [str(caught.value), repr(caught.value)]
        seen.append("".join(traceback.format_exception(caught.value)))
    stub.webhook_error = "invalid_token"
    with pytest.raises(DeliveryError) as caught:
        sender(webhook_config(stub)).post(None, Rendered(text="hello"))
    seen += [str(caught.value), "".join(traceback.format_exception(caught.value))]
    seen.append(caplog.text)
    assert "Slack delivery to" in caplog.text  # costwatch logged the failures itself
    for text in seen:
        assert TOKEN not in text
        assert WEBHOOK_SECRET not in text
        assert "w3bh00k" not in text


def test_a_webhook_url_outside_services_never_reaches_a_log_even_at_debug(
    stub: SlackStub, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    secret_path = "/hooks/proxy-7Hx9-s3cr3t-path"  # a Slack-compatible proxy's own layout
    config = webhook_config(stub, url=stub.base_url + secret_path)
    with SqliteState.open(tmp_path / "state.db") as state:
        enqueue(state, make_alert("a"))
        stub.drop_next(2)  # slack_sdk retries, and would log the URL it retries
        report = run(state, config, clock)
    assert report.failed == 1
    assert caplog.records  # logging at DEBUG was on, and costwatch said what happened
    assert "7Hx9-s3cr3t" not in caplog.text


# -- Retry-After, deadlines and the stop --------------------------------------------------------


@given(
    st.one_of(
        st.none(),
        st.text(max_size=40),
        st.floats(allow_nan=True).map(str),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
    ),
    st.floats(min_value=0, allow_infinity=True),
)
def test_any_retry_after_reads_as_a_wait_within_the_cap_and_the_time_left_or_as_none(
    value: str | None, remaining: float
) -> None:
    wait = slack.retry_after_wait(value, remaining=remaining)
    assert wait is None or 0.0 <= wait <= min(slack.RETRY_AFTER_CAP, remaining)


def deliver_within(
    state: SqliteState, config: SlackConfig, deadline: Deadline, **options: Any
) -> Callable[[], DeliveryReport]:
    """A delivery round at NOW within `deadline`, to run (in a thread)."""
    options = {"timeout": 5.0, "retry_interval": 0.01, **options}
    via = sender_from_config(config, **options)
    return lambda: slack.deliver(state, via, config, NOW, deadline=deadline, reported=set())


RETRY_AFTERS = [  # (Retry-After as Slack sent it, retried within the same post)
    ("0.2", True),
    ("-5", True),  # negative: now
    ("abc", True),  # unreadable: 1 s
    ("", True),
    ("nan", True),
    ("1e400", True),
    ("Wed, 21 Oct 2015 07:28:00 GMT", True),  # a date past: now
    ("31", False),  # over the 30 s cap: the row waits for a later round
    ("3600", False),
]


@pytest.mark.parametrize("mode", ["token", "webhook"])
@pytest.mark.parametrize(("value", "retried"), RETRY_AFTERS)
def test_a_retry_after_of_any_form_never_breaks_delivery_and_a_long_one_is_not_waited(
    value: str, retried: bool, mode: str, stub: SlackStub, state: SqliteState
) -> None:
    config = token_config(stub) if mode == "token" else webhook_config(stub)
    stub.retry_after = value
    stub.fail_next(429)
    enqueue(state, make_alert("support"))

    report = returns_within(20, "delivery", deliver_within(state, config, UNBOUNDED))

    statuses = [request.status for request in stub.requests]
    assert statuses == ([429, 200] if retried else [429])
    assert (report.sent, report.failed) == ((1, 0) if retried else (0, 1))


def test_a_stop_ends_a_retry_after_wait_and_leaves_the_rows_due(
    stub: SlackStub, state: SqliteState
) -> None:
    stub.retry_after = 25  # under the cap: waited, but through the round's deadline
    stub.fail_next(429)
    (row,) = enqueue(state, make_alert("support"))
    stop = StopSignal()
    config = token_config(stub)
    delivery = Background(deliver_within(state, config, Deadline(stop=stop)))
    wait_for(lambda: len(stub.requests) == 1, 10, "the 429")

    stop.set()
    report = delivery.result(5, "delivery after the stop")

    assert report.interrupted
    assert (report.sent, report.failed, report.pending) == (0, 0, 1)
    (item,) = state.pending(NOW)  # due as it was: not even counted as an attempt
    assert (item.id, item.attempts) == (row, 0)


def test_a_stop_ends_the_pause_before_retrying_a_dropped_connection(
    stub: SlackStub, state: SqliteState
) -> None:
    stub.drop_next(3)
    enqueue(state, make_alert("support"))
    stop = StopSignal()
    config = token_config(stub)
    deliver = deliver_within(state, config, Deadline(stop=stop), retry_interval=20)
    delivery = Background(deliver)
    wait_for(lambda: len(stub.requests) == 1, 10, "the dropped post")

    stop.set()
    report = delivery.result(5, "delivery after the stop")

    assert report.interrupted
    assert state.pending_count() == 1


def test_a_retry_after_longer_than_the_round_has_left_is_not_waited(
    stub: SlackStub, state: SqliteState
) -> None:
    stub.retry_after = 10  # under the cap, but the round has 3 s
    stub.fail_next(429)
    enqueue(state, make_alert("support"))
    config = token_config(stub)

    report = returns_within(5, "delivery", deliver_within(state, config, Deadline.after(3)))

    assert [request.status for request in stub.requests] == [429]
    assert (report.sent, report.failed, report.interrupted) == (0, 1, False)


def test_a_post_never_outlasts_the_round_deadline(stub: SlackStub, state: SqliteState) -> None:
    stub.delay_next(30)
    enqueue(state, make_alert("support"))
    config = token_config(stub)
    deliver = deliver_within(state, config, Deadline.after(1), timeout=60)

    report = returns_within(10, "delivery", deliver)

    assert (report.sent, report.failed) == (0, 1)
    (item,) = state.pending()
    assert item.last_error is not None
    assert item.last_error.startswith("timeout")


def test_no_post_starts_once_the_daemon_stops(stub: SlackStub, state: SqliteState) -> None:
    enqueue(state, make_alert("support"), make_alert("finance", "#finance"))
    stop = StopSignal()
    stop.set()

    report = deliver_within(state, token_config(stub), Deadline(stop=stop))()

    assert report.interrupted
    assert stub.requests == []
    assert [item.attempts for item in state.pending(NOW)] == [0, 0]


@pytest.mark.parametrize(
    "fault", ["timeout", "connection", "http_503", "ratelimited"], ids=lambda fault: fault
)
def test_each_kind_of_transient_failure_is_counted_under_its_code_and_keeps_the_row(
    stub: SlackStub, state: SqliteState, clock: FakeClock, fault: str
) -> None:
    """What `costwatch_slack_errors_total{error}` shows for a post that failed in a way a later
    round may fix: the code the delivery report gives it, through the real registry's scrape."""
    retries = 2  # slack_sdk's own retries, all failing alike
    if fault == "timeout":
        stub.delay_next(2.0, times=1 + retries)
    elif fault == "connection":
        stub.drop_next(times=1 + retries)
    else:
        stub.fail_next(429 if fault == "ratelimited" else 503, times=1 + retries)
    (row,) = enqueue(state, make_alert("support"))
    config = token_config(stub, retry_every="10m")
    report = run(state, config, clock, via=sender(config, timeout=0.3))
    assert report.transient_errors == {fault: 1}
    assert report.permanent_errors == {}
    assert [item.id for item in state.pending()] == [row]
    metrics = Metrics()
    metrics.delivered(report)
    scrape = metrics.exposition().decode()
    assert f'costwatch_slack_errors_total{{error="{fault}"}} 1.0' in scrape
