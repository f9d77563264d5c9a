"""The Langdock export client over real loopback HTTP against the built-in simulator.

Retries never wait: `sleep` is a recorder and `monotonic` a fake clock that advances by what was
slept. Every failure test also proves the API key stays secret (`fail_without_leak`). Every
request the client sends to a simulator is checked against the project's OpenAPI description
of the endpoint (docs/langdock-export-api.yaml) when the simulator stops.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import formatdate
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fakes import FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import Background, returns_within, wait_for
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest
from stuckpeer import Mode, StuckPeer

from costwatch.deadline import Deadline, Stopping, StopSignal
from costwatch.errors import (
    ExportAuthError,
    ExportDownloadError,
    ExportError,
    ExportProtocolError,
    ExportRequestError,
    ExportUnavailableError,
)
from costwatch.langdock import ExportPart, ExportResult, LangdockClient, RetryPolicy
from costwatch.retryafter import parse_retry_after
from costwatch.simulator import EXPORT_PATHS, Simulator

KEY = "ld-SECRET-k3y-4f9c2e7a1b"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")
OCTOBER = (datetime(2026, 10, 1, tzinfo=BERLIN), datetime(2026, 11, 1, tzinfo=BERLIN))
ONE_DAY = (datetime(2026, 11, 2, tzinfo=BERLIN), datetime(2026, 11, 3, tzinfo=BERLIN))


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included


SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "langdock-export-api.yaml"
SPEC_HOST = "https://api.langdock.com"  # the description's server; requests are mapped onto it


@functools.cache
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def assert_described(server: Simulator) -> None:
    """Every export request the simulator received validates against the description (a
    request to a wrong base URL, which a test makes on purpose, is not an export)."""
    for request in server.requests:
        if request.host == "api" and request.path in EXPORT_PATHS:
            spec().validate_request(
                MockRequest(
                    SPEC_HOST,
                    request.method,
                    request.path,
                    headers=request.headers,
                    data=request.body,
                    content_type=request.headers.get("content-type", ""),
                )
            )


@contextlib.contextmanager
def simulator(**options: Any) -> Iterator[Simulator]:
    """A running simulator at NOW that, once the test is done with it, checks every request
    it received against the description."""
    with Simulator(api_key=KEY, clock=lambda: NOW, **options) as server:
        yield server
        assert_described(server)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with simulator() as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    *,
    jitter: float = 0.5,
    **options: Any,
) -> LangdockClient:
    options.setdefault("allow_insecure_download", True)  # the simulator serves plain http
    options.setdefault("api_key", KEY)
    options.setdefault("base_url", sim.base_url)
    return LangdockClient(
        http, sleep=clock.sleep, monotonic=clock.monotonic, jitter=lambda: jitter, **options
    )


def assert_secret_kept(error: BaseException, client: LangdockClient, logs: str) -> None:
    tb = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), repr(client), str(vars(client)), logs, tb):
        assert KEY not in text


def fail_without_leak(
    client: LangdockClient,
    caplog: pytest.LogCaptureFixture,
    workdir: Path,
    expected: type[ExportError],
    span: tuple[datetime, datetime] = OCTOBER,
) -> ExportError:
    with pytest.raises(expected) as info:
        client.export_api_keys(*span, workdir)
    assert_secret_kept(info.value, client, caplog.text)
    return info.value


def export_bodies(sim: Simulator) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in sim.requests if r.host == "api" and r.method == "POST"]


def totals(parts: tuple[ExportPart, ...]) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """Requests and cost per (key, model), summed over every part's CSV."""
    summed: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for part in parts:
        assert part.path is not None
        with part.path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                pair = (row["api_key_id"], row["model"])
                requests, cost = summed.get(pair, (0, Decimal(0)))
                summed[pair] = (
                    requests + int(row["requests"]),
                    cost + Decimal(row["total_cost_usd"]),
                )
    return summed


def csv_periods(part: ExportPart) -> set[tuple[str, str]]:
    assert part.path is not None
    with part.path.open(newline="", encoding="utf-8") as handle:
        return {(row["period_start"], row["period_end"]) for row in csv.DictReader(handle)}


# --- the request -------------------------------------------------------------------------------


def test_export_posts_the_documented_json_body_with_the_bearer_key(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    post = next(r for r in sim.requests if r.method == "POST")
    assert (post.host, post.path, post.query) == ("api", "/export/api-keys", "")
    assert post.headers["authorization"] == f"Bearer {KEY}"
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == {
        "from": {"date": "2026-10-01T00:00:00.000Z", "timezone": "Europe/Berlin"},
        "to": {"date": "2026-10-31T23:59:59.999Z", "timezone": "Europe/Berlin"},
        "group_by": "model",
    }
    assert result.api_calls == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("start", "end", "sent_from", "sent_to"),
    [
        pytest.param(
            datetime(2026, 11, 1, tzinfo=UTC_ZONE),
            datetime(2026, 11, 20, 12, tzinfo=UTC_ZONE),
            "2026-11-01T00:00:00.000Z",
            "2026-11-20T11:59:59.999Z",
            id="utc",
        ),
        pytest.param(
            datetime(2026, 11, 3, 10, 0, 0, 250_000, tzinfo=UTC_ZONE),
            datetime(2026, 11, 3, 11, 0, 0, 500_999, tzinfo=UTC_ZONE),
            "2026-11-03T10:00:00.250Z",
            "2026-11-03T11:00:00.499Z",
            id="utc-milliseconds",
        ),
        pytest.param(
            datetime(2026, 11, 1, tzinfo=BERLIN),
            datetime(2026, 11, 20, 13, tzinfo=BERLIN),
            "2026-11-01T00:00:00.000Z",
            "2026-11-20T12:59:59.999Z",
            id="berlin-local-wall-clock-not-utc",
        ),
        pytest.param(
            datetime(2026, 3, 28, tzinfo=BERLIN),
            datetime(2026, 3, 30, tzinfo=BERLIN),
            "2026-03-28T00:00:00.000Z",
            "2026-03-29T23:59:59.999Z",
            id="berlin-across-spring-dst",
        ),
        pytest.param(
            datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN),
            datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN),  # one real hour: 02:00 is skipped
            "2026-03-29T01:30:00.000Z",
            "2026-03-29T03:29:59.999Z",
            id="berlin-spring-gap-hour",
        ),
        pytest.param(
            datetime(2026, 10, 24, tzinfo=BERLIN),
            datetime(2026, 10, 26, tzinfo=BERLIN),
            "2026-10-24T00:00:00.000Z",
            "2026-10-25T23:59:59.999Z",
            id="berlin-across-autumn-dst",
        ),
    ],
)
def test_dates_are_local_wall_clock_with_a_literal_z_and_an_inclusive_end(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    start: datetime,
    end: datetime,
    sent_from: str,
    sent_to: str,
) -> None:
    result = make_client(sim, http, clock).export_api_keys(start, end, tmp_path)

    zone = start.tzinfo
    assert isinstance(zone, ZoneInfo)
    (body,) = export_bodies(sim)
    assert body["from"] == {"date": sent_from, "timezone": zone.key}
    assert body["to"] == {"date": sent_to, "timezone": zone.key}
    (part,) = result.parts
    assert (part.start, part.end) == (start, end)
    assert (part.first_day, part.last_day) == (
        date.fromisoformat(sent_from[:10]),
        date.fromisoformat(sent_to[:10]),
    )
    assert part.path is not None  # the simulator accepted the shape and had data


def test_an_end_in_another_zone_is_converted_to_the_start_zone(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    end = datetime(2026, 11, 19, 23, tzinfo=UTC_ZONE)  # midnight in Berlin

    make_client(sim, http, clock).export_api_keys(
        datetime(2026, 11, 1, tzinfo=BERLIN), end, tmp_path
    )

    (body,) = export_bodies(sim)
    assert body["to"] == {"date": "2026-11-19T23:59:59.999Z", "timezone": "Europe/Berlin"}


# Zones with DST, half- and quarter-hour offsets and a half-hour DST shift.
ZONES = ("UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "Australia/Lord_Howe")


@settings(max_examples=40, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start_ms=st.integers(0, 300 * 86_400_000),
    length_ms=st.integers(1, 40 * 86_400_000),
)
def test_every_request_for_any_range_in_any_zone_matches_the_description(
    zone: str, start_ms: int, length_ms: int
) -> None:
    local = ZoneInfo(zone)
    start = (NOW - timedelta(days=330) + timedelta(milliseconds=start_ms)).astimezone(local)
    end = min(start + timedelta(milliseconds=length_ms), NOW).astimezone(local)
    with (
        contextlib.ExitStack() as stack,
        simulator() as server,
        httpx.Client(timeout=5.0) as http,
    ):
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        client = make_client(server, http, FakeClock())
        if start < end:
            client.export_api_keys(start, end, workdir)
            assert export_bodies(server), "the client sent no request"
        assert_described(server)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)),  # not ZoneInfo
        (datetime(2026, 11, 1), datetime(2026, 11, 2)),  # noqa: DTZ001 - naive is the case
        (ONE_DAY[1], ONE_DAY[0]),  # empty
    ],
)
def test_ranges_the_client_cannot_express_are_refused_before_any_request(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    start: datetime,
    end: datetime,
) -> None:
    with pytest.raises(ValueError, match=r"start|end"):
        make_client(sim, http, clock).export_api_keys(start, end, tmp_path)
    assert sim.requests == []


def test_a_base_url_with_a_path_is_kept_for_dedicated_deployments(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    client = make_client(sim, http, clock, base_url=sim.base_url + "/api/public/")

    client.export_api_keys(*ONE_DAY, tmp_path)

    assert [r.path for r in sim.requests if r.host == "api"] == ["/api/public/export/api-keys"]


# --- the download ------------------------------------------------------------------------------


def test_the_key_goes_to_the_export_host_only_never_to_the_download_host(
    sim: Simulator, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Even a careless default header on the caller's client must not reach the storage host.
    with httpx.Client(timeout=5.0, headers={"Authorization": "Bearer default"}) as http:
        result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    api, download = sim.requests
    assert api.host == "api"
    assert api.headers["authorization"] == f"Bearer {KEY}"
    assert download.host == "download"
    assert download.method == "GET"
    assert "authorization" not in download.headers
    (part,) = result.parts
    assert part.path is not None
    assert part.path.parent == tmp_path
    assert result.bytes_downloaded == part.path.stat().st_size > 0
    assert part.record_count == len(part.path.read_text(encoding="utf-8").splitlines()) - 1
    assert csv_periods(part) == {("2026-10-01", "2026-10-31")}
    signature = download.query.rpartition("signature=")[2]
    ours = [r.getMessage() for r in caplog.records if r.name == "costwatch.langdock"]
    assert ours
    assert not [m for m in ours if signature in m or download.path in m]  # signed URLs stay out


def test_the_downloaded_file_holds_exactly_the_bytes_served(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    content = 'period_start,period_end\r\n2026-10-01,2026-10-31\r\nZürich,"a, b"\r\n'.encode()
    sim.faults.download_content(content)
    sim.faults.announce_records(2)

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    (part,) = result.parts
    assert part.path is not None
    assert part.path.read_bytes() == content
    assert result.bytes_downloaded == len(content)


def test_a_download_over_plain_http_is_refused_without_the_flag(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(sim, http, clock, allow_insecure_download=False)

    error = fail_without_leak(client, caplog, tmp_path, ExportProtocolError)

    assert "https" in str(error)
    assert [r.host for r in sim.requests] == ["api"]
    assert list(tmp_path.iterdir()) == []


def test_a_download_announced_over_the_size_cap_is_refused_and_not_retried(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(sim, http, clock, max_download_bytes=100)

    error = fail_without_leak(client, caplog, tmp_path, ExportDownloadError)

    assert "100-byte limit" in str(error)
    assert error.reason == "download"
    assert sim.exports_made() == 1
    assert list(tmp_path.iterdir()) == []


class _WithoutContentLength(httpx.HTTPTransport):
    """Real HTTP, but the download's length is hidden, as with a chunked response."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.startswith("/files/"):
            del response.headers["Content-Length"]
        return response


def test_a_download_growing_past_the_size_cap_while_streaming_is_cut_off_and_deleted(
    sim: Simulator, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.faults.download_content(b"x" * 5000)
    with httpx.Client(timeout=5.0, transport=_WithoutContentLength()) as http:
        client = make_client(sim, http, clock, max_download_bytes=1000)
        error = fail_without_leak(client, caplog, tmp_path, ExportDownloadError)

    assert "exceeds the 1000-byte limit" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_download_is_retried_with_a_fresh_export(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.truncate_download()

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    assert sim.exports_made() == result.api_calls == 2
    downloads = [r for r in sim.requests if r.host == "download"]
    assert len(downloads) == 2
    assert downloads[0].path != downloads[1].path  # a fresh signed URL, not the same one again
    (part,) = result.parts
    assert list(tmp_path.iterdir()) == [part.path]  # the partial file is gone
    assert len(clock.sleeps) == 1
    assert "broke off" in caplog.text


@pytest.mark.parametrize("status", [403, 500, 503])
def test_an_expired_or_failing_download_is_retried_with_a_fresh_export(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path, status: int
) -> None:
    sim.faults.fail_download(status)

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    assert sim.exports_made() == result.api_calls == 2
    assert [p.path is not None for p in result.parts] == [True]
    assert len(list(tmp_path.iterdir())) == 1


def test_signed_urls_that_always_expire_exhaust_the_retries_as_download(
    http: httpx.Client, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with simulator(url_ttl_seconds=-1) as expired:
        client = make_client(expired, http, clock, retry=RetryPolicy(max_attempts=3))
        error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)
        assert expired.exports_made() == 3

    assert error.reason == "download"
    assert "3 attempt(s)" in str(error)
    assert "403" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_download_file_is_a_download_error_not_retried(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_download(404)

    error = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, ExportDownloadError)

    assert "404" in str(error)
    assert sim.exports_made() == 1


# --- is the file what the answer announced? ---------------------------------------------------

INCOMPLETE: list[tuple[str, Any]] = [
    (
        "cut mid-row, no Content-Length",
        lambda sim: sim.faults.truncate_download(announce_length=False),
    ),
    (
        "cut at a row end, no Content-Length",
        lambda sim: sim.faults.truncate_download(announce_length=False, whole_rows=True),
    ),
    ("a 0-byte body", lambda sim: sim.faults.download_content(b"")),
    (
        "the header only",
        lambda sim: sim.faults.download_content(
            b"period_start,period_end,org_id,api_key_id,api_key_name,model,requests,"
            b"total_cost_usd\r\n"
        ),
    ),
    (
        "fewer rows than recordCount",
        lambda sim: sim.faults.announce_records(10_000),
    ),
]


@pytest.mark.parametrize("inject", [c[1] for c in INCOMPLETE], ids=[c[0] for c in INCOMPLETE])
def test_a_file_with_fewer_rows_than_announced_is_retried_with_a_fresh_export(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    inject: Any,
) -> None:
    inject(sim)

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    assert sim.exports_made() == result.api_calls == 2
    (part,) = result.parts
    assert part.path is not None
    assert list(tmp_path.iterdir()) == [part.path]  # the incomplete file is gone
    assert part.shape is not None
    assert part.shape.rows == part.record_count > 0
    assert "attempt 1/6 failed" in caplog.text


@pytest.mark.parametrize("inject", [c[1] for c in INCOMPLETE], ids=[c[0] for c in INCOMPLETE])
def test_a_file_that_stays_incomplete_fails_as_incomplete_after_the_retries(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    inject: Any,
) -> None:
    for _ in range(3):
        inject(sim)
    client = make_client(sim, http, clock, retry=RetryPolicy(max_attempts=3))

    error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    assert error.reason == "incomplete"
    assert sim.exports_made() == 3
    assert list(tmp_path.iterdir()) == []


def test_a_file_with_more_rows_than_announced_is_a_protocol_error_not_retried(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.announce_records(1)

    error = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, ExportProtocolError)

    assert "more than the 1 the export announced" in str(error)
    assert sim.exports_made() == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content", [b"", b"period_start,period_end,org_id,api_key_id\r\n"], ids=["0 bytes", "header"]
)
def test_a_200_announcing_no_records_with_an_empty_file_reads_as_no_usage_with_a_warning(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
) -> None:
    sim.faults.announce_records(0)
    sim.faults.download_content(content)

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    (part,) = result.parts
    assert part.record_count == 0
    assert sim.exports_made() == 1
    assert "recordCount 0" in caplog.text


# --- answers that are not a file ---------------------------------------------------------------


def test_no_data_404_is_zero_usage_a_part_without_a_file(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    future = (datetime(2026, 11, 21, tzinfo=BERLIN), datetime(2026, 11, 22, tzinfo=BERLIN))

    result = make_client(sim, http, clock).export_api_keys(*future, tmp_path)

    assert result == ExportResult(
        parts=(ExportPart(None, *future, date(2026, 11, 21), date(2026, 11, 21), 0),),
        api_calls=1,
        bytes_downloaded=0,
    )
    assert [r.host for r in sim.requests] == ["api"]


def test_a_404_from_a_wrong_base_url_is_an_error_not_zero_usage(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(sim, http, clock, base_url=sim.base_url + "/v9")

    error = fail_without_leak(client, caplog, tmp_path, ExportRequestError)

    assert "404" in str(error)
    assert "base_url" in str(error)


def test_too_large_splits_at_local_midnights_and_the_parts_add_up_to_one_export(
    http: httpx.Client, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with simulator() as whole_sim:
        whole = make_client(whole_sim, http, clock).export_api_keys(*OCTOBER, tmp_path / "whole")
    (single,) = whole.parts
    with simulator(max_rows=single.record_count - 5) as sim:
        split = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path / "split")

    assert len(split.parts) > 1
    assert split.api_calls == sim.exports_made() > len(split.parts)
    assert (split.parts[0].start, split.parts[-1].end) == OCTOBER
    for before, after in zip(split.parts, split.parts[1:], strict=False):
        assert before.end == after.start
        assert after.start.time() == datetime.min.time()  # a local midnight
        assert after.first_day == before.last_day + timedelta(days=1)
    for part in split.parts:
        assert csv_periods(part) == {(part.first_day.isoformat(), part.last_day.isoformat())}
    assert totals(split.parts) == totals(whole.parts)
    splits = [r for r in caplog.records if "splitting" in r.getMessage()]
    assert splits
    assert all(r.levelno == logging.DEBUG for r in splits)  # the cycle's INFO line is the one


def test_a_single_day_still_too_large_fails_as_too_large_naming_the_day(
    clock: FakeClock, http: httpx.Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    two_days = (ONE_DAY[0], ONE_DAY[1] + timedelta(days=1))
    with simulator(max_rows=1) as sim:
        client = make_client(sim, http, clock)
        error = fail_without_leak(client, caplog, tmp_path, ExportRequestError, two_days)
        assert sim.exports_made() == 2  # the two days, then the first day alone

    assert error.reason == "too_large"
    assert "2026-11-02" in str(error)
    assert "Export too large" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_another_400_is_a_request_error_with_the_server_message_not_retried(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    too_old = (datetime(2025, 1, 1, tzinfo=BERLIN), datetime(2025, 2, 1, tzinfo=BERLIN))

    error = fail_without_leak(
        make_client(sim, http, clock), caplog, tmp_path, ExportRequestError, too_old
    )

    assert error.reason == "bad_request"
    assert "Data older than 12 months cannot be exported" in str(error)
    assert sim.exports_made() == 1
    assert clock.sleeps == []


def test_a_server_message_echoing_the_key_is_masked(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo = {"error": "Bad key format", "message": f"key {KEY} is not allowed here"}
    sim.faults.fail_export(400, body=json.dumps(echo).encode())

    error = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, ExportRequestError)

    assert "key *** is not allowed here" in str(error)


def test_401_says_to_check_the_key_and_its_scope_and_is_not_retried(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(sim, http, clock, api_key=KEY + "-wrong")

    error = fail_without_leak(client, caplog, tmp_path, ExportAuthError)

    assert str(error) == (
        "Langdock rejected the API key (401): check the key and that it has the "
        "USAGE_EXPORT_API scope"
    )
    assert error.reason == "unauthorized"
    assert sim.exports_made() == 1


def test_another_4xx_is_a_request_error(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_export(403)

    error = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, ExportRequestError)

    assert "(403)" in str(error)
    assert sim.exports_made() == 1


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"success": False, "message": "export failed"}, "success=False: 'export failed'"),
        ({"success": True}, "'data'"),
        ({"data": {"downloadUrl": "https://s/x", "recordCount": 1}}, "success=None"),
        ({"success": True, "data": {"recordCount": 3}}, "data.downloadUrl"),
        ({"success": True, "data": {"downloadUrl": 7, "recordCount": 3}}, "data.downloadUrl"),
        (
            {"success": True, "data": {"downloadUrl": "https://s/x", "recordCount": "3"}},
            "recordCount",
        ),
        (
            {"success": True, "data": {"downloadUrl": "https://s/x", "recordCount": True}},
            "recordCount",
        ),
        (
            {"success": True, "data": {"downloadUrl": "https://s/x", "recordCount": -1}},
            "recordCount",
        ),
        (
            {"success": True, "data": {"downloadUrl": "file:///etc/passwd", "recordCount": 1}},
            "https",
        ),
        (["success", True], "not a JSON object"),
    ],
)
def test_a_200_of_the_wrong_shape_is_a_protocol_error_never_used(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    body: Any,
    complaint: str,
) -> None:
    sim.faults.export_body(body)

    error = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, ExportProtocolError)

    assert complaint in str(error)
    assert error.reason == "protocol"
    assert sim.exports_made() == 1
    assert [r.host for r in sim.requests] == ["api"]


UNREADABLE = {
    "HTML": b"<html>maintenance</html>",
    "nested past the parser's depth": b"[" * 100_000 + b"]" * 100_000,
    "an object nested past it": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "a number past Python's digit limit": b'{"success": true, "data": {"recordCount": '
    + b"9" * 5000
    + b"}}",
    "not UTF-8": b'{"success": true, "data": "\xff\xfe"}',
}


@pytest.mark.parametrize("body", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_200_that_is_not_json_it_can_read_is_a_protocol_error(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
) -> None:
    sim.faults.export_bytes(body)

    error = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, ExportProtocolError)

    assert "not JSON" in str(error)
    assert sim.exports_made() == 1


@pytest.mark.parametrize(
    ("status", "error"), [(400, ExportRequestError), (409, ExportRequestError)]
)
def test_an_error_answer_nested_past_the_parser_is_still_the_error_it_says(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: type[ExportError],
) -> None:
    sim.faults.fail_export(status, body=b"[" * 100_000)

    failure = fail_without_leak(make_client(sim, http, clock), caplog, tmp_path, error)

    assert f"({status})" in str(failure)


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jitter", "slept"),
    [(1.0, [1.0, 2.0, 4.0, 8.0]), (0.25, [0.25, 0.5, 1.0, 2.0])],
)
def test_429_without_retry_after_backs_off_exponentially_with_full_jitter(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    jitter: float,
    slept: list[float],
) -> None:
    sim.faults.fail_export(429, times=4)

    result = make_client(sim, http, clock, jitter=jitter).export_api_keys(*OCTOBER, tmp_path)

    assert clock.sleeps == slept
    assert result.api_calls == 5


def test_backoff_is_capped_at_max_backoff(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    sim.faults.fail_export(503, times=4)
    policy = RetryPolicy(max_attempts=5, initial_backoff_seconds=2, max_backoff_seconds=5)

    make_client(sim, http, clock, jitter=1.0, retry=policy).export_api_keys(*OCTOBER, tmp_path)

    assert clock.sleeps == [2.0, 4.0, 5.0, 5.0]


def test_429_retry_after_seconds_is_honoured_and_never_undercut_by_the_backoff(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_export(429, times=2, retry_after="7")
    sim.faults.fail_export(429, times=2, retry_after="1")

    make_client(sim, http, clock, jitter=1.0).export_api_keys(*OCTOBER, tmp_path)

    assert clock.sleeps == [7.0, 7.0, 4.0, 8.0]  # max(Retry-After, backoff 1, 2, 4, 8)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert "HTTP 429, Retry-After 7s" in warnings[0]
    assert "retrying in 7.00s" in warnings[0]


def test_429_retry_after_as_an_http_date_is_honoured(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    sim.faults.fail_export(429, retry_after=formatdate(time.time() + 30, usegmt=True))

    make_client(sim, http, clock, jitter=0.0).export_api_keys(*OCTOBER, tmp_path)

    (slept,) = clock.sleeps
    assert 28 <= slept <= 31  # measured against the response's own Date header


def test_a_retry_after_beyond_the_remaining_budget_gives_up_without_waiting(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_export(429, retry_after="600")
    client = make_client(sim, http, clock, retry=RetryPolicy(max_elapsed_seconds=300))

    error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    assert error.reason == "rate_limited"
    assert clock.sleeps == []
    assert "1 attempt(s)" in str(error)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_until_the_export_succeeds(
    *,
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    sim.faults.fail_export(status, times=2)

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    assert result.api_calls == sim.exports_made() == 3
    assert clock.sleeps == [0.5, 1.0]
    assert f"HTTP {status}" in caplog.text
    assert KEY not in caplog.text


def test_exhausted_attempts_raise_unavailable_with_the_reason_and_count(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_export(503, times=10)
    client = make_client(sim, http, clock, retry=RetryPolicy(max_attempts=4))

    error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    assert error.reason == "server_error"
    assert "after 4 attempt(s) over 3.5s" in str(error)  # slept 0.5 + 1 + 2
    assert sim.exports_made() == 4


def test_the_reason_given_up_with_is_whatever_failed_last(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_export(503)
    sim.faults.reset_export()
    sim.faults.fail_export(429)
    client = make_client(sim, http, clock, retry=RetryPolicy(max_attempts=3))

    error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    assert error.reason == "rate_limited"


def test_the_elapsed_budget_bounds_the_total_wait_and_leaves_each_retry_time_to_run(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.fail_export(503, times=100)
    policy = RetryPolicy(max_attempts=100, initial_backoff_seconds=4, max_elapsed_seconds=10)
    client = make_client(sim, http, clock, jitter=1.0, retry=policy)

    error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    # The second wait (8 s) would reach the end of the 10 s: no attempt would have time left.
    assert clock.sleeps == [4.0]
    assert "2 attempt(s) over 4.0s" in str(error)


def test_an_export_timeout_is_retried(
    sim: Simulator, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.faults.delay_export(2.0)
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
        result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    assert result.api_calls == 2
    assert len(result.parts) == 1
    assert "timed out (ReadTimeout)" in caplog.text


def test_timeouts_to_the_end_give_up_with_reason_timeout(
    sim: Simulator, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.faults.delay_export(2.0, times=2)
    with httpx.Client(timeout=httpx.Timeout(5.0, read=0.2)) as http:
        client = make_client(sim, http, clock, retry=RetryPolicy(max_attempts=2))
        error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    assert error.reason == "timeout"
    assert isinstance(error.__cause__, httpx.TimeoutException)


def test_a_connection_reset_is_retried(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    sim.faults.reset_export()

    result = make_client(sim, http, clock).export_api_keys(*OCTOBER, tmp_path)

    assert result.api_calls == sim.exports_made() == 2
    assert len(clock.sleeps) == 1


def test_connection_failures_to_the_end_give_up_with_reason_connection(
    sim: Simulator,
    http: httpx.Client,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.faults.reset_export(times=2)
    client = make_client(sim, http, clock, retry=RetryPolicy(max_attempts=2))

    error = fail_without_leak(client, caplog, tmp_path, ExportUnavailableError)

    assert error.reason == "connection"
    assert isinstance(error.__cause__, httpx.TransportError)


# --- the secret ----------------------------------------------------------------------------------


def test_the_client_repr_and_attributes_never_show_the_key(
    sim: Simulator, http: httpx.Client, clock: FakeClock
) -> None:
    client = make_client(sim, http, clock)

    assert KEY not in repr(client)
    assert KEY not in str(vars(client))
    assert KEY not in f"{client!r} {vars(client)}"
    assert sim.base_url in repr(client)


def test_parts_already_downloaded_are_deleted_when_a_later_part_fails(
    clock: FakeClock, http: httpx.Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with simulator() as whole_sim:
        rows = make_client(whole_sim, http, clock).export_api_keys(*OCTOBER, tmp_path / "whole")
    with simulator(max_rows=rows.parts[0].record_count - 1) as sim:
        # The whole month is too large, the first half downloads, the second half's download
        # is refused for good.
        sim.faults.download_content(b"period_start\r\n")
        sim.faults.fail_download(404)
        client = make_client(sim, http, clock)
        fail_without_leak(client, caplog, tmp_path / "split", ExportDownloadError)

    assert list((tmp_path / "split").iterdir()) == []


# --- deadlines and the stop --------------------------------------------------------------------


def stuck_client(
    peer: StuckPeer, http: httpx.Client, clock: FakeClock, **options: Any
) -> LangdockClient:
    options.setdefault("sleep", clock.sleep)
    options.setdefault("monotonic", clock.monotonic)
    return LangdockClient(
        http,
        base_url=peer.base_url,
        api_key=KEY,
        allow_insecure_download=True,
        jitter=lambda: 0.5,
        **options,
    )


def raised(call: Callable[[], object]) -> BaseException:
    """What `call()` raised; fails when it returned."""
    try:
        call()
    except BaseException as error:
        return error
    raise AssertionError("expected an exception")


def export_raising(client: LangdockClient, workdir: Path) -> Callable[[], BaseException]:
    return lambda: raised(lambda: client.export_api_keys(*OCTOBER, workdir))


def test_an_answer_trickled_a_byte_at_a_time_is_cut_off_at_the_request_deadline(
    clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each byte comes well within the 5 s read timeout: only a deadline ends this request.
    with StuckPeer("trickle", interval=0.1) as peer, httpx.Client(timeout=5.0) as http:
        client = stuck_client(
            peer, http, clock, request_timeout=1.0, retry=RetryPolicy(max_attempts=2)
        )
        error = returns_within(20, "the export", export_raising(client, tmp_path))
        connections = peer.connections

    assert isinstance(error, ExportUnavailableError)
    assert error.reason == "timeout"
    assert "longer than its 1.0s deadline" in str(error)
    assert connections == 2  # each attempt cut off at its deadline, then a fresh one
    assert_secret_kept(error, client, caplog.text)


def test_a_download_trickled_a_byte_at_a_time_ends_within_the_retry_budget_and_is_deleted(
    clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    retry = RetryPolicy(max_attempts=3, max_elapsed_seconds=1.5)
    with StuckPeer("trickle_download", interval=0.1) as peer, httpx.Client(timeout=5.0) as http:
        client = stuck_client(peer, http, clock, retry=retry)
        error = returns_within(20, "the export", export_raising(client, tmp_path))

    assert isinstance(error, ExportUnavailableError)
    assert error.reason == "download"
    assert "took longer than the 1.5s left" in caplog.text  # the first attempt: all of it
    assert "took longer than the 1.0s left" in str(error)  # the second: what the wait left
    assert list(tmp_path.iterdir()) == []


def test_one_range_never_takes_much_longer_than_its_retry_budget_whatever_the_timeout(
    tmp_path: Path,
) -> None:
    retry = RetryPolicy(max_attempts=6, initial_backoff_seconds=0.01, max_elapsed_seconds=1.0)
    with StuckPeer("silent") as peer, httpx.Client(timeout=60.0) as http:
        client = LangdockClient(
            http, base_url=peer.base_url, api_key=KEY, request_timeout=60.0, retry=retry
        )
        started = time.monotonic()
        error = returns_within(20, "the export", export_raising(client, tmp_path))
        seconds = time.monotonic() - started

    assert isinstance(error, ExportUnavailableError)
    assert error.reason == "timeout"
    assert seconds < 10  # a generous bound on behaviour: 60 s timeouts, a 1 s budget


@pytest.mark.parametrize("mode", ["silent", "trickle", "trickle_download"])
def test_a_stop_aborts_the_request_in_flight_with_stopping_never_an_export_error(
    mode: Mode, clock: FakeClock, tmp_path: Path
) -> None:
    stop = StopSignal()
    with StuckPeer(mode, interval=0.1) as peer, httpx.Client(timeout=60.0) as http:
        retry = RetryPolicy(max_elapsed_seconds=300)
        client = stuck_client(peer, http, clock, deadline=Deadline(stop=stop), retry=retry)
        export = Background(export_raising(client, tmp_path))
        wanted = 2 if mode == "trickle_download" else 1  # the export, then its download
        wait_for(lambda: peer.connections >= wanted, 10, "the request in flight")
        time.sleep(0.3)

        stop.set()
        error = export.result(5, "the export after the stop")

    assert isinstance(error, Stopping)
    assert list(tmp_path.iterdir()) == []  # a download begun is deleted


def test_a_stop_ends_a_retry_sleep_at_once(
    sim: Simulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.faults.fail_export(503, times=10, retry_after="60")
    stop = StopSignal()
    client = LangdockClient(  # the real wait: `deadline.wait`
        http, base_url=sim.base_url, api_key=KEY, deadline=Deadline(stop=stop)
    )
    export = Background(export_raising(client, tmp_path))
    wait_for(lambda: len(sim.requests) >= 1, 10, "the first attempt")
    time.sleep(0.3)

    stop.set()
    error = export.result(5, "the export after the stop")

    assert isinstance(error, Stopping)
    assert len(sim.requests) == 1


def test_no_export_request_starts_once_stopped(
    sim: Simulator, http: httpx.Client, clock: FakeClock, tmp_path: Path
) -> None:
    stop = StopSignal()
    stop.set()
    client = make_client(sim, http, clock, deadline=Deadline(stop=stop))

    with pytest.raises(Stopping):
        client.export_api_keys(*OCTOBER, tmp_path)
    assert sim.requests == []


# --- the retry policy on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("1e999", None),
        ("  12 ", 12.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Fri, 20 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 20 Nov 2026 11:00:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_retry_after_reads_seconds_and_http_dates_and_ignores_garbage(
    header: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    "options",
    [{"max_attempts": 0}, {"initial_backoff_seconds": -1}, {"max_elapsed_seconds": -0.1}],
)
def test_a_retry_policy_that_cannot_work_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**options)


def test_an_api_key_with_surrounding_whitespace_is_refused_without_echoing_it(
    http: httpx.Client,
) -> None:
    with pytest.raises(ValueError, match="api_key") as info:
        LangdockClient(http, base_url="https://api.langdock.com", api_key=f" {KEY}\n")
    assert KEY not in str(info.value)


def test_a_base_url_with_a_user_or_password_is_refused_without_echoing_it(
    http: httpx.Client,
) -> None:
    with pytest.raises(ValueError, match="user or password") as info:
        LangdockClient(http, base_url=f"https://admin:{KEY}@api.langdock.com", api_key=KEY)
    assert KEY not in str(info.value)
