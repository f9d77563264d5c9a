"""Faults through the daemon's path: a real cycle, a real state file, real HTTP on loopback.

Langdock: each case sets a fault on the simulator, then runs `cycle.run_once` with a real
`SqliteState` and a real `LangdockClient` (retries sleep on a fake clock). A case either recovers
inside the cycle, reads as zero usage, or fails the cycle with a counted reason: then no budget
is evaluated, export health counts it, the third failure in a row queues "exports failing", and
once the fault clears the next cycle plans exactly the alerts a fault-free run plans.

Slack: each case breaks the stand-in (`slackstub.py`) for `slack.deliver`, then repairs it; the
rows stay pending through the fault and each alert is posted exactly once after it.

`FAULTS` and `SLACK_FAULTS` are also the table in docs/reliability.md:
`python tests/test_faults.py` prints it, and a test keeps the doc in step.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeClock
from slackrounds import enqueue, make_alert, sender, token_config, webhook_config
from slackrounds import run as deliver
from slackstub import SlackStub

from costwatch import cycle
from costwatch.config import Config, parse_config
from costwatch.errors import ExportError
from costwatch.langdock import LangdockClient, RetryPolicy
from costwatch.simulator import Simulator, Workspace
from costwatch.simulator.workspace import export_csv
from costwatch.state import SqliteState

KEY = "ld-FAULTS-k3y-7e1d"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
ATTEMPTS = 3  # per export, inside one cycle
TIMEOUT = 0.3  # seconds, the client's read timeout in these tests
ALWAYS = 1000  # a fault that outlasts every retry of three cycles


def rewritten(change: Callable[[list[list[str]]], None]) -> Callable[[bytes], bytes]:
    """A download rewrite: the real CSV's rows (header first) changed in place by `change`;
    a cell set to `RAW` + text is written as that text, unquoted."""

    def rewrite(body: bytes) -> bytes:
        rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
        change(rows)
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(rows)
        text = out.getvalue()
        for row in rows:
            for cell in row:
                if cell.startswith(RAW):
                    text = text.replace(f'"{cell}"', cell).replace(cell, cell[len(RAW) :])
        return text.encode()

    return rewrite


RAW = "\x00raw:"


def _cells(
    column: str, value: str, rows: tuple[int, ...] = ()
) -> Callable[[list[list[str]]], None]:
    """Set `column` to `value` in the given data rows (1-based), or in every one."""

    def change(table: list[list[str]]) -> None:
        at = table[0].index(column)
        for number, row in enumerate(table[1:], start=1):
            if not rows or number in rows:
                row[at] = value

    return change


def _both(
    first: Callable[[list[list[str]]], None], second: Callable[[list[list[str]]], None]
) -> Callable[[list[list[str]]], None]:
    def change(table: list[list[str]]) -> None:
        first(table)
        second(table)

    return change


def _no_records(sim: Simulator) -> None:
    sim.faults.announce_records(0, ALWAYS)
    sim.faults.download_content(b"", ALWAYS)


def _rename(column: str, to: str) -> Callable[[list[list[str]]], None]:
    def change(table: list[list[str]]) -> None:
        table[0][table[0].index(column)] = to

    return change


@dataclass(frozen=True)
class Fault:
    """One Langdock fault: how to cause it, what costwatch does, what the operator sees."""

    name: str
    inject: Callable[[Simulator], None]
    outcome: str  # "recovered" | "zero usage" | "failed"
    reason: str | None  # costwatch_export_failures_total{reason}, for a failed cycle
    does: str
    sees: str


TOO_LARGE = b'{"error": "Export too large", "message": "Export too large: 2000001 rows"}'
FAILED_SEES = (
    'log `export failed ({reason}): ...`; `costwatch_export_failures_total{{reason="{reason}"}}`'
    ' +1; `/readyz` 503; after 3 cycles a Slack "exports failing" notice; `check` exits 2'
)


def fail_export(status: int, times: int) -> Callable[[Simulator], None]:
    return lambda sim: sim.faults.fail_export(status, times)


def failed(reason: str) -> str:
    return FAILED_SEES.format(reason=reason)


RETRIED = "retried in the cycle (fresh export each time); cycle ok"
OK_SEES = "WARNING `... attempt n/N failed (...); retrying in ...s`; cycle ok; nothing counted"

FAULTS = [
    Fault(
        "401 unauthorized",
        lambda s: s.faults.fail_export(401, ALWAYS),
        "failed",
        "unauthorized",
        "not retried; failed cycle; message names the key and the USAGE_EXPORT_API scope",
        failed("unauthorized"),
    ),
    Fault(
        "404 No data found",
        lambda s: s.faults.fail_export(
            404, ALWAYS, body=b'{"error": "No data found", "message": "No usage data found"}'
        ),
        "zero usage",
        None,
        "a part without a file: zero usage, budgets evaluated on zero",
        "log `no usage in ... (404 No data found)`; cycle ok; spend metrics at 0",
    ),
    Fault(
        "404 other (wrong base_url)",
        lambda s: s.faults.fail_export(404, ALWAYS),
        "failed",
        "bad_request",
        "not retried; failed cycle; message says `check base_url`",
        failed("bad_request"),
    ),
    Fault(
        "400 Export too large",
        lambda s: s.faults.fail_export(400, 1, body=TOO_LARGE),
        "recovered",
        None,
        "range split at the local midnight nearest its middle, halves exported and joined",
        "log `export of ... too large; splitting into ... and ...`; cycle ok",
    ),
    Fault(
        "400 too large even for one day",
        lambda s: s.faults.fail_export(400, ALWAYS, body=TOO_LARGE),
        "failed",
        "too_large",
        "split down to single days, then given up; failed cycle",
        failed("too_large"),
    ),
    Fault(
        "429 with Retry-After",
        lambda s: s.faults.fail_export(429, 2, retry_after="7"),
        "recovered",
        None,
        "waits what Retry-After says (capped by the retry budget), then exports again",
        OK_SEES,
    ),
    Fault(
        "429 without Retry-After",
        lambda s: s.faults.fail_export(429, 2),
        "recovered",
        None,
        "exponential backoff with jitter, then exports again",
        OK_SEES,
    ),
    Fault(
        "429 for good",
        lambda s: s.faults.fail_export(429, ALWAYS),
        "failed",
        "rate_limited",
        "retries run out (max_attempts / retry_max_elapsed_seconds); failed cycle",
        failed("rate_limited"),
    ),
    *(
        Fault(
            f"{status} once",
            fail_export(status, 1),
            "recovered",
            None,
            RETRIED,
            OK_SEES,
        )
        for status in (500, 502, 503)
    ),
    *(
        Fault(
            f"{status} for good",
            fail_export(status, ALWAYS),
            "failed",
            "server_error",
            "retries run out; failed cycle",
            failed("server_error"),
        )
        for status in (500, 502, 503)
    ),
    Fault(
        "timeout once",
        lambda s: s.faults.delay_export(TIMEOUT * 4, 1),
        "recovered",
        None,
        RETRIED,
        OK_SEES,
    ),
    Fault(
        "timeout for good",
        lambda s: s.faults.delay_export(TIMEOUT * 4, ALWAYS),
        "failed",
        "timeout",
        "retries run out; failed cycle",
        failed("timeout"),
    ),
    Fault(
        "connection reset once",
        lambda s: s.faults.reset_export(1),
        "recovered",
        None,
        RETRIED,
        OK_SEES,
    ),
    Fault(
        "connection reset for good",
        lambda s: s.faults.reset_export(ALWAYS),
        "failed",
        "connection",
        "retries run out; failed cycle",
        failed("connection"),
    ),
    Fault(
        "truncated download once",
        lambda s: s.faults.truncate_download(1),
        "recovered",
        None,
        "short body detected against Content-Length, file deleted, fresh export",
        OK_SEES,
    ),
    Fault(
        "truncated download for good",
        lambda s: s.faults.truncate_download(ALWAYS),
        "failed",
        "download",
        "retries run out; partial files deleted; failed cycle",
        failed("download"),
    ),
    Fault(
        "expired download (403) once",
        lambda s: s.faults.fail_download(403, 1),
        "recovered",
        None,
        "a fresh export for a fresh signed URL",
        OK_SEES,
    ),
    Fault(
        "expired download (403) for good",
        lambda s: s.faults.fail_download(403, ALWAYS),
        "failed",
        "download",
        "retries run out; failed cycle",
        failed("download"),
    ),
    Fault(
        "download is not CSV",
        lambda s: s.faults.download_content(b"<html><body>Login</body></html>", ALWAYS),
        "failed",
        "incomplete",
        "it holds none of the rows the answer announced (recordCount): fresh exports, then a "
        "failed cycle",
        failed("incomplete"),
    ),
    Fault(
        "download cut short without Content-Length once",
        lambda s: s.faults.truncate_download(1, announce_length=False),
        "recovered",
        None,
        "rows, last row and quotes checked against the answer's recordCount: a fresh export",
        OK_SEES,
    ),
    Fault(
        "download cut short without Content-Length for good",
        lambda s: s.faults.truncate_download(ALWAYS, announce_length=False),
        "failed",
        "incomplete",
        "cut mid-row or inside quotes: fresh exports, then a failed cycle; partial files deleted",
        failed("incomplete"),
    ),
    Fault(
        "download cut at a row end without Content-Length for good",
        lambda s: s.faults.truncate_download(ALWAYS, announce_length=False, whole_rows=True),
        "failed",
        "incomplete",
        "fewer rows than the answer's recordCount: fresh exports, then a failed cycle",
        failed("incomplete"),
    ),
    Fault(
        "0-byte download",
        lambda s: s.faults.download_content(b"", ALWAYS),
        "failed",
        "incomplete",
        "never read as no usage while recordCount says there are rows: a failed cycle",
        failed("incomplete"),
    ),
    Fault(
        "download of the header only",
        lambda s: s.faults.download_content(
            export_csv(s.workspace, [], ("", ""), grouped=True), ALWAYS
        ),
        "failed",
        "incomplete",
        "never read as no usage while recordCount says there are rows: a failed cycle",
        failed("incomplete"),
    ),
    Fault(
        "200 with recordCount 0 and an empty file",
        _no_records,
        "zero usage",
        None,
        "the answer and the file agree on no rows: zero usage, logged as unusual (no usage is "
        "a 404)",
        "WARNING `... recordCount 0 ...; read as no usage`; cycle ok; spend metrics at 0",
    ),
    Fault(
        "more rows than recordCount",
        lambda s: s.faults.announce_records(1, ALWAYS),
        "failed",
        "protocol",
        "the answer contradicts its file: not retried; failed cycle",
        failed("protocol"),
    ),
    Fault(
        "a deeply nested JSON answer",
        lambda s: s.faults.export_bytes(b"[" * 100_000 + b"]" * 100_000, ALWAYS),
        "failed",
        "protocol",
        "not a body of the documented shape (the parser's RecursionError included): failed cycle",
        failed("protocol"),
    ),
    Fault(
        "a row with an unquoted `12,345.67`",
        lambda s: s.faults.rewrite_download(
            rewritten(_cells("total_cost_usd", RAW + "12,345.67", (2,))), ALWAYS
        ),
        "failed",
        "usage",
        "every record's fields are counted: `row 2 has 9 fields where the header has 8`",
        failed("usage"),
    ),
    Fault(
        "a header naming `total_cost_usd` twice",
        lambda s: s.faults.rewrite_download(rewritten(_rename("org_id", "total_cost_usd")), ALWAYS),
        "failed",
        "usage",
        "refused naming the column; neither of the two is read",
        failed("usage"),
    ),
    Fault(
        "requests that add up past 2**53",
        lambda s: s.faults.rewrite_download(
            rewritten(_cells("requests", str(2**62), (1, 2))), ALWAYS
        ),
        "failed",
        "usage",
        "counts added up exactly (Int128) and refused past 2**53, never wrapped to a negative",
        failed("usage"),
    ),
    Fault(
        "`success: false`",
        lambda s: s.faults.export_body({"success": False, "message": "internal"}, ALWAYS),
        "failed",
        "protocol",
        "not retried; failed cycle",
        failed("protocol"),
    ),
    Fault(
        "body of another shape",
        lambda s: s.faults.export_body({"url": "https://x/y.csv"}, ALWAYS),
        "failed",
        "protocol",
        "not retried; failed cycle",
        failed("protocol"),
    ),
    Fault(
        "CSV for the wrong period",
        lambda s: s.faults.rewrite_download(
            rewritten(
                _both(_cells("period_start", "2026-09-01"), _cells("period_end", "2026-09-30"))
            ),
            ALWAYS,
        ),
        "failed",
        "period_mismatch",
        "period_start/period_end checked against the range asked for; failed cycle",
        failed("period_mismatch"),
    ),
    Fault(
        "CSV for a part of the range",
        lambda s: s.faults.rewrite_download(rewritten(_cells("period_end", "2026-11-10")), ALWAYS),
        "failed",
        "period_mismatch",
        "each row must cover the whole range asked for (a day of slack either way); failed cycle",
        failed("period_mismatch"),
    ),
]


CONFIG = """\
langdock:
  base_url: {base_url}
  api_key: {key}
  allow_insecure_download: true
  max_attempts: {attempts}
  retry_max_elapsed_seconds: 60
schedule:
  every: 15m
  timezone: Europe/Berlin
slack:
  token: xoxb-unused
  channel: "#ai-spend"
budgets:
  - name: every-key
    keys: "*"
    limits: {{cost_usd: 5}}
"""


class Clock:
    """The cycle's `now`, which the simulator reads as well."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[Simulator]:
    with Simulator(Workspace(keys=6), api_key=KEY, clock=clock) as server:
        yield server


def config_for(sim: Simulator) -> Config:
    return parse_config(CONFIG.format(base_url=sim.base_url, key=KEY, attempts=ATTEMPTS))


def run_cycle(
    sim: Simulator, state: SqliteState, now: datetime, sleeps: FakeClock
) -> cycle.Outcome:
    config = config_for(sim)
    timeout = httpx.Timeout(TIMEOUT)
    with httpx.Client(timeout=timeout) as http:
        client = LangdockClient(
            http,
            base_url=sim.base_url,
            api_key=KEY,
            allow_insecure_download=True,
            retry=RetryPolicy(max_attempts=ATTEMPTS, max_elapsed_seconds=60),
            sleep=sleeps.sleep,
            monotonic=sleeps.monotonic,
            jitter=lambda: 0.5,
        )
        return cycle.run_once(cycle.Deps(config, client=client, state=state), now)


def alert_identities(state: SqliteState) -> list[tuple[Any, ...]]:
    return sorted(
        (p["budget"], p["api_key_id"], p["metric"], p["kind"], p["threshold"])
        for item in state.pending()
        if item.kind == "alert"
        for p in [item.payload]
    )


def reason_of(outcome: cycle.Outcome) -> str | None:
    """The `reason` label the daemon counts for a failed cycle."""
    if outcome.error is None:
        return None
    return outcome.error.reason if isinstance(outcome.error, ExportError) else "usage"


def kinds(state: SqliteState) -> list[str]:
    return [item.kind for item in state.pending()]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_langdock_fault_recovers_reads_as_zero_or_fails_the_cycle_counted(
    fault: Fault, sim: Simulator, clock: Clock, tmp_path: Path
) -> None:
    sleeps = FakeClock()
    with SqliteState.open(tmp_path / "baseline.db") as baseline:
        clean = run_cycle(sim, baseline, NOW + 3 * STEP, sleeps)
        assert clean.ok
        assert clean.crossed
        due = alert_identities(baseline)
    assert due  # the budget is tight enough that a clean cycle alerts

    fault.inject(sim)
    with SqliteState.open(tmp_path / "state.db") as state:
        outcome = run_cycle(sim, state, NOW, sleeps)
        if fault.outcome == "recovered":
            assert outcome.ok, outcome.error
            assert alert_identities(state) == due
            assert state.export_health().consecutive_failures == 0
            if fault.name == "400 Export too large":
                assert sim.exports_made() > 3  # the baseline's, the refused one, the halves
            if fault.name == "429 with Retry-After":
                assert 7.0 in sleeps.sleeps
            return
        if fault.outcome == "zero usage":
            assert outcome.ok
            assert outcome.usage is not None
            assert outcome.usage.frame.height == 0
            assert not outcome.crossed
            assert state.pending() == []
            return

        # A failed cycle: counted, never "within budget", alerted on the third in a row.
        for n in (1, 2, 3):
            if n > 1:
                clock.now = NOW + (n - 1) * STEP
                outcome = run_cycle(sim, state, clock.now, sleeps)
            assert reason_of(outcome) == fault.reason
            assert outcome.usage is None
            assert outcome.plan is None
            assert outcome.findings.height == 0
            assert not outcome.crossed
            health = state.export_health()
            assert (health.consecutive_failures, health.last_reason) == (n, fault.reason)
            assert kinds(state) == ([] if n < 3 else ["exports_failing"])

        sim.faults.clear()
        clock.now = NOW + 3 * STEP
        recovered = run_cycle(sim, state, clock.now, sleeps)
        assert recovered.ok
        assert kinds(state)[:2] == ["exports_failing", "exports_recovered"]
        assert alert_identities(state) == due  # nothing that was due got lost
        assert state.export_health().consecutive_failures == 0


# -- Slack ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackFault:
    """One Slack fault: break the stand-in, configure costwatch, then repair."""

    name: str
    does: str
    sees: str
    webhook: bool = False
    timeout: float = 5.0


SLACK_FAULTS = [
    SlackFault(
        "429 storm",
        "slack_sdk retries after Retry-After; then the channel rests for this round, rows stay",
        "`costwatch_alerts_pending` stays up; log `ratelimited`; delivered next round",
    ),
    SlackFault(
        "500s",
        "slack_sdk retries twice; then the rows stay for `retry_every`",
        "log with the HTTP status; `costwatch_alerts_pending`; delivered next round",
    ),
    SlackFault(
        "timeout",
        "the post is abandoned after the timeout; rows stay with attempts +1",
        "log `timeout`; `costwatch_alerts_pending`; delivered next round",
        timeout=0.3,
    ),
    SlackFault(
        "invalid_auth",
        "one refused post ends the round; rows stay; logged once with the remedy",
        "log `invalid_auth ... check slack.token` once; "
        '`costwatch_slack_errors_total{error="invalid_auth"}`',
    ),
    SlackFault(
        "channel_not_found",
        "rerouted to the default channel; if that fails too, rows stay",
        "log with the channel and remedy; "
        '`costwatch_slack_errors_total{error="channel_not_found"}`',
    ),
    SlackFault(
        "webhook 404",
        "rows stay; logged once: the webhook was removed, make a new one",
        'log `no_service`; `costwatch_slack_errors_total{error="no_service"}`',
        webhook=True,
    ),
    SlackFault(
        "webhook 200 that is not `ok` (a proxy's login page)",
        "not delivered: one such answer ends the round; rows stay",
        "log `unexpected_answer ... (HTTP 200, an HTML page) is not Slack's` once; "
        '`costwatch_slack_errors_total{error="unexpected_answer"}`',
        webhook=True,
    ),
    SlackFault(
        "Web API 200 that is not a JSON object with `ok: true`",
        "not delivered, no crash: one such answer ends the round; rows stay",
        'log `unexpected_answer` once; `costwatch_slack_errors_total{error="unexpected_answer"}`',
    ),
    SlackFault(
        "redirect to another host",
        "never followed: the token and the webhook URL reach no other host; rows stay",
        "log `redirected ... check slack.api_url or slack.webhook_url` once; "
        '`costwatch_slack_errors_total{error="redirected"}`',
    ),
]


@pytest.fixture
def stub() -> Iterator[SlackStub]:
    with SlackStub(retry_after=0) as server:
        yield server


def _break(case: SlackFault, stub: SlackStub) -> Any:
    """Break the stand-in and return the SlackConfig costwatch runs with during the fault."""
    if case.name != "channel_not_found":
        stub.add_channel("ai-spend")
    if case.name == "429 storm":
        stub.fail_next(429, times=3)  # a post and both retries
    elif case.name == "500s":
        stub.fail_next(500, times=3)
    elif case.name == "timeout":
        stub.delay_next(1.5)
    elif case.name == "invalid_auth":
        return token_config(stub, token="xoxb-0000-revoked", retry_every="1m")
    elif case.name == "webhook 404":
        return webhook_config(stub, url=stub.base_url + "/services/T0/B0/removed")
    elif case.name.startswith("webhook 200"):
        stub.answer_next(200, b"<html><form action=/login>Sign in</form></html>")
        return webhook_config(stub, retry_every="1m")
    elif case.name.startswith("Web API 200"):
        stub.answer_next(200, b"<html><form action=/login>Sign in</form></html>")
    elif case.name.startswith("redirect"):
        stub.redirect_next(302, "http://127.0.0.1:9/elsewhere")
    return token_config(stub, retry_every="1m")


def _repair(case: SlackFault, stub: SlackStub) -> Any:
    if case.name == "channel_not_found":
        stub.add_channel("ai-spend")
    if case.webhook:
        return webhook_config(stub, retry_every="1m")
    return token_config(stub, retry_every="1m")


@pytest.mark.parametrize("case", SLACK_FAULTS, ids=[c.name for c in SLACK_FAULTS])
def test_a_slack_fault_keeps_the_rows_pending_and_each_is_sent_once_after(
    case: SlackFault, stub: SlackStub, tmp_path: Path
) -> None:
    sleeps = FakeClock()
    budgets = ("b0", "b1", "b2")
    with SqliteState.open(tmp_path / "state.db") as state:
        ids = enqueue(state, *(make_alert(b) for b in budgets))
        broken = _break(case, stub)
        report = deliver(state, broken, sleeps, via=sender(broken, timeout=case.timeout))
        assert (report.sent, report.pending) == (0, 3)
        assert [item.id for item in state.pending()] == ids
        assert all(item.last_error for item in state.pending())
        assert stub.posts() == []

        repaired = _repair(case, stub)
        later = NOW + timedelta(minutes=1)
        report = deliver(state, repaired, sleeps, now=later)
        assert (report.sent, report.pending) == (3, 0)
        assert deliver(state, repaired, sleeps, now=later + timedelta(hours=1)).messages == 0
    texts = [r.text for r in stub.posts()]
    assert len(texts) == 3
    for budget in budgets:
        assert sum(f"{budget}-prod" in text for text in texts) == 1


# -- the table in docs/reliability.md --------------------------------------------------------


def fault_table() -> str:
    """The Markdown fault table, from the cases above."""
    lines = [
        "| fault | outcome | what costwatch does | what the operator sees |",
        "|---|---|---|---|",
    ]
    for f in FAULTS:
        outcome = f"failed cycle (`{f.reason}`)" if f.outcome == "failed" else f.outcome
        lines.append(f"| Langdock: {f.name} | {outcome} | {f.does} | {f.sees} |")
    for s in SLACK_FAULTS:
        lines.append(f"| Slack: {s.name} | rows pending, sent once after | {s.does} | {s.sees} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- fault table: generated by `python tests/test_faults.py` -->\n"
END = "<!-- end of fault table -->\n"


def test_the_fault_table_in_the_docs_is_generated_from_these_cases() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text, "docs/reliability.md lost the table markers"
    assert END in text, "docs/reliability.md lost the table markers"
    assert text.split(BEGIN, 1)[1].split(END, 1)[0] == fault_table(), (
        "run `python tests/test_faults.py` to regenerate the table in docs/reliability.md"
    )


def _write_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + BEGIN + fault_table() + END + rest.split(END, 1)[1], encoding="utf-8")


if __name__ == "__main__":
    if "--print" in sys.argv:
        sys.stdout.write(fault_table())
    else:
        _write_table()
        print(json.dumps({"updated": str(DOC)}))
