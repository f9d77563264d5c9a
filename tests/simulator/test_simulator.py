"""The Langdock export simulator, over real HTTP on loopback.

Every call to the API is checked against the project's OpenAPI description of the endpoint
(docs/langdock-export-api.yaml, inside the repository): requests a client may send must
validate, requests that break the contract on purpose must fail validation, and every response
must match what the description declares for its status (200, 400, 401, 404, 429 and 5xx as
observed on the platform); a status it does not declare is checked to be undeclared.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse

from costwatch.simulator import Simulator, Workspace

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "langdock-export-api.yaml"
SPEC_HOST = "https://api.langdock.com"  # the description's server; requests are mapped onto it
KEY = "sim-local-key"
NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
TRICKY_NAMES = {"Zürich-Ops", "Billing, EU", 'The "Quoted" Bot', "<!channel> *urgent*"}


class Clock:
    """The simulator's "now", moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def body(
    start: str,
    end: str,
    zone: str = "UTC",
    *,
    group_by: str | None = "model",
    end_zone: str | None = None,
) -> dict[str, Any]:
    """An export body; `start`/`end` are local wall-clock dates or datetimes without the Z."""
    start = start if "T" in start else f"{start}T00:00:00.000"
    end = end if "T" in end else f"{end}T23:59:59.999"
    payload: dict[str, Any] = {
        "from": {"date": f"{start}Z", "timezone": zone},
        "to": {"date": f"{end}Z", "timezone": end_zone or zone},
    }
    if group_by is not None:
        payload["group_by"] = group_by
    return payload


@dataclass
class Api:
    """An httpx client against a running simulator, validating against the description."""

    sim: Simulator
    client: httpx.Client
    spec: OpenAPI

    def export(
        self,
        payload: Any = None,
        *,
        key: str | None = KEY,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        spec_valid: bool = True,
        path: str = "/export/api-keys",
    ) -> httpx.Response:
        all_headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        all_headers |= headers or {}
        if content is None:
            content = json.dumps(payload).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = self.client.build_request(
            "POST", self.sim.base_url + path, content=content, headers=all_headers
        )
        spec_request = _spec_request(request)
        if spec_valid:
            self.spec.validate_request(spec_request)
        else:
            with pytest.raises(OpenAPIError):
                self.spec.validate_request(spec_request)
        response = self.client.send(request)
        spec_response = MockResponse(
            response.content, response.status_code, dict(response.headers), _type(response)
        )
        if declared(response.status_code):
            self.spec.validate_response(spec_request, spec_response)
        else:
            with pytest.raises(ResponseNotFound):
                self.spec.validate_response(spec_request, spec_response)
        return response

    def export_ok(self, payload: Any) -> dict[str, Any]:
        response = self.export(payload)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def csv_rows(self, payload: Any) -> list[dict[str, str]]:
        response = self.client.get(self.export_ok(payload)["downloadUrl"])
        assert response.status_code == 200, response.text
        return parse_csv(response.content)


@functools.cache
def _declared_statuses() -> frozenset[str]:
    document = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return frozenset(document["paths"]["/export/api-keys"]["post"]["responses"])


def declared(status: int) -> bool:
    """Whether the description declares an answer for `status` (exactly or as a range, 5XX)."""
    return bool({str(status), f"{status // 100}XX"} & _declared_statuses())


def _spec_request(request: httpx.Request) -> MockRequest:
    return MockRequest(
        SPEC_HOST,
        request.method,
        request.url.path,
        headers=dict(request.headers),
        data=request.content,
        content_type=request.headers.get("content-type", ""),
    )


def _type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).lower()


def parse_csv(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


def micro(cost: str | float) -> int:
    return round(float(cost) * 1_000_000)


def expected_rows(ws: Workspace, start: datetime, end: datetime) -> list[tuple[str, ...]]:
    return [
        (r.api_key_id, r.api_key_name, r.model, str(r.requests), f"{r.total_cost_usd:.6f}")
        for r in ws.usage(start, end)
    ]


def csv_tuples(rows: list[dict[str, str]], model_column: str = "model") -> list[tuple[str, ...]]:
    return [
        (r["api_key_id"], r["api_key_name"], r[model_column], r["requests"], r["total_cost_usd"])
        for r in rows
    ]


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def workspace() -> Workspace:
    return Workspace()


@pytest.fixture
def sim_options() -> dict[str, Any]:
    return {}


@pytest.fixture
def api(
    spec: OpenAPI, clock: Clock, workspace: Workspace, sim_options: dict[str, Any]
) -> Iterator[Api]:
    with (
        Simulator(workspace, clock=clock, **sim_options) as sim,
        httpx.Client(timeout=5.0) as client,
    ):
        yield Api(sim, client, spec)


MARCH = body("2026-03-01", "2026-03-31")


# --- authentication ------------------------------------------------------------------------


def test_export_without_an_authorization_header_is_401(api: Api) -> None:
    response = api.export(MARCH, key=None, spec_valid=False)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized", "message": "Invalid or missing API key"}


@pytest.mark.parametrize(
    ("authorization", "spec_valid"),
    [("Bearer wrong-key", True), (f"Bearer {KEY}x", True), (f"Basic {KEY}", False), (KEY, False)],
)
def test_export_with_a_wrong_key_or_scheme_is_401(
    api: Api, authorization: str, spec_valid: bool
) -> None:
    response = api.export(
        MARCH, key=None, headers={"Authorization": authorization}, spec_valid=spec_valid
    )
    assert error(response) == (401, "Unauthorized")


# --- request validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "date",
    [
        "2026-03-01T00:00:00.000+00:00",
        "2026-03-01T00:00:00+00:00",
        "2026-03-01T00:00:00Z",
        "2026-03-01T00:00:00.000000Z",
        "2026-03-01",
        "2026-03-01 00:00:00.000Z",
        "2026-03-01T00:00:00.000",
        "2026-13-01T00:00:00.000Z",
        "2026-02-30T00:00:00.000Z",
        "\uff12\uff10\uff12\uff16-03-01T00:00:00.000Z",  # full-width digits
    ],
)
def test_a_date_with_an_offset_or_any_other_shape_is_400(api: Api, date: str) -> None:
    payload = body("2026-03-01", "2026-03-31")
    payload["from"]["date"] = date
    response = api.export(payload, spec_valid=False)
    assert error(response) == (400, "Invalid date format")
    assert response.json()["message"].startswith("Invalid date format")


# Date strings near the one accepted shape: that shape (with impossible months and days too),
# the shapes clients got wrong (offsets, no or more fractional digits, no Z, a space), and noise.
_INSTANTS = st.datetimes(  # naive: wall-clock times, as the API reads them
    min_value=datetime(2025, 1, 1),  # noqa: DTZ001
    max_value=datetime(2026, 12, 31),  # noqa: DTZ001
)
_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.000Z",
    "%Y-%m-%dT%H:%M:%S.%fZ",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S.000+00:00",
    "%Y-%m-%dT%H:%M:%S.000",
    "%Y-%m-%d %H:%M:%S.000Z",
    "%Y-%m-%d",
)
DATES = st.one_of(
    st.builds(lambda instant, fmt: instant.strftime(fmt), _INSTANTS, st.sampled_from(_FORMATS)),
    st.from_regex(
        r"20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", fullmatch=True
    ),
    st.text(max_size=30),
)


def test_the_simulator_refuses_exactly_the_dates_the_description_refuses(spec: OpenAPI) -> None:
    with (
        Simulator(Workspace(), clock=Clock(NOW)) as sim,
        httpx.Client(timeout=5.0) as client,
    ):
        api = Api(sim, client, spec)

        @settings(max_examples=150, deadline=None)
        @given(DATES)
        def agree(date: str) -> None:
            payload = body("2026-03-01", "2026-03-31")
            payload["from"]["date"] = date
            try:
                spec.validate_request(
                    _spec_request(
                        client.build_request(
                            "POST",
                            SPEC_HOST + "/export/api-keys",
                            json=payload,
                            headers={"Authorization": f"Bearer {KEY}"},
                        )
                    )
                )
            except OpenAPIError:
                spec_valid = False
            else:
                spec_valid = True
            response = api.export(payload, spec_valid=spec_valid)
            refused = response.status_code == 400 and error(response)[1] == "Invalid date format"
            assert refused is not spec_valid, (date, response.text)

        agree()


def test_a_date_that_is_not_a_string_is_400(api: Api) -> None:
    payload = body("2026-03-01", "2026-03-31")
    payload["to"]["date"] = 1772323200000
    assert error(api.export(payload, spec_valid=False)) == (400, "Invalid date format")


@pytest.mark.parametrize("group_by", ["user", "source", "MODEL", ""])
def test_an_unknown_group_by_is_400(api: Api, group_by: str) -> None:
    response = api.export(body("2026-03-01", "2026-03-31", group_by=group_by), spec_valid=False)
    assert error(response) == (400, "Invalid group_by")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "utc", "Europe", "../../etc/passwd", ""])
def test_an_unknown_timezone_is_400(api: Api, zone: str) -> None:
    response = api.export(body("2026-03-01", "2026-03-31", zone))
    assert error(response) == (400, "Invalid timezone")


def test_from_after_to_is_400_invalid_date_range(api: Api) -> None:
    response = api.export(body("2026-03-31", "2026-03-01"))
    assert error(response) == (400, "Invalid date range")


def test_from_after_to_is_judged_in_each_points_own_zone(api: Api) -> None:
    # 10:00 in Berlin is 09:00 UTC: before 09:30 UTC although its wall-clock time is later
    payload = body("2026-03-02T10:00:00.000", "2026-03-02T09:30:00.000", "Europe/Berlin")
    payload["to"]["timezone"] = "UTC"
    assert api.export(payload).status_code == 200
    payload["to"]["date"] = "2026-03-02T08:30:00.000Z"
    assert error(api.export(payload)) == (400, "Invalid date range")


def test_data_older_than_12_months_is_400(api: Api) -> None:
    assert error(api.export(body("2025-04-14", "2025-04-30"))) == (400, "Invalid date range")
    assert api.export(body("2025-04-16", "2025-04-30")).status_code == 200


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"from=2026-03-01", "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"from": {"date": "2026-03-01T00:00:00.000Z", "timezone": "UTC"}}', "application/json"),
        (json.dumps(MARCH).encode(), "text/plain"),
    ],
)
def test_a_body_that_is_not_a_json_export_request_is_400(
    api: Api, content: bytes, content_type: str
) -> None:
    response = api.export(content=content, headers={"Content-Type": content_type}, spec_valid=False)
    assert error(response) == (400, "Invalid request body")


def test_unknown_body_fields_and_a_null_group_by_are_tolerated(api: Api) -> None:
    payload = body("2026-03-01", "2026-03-31", group_by=None)
    payload |= {"format": "csv", "group_by": None}
    payload["from"]["extra"] = True
    response = api.export(payload, spec_valid=False)  # the description's enum has no null
    assert response.status_code == 200


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workspace", [Workspace(created=datetime(2026, 1, 1, tzinfo=UTC))])
def test_a_range_without_usage_is_404_before_created_and_in_the_future(api: Api) -> None:
    expected = {"error": "No data found", "message": "No usage data found for the selected period"}
    for payload in (
        body("2025-06-01", "2025-12-31"),
        body("2026-04-15T12:00:00.000", "2026-05-31"),
    ):
        response = api.export(payload)
        assert (response.status_code, response.json()) == (404, expected)


@pytest.mark.parametrize("sim_options", [{"max_rows": 40}])
def test_an_export_over_max_rows_is_400_too_large_while_a_day_fits(
    api: Api, workspace: Workspace
) -> None:
    rows = len(workspace.usage(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)))
    response = api.export(MARCH)
    assert response.status_code == 400
    assert response.json() == {
        "error": "Export too large",
        "message": f"Export too large: {rows} rows exceeds limit of 40. "
        "Please narrow the date range.",
    }
    day = api.export_ok(body("2026-03-10", "2026-03-10"))
    assert 0 < day["recordCount"] <= 40 < rows


def test_an_export_answers_a_signed_url_to_the_csv_of_the_utc_range(
    api: Api, workspace: Workspace
) -> None:
    data = api.export_ok(MARCH)
    assert data["dataType"] == "api_keys"
    assert data["dateRange"] == {
        "from": "2026-03-01T00:00:00.000Z",
        "to": "2026-03-31T23:59:59.999Z",
    }
    prefix = f"api-keys-usage/{workspace.org_id()}/api-keys-usage-2026-03-01-2026-03-31-"
    assert data["filePath"].startswith(prefix)
    assert len(data["filePath"]) == len(prefix) + len("abc12345.csv")
    url = urlsplit(data["downloadUrl"])
    assert f"{url.scheme}://{url.netloc}" == api.sim.download_base_url != api.sim.base_url
    assert set(parse_qs(url.query)) == {"expires", "signature"}

    response = api.client.get(data["downloadUrl"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content.splitlines()[0] == (
        b"period_start,period_end,org_id,api_key_id,api_key_name,model,requests,total_cost_usd"
    )
    rows = parse_csv(response.content)
    assert len(rows) == data["recordCount"]
    assert {(r["period_start"], r["period_end"], r["org_id"]) for r in rows} == {
        ("2026-03-01", "2026-03-31", workspace.org_id())
    }
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    assert csv_tuples(rows) == expected_rows(workspace, start, end)


def test_tricky_key_names_survive_csv_quoting(api: Api) -> None:
    response = api.client.get(api.export_ok(MARCH)["downloadUrl"])
    assert b'"Billing, EU"' in response.content
    assert b'"The ""Quoted"" Bot"' in response.content
    assert {row["api_key_name"] for row in parse_csv(response.content)} >= TRICKY_NAMES


@dataclass(frozen=True)
class DstCase:
    now: datetime
    first: str  # local dates in Berlin
    last: str
    start: datetime  # the UTC instants they stand for, end exclusive
    end: datetime


@pytest.mark.parametrize(
    "case",
    [  # Berlin springs forward on 2026-03-29 (a 47-hour range) and falls back on 2026-10-25 (49)
        DstCase(
            NOW,
            "2026-03-28",
            "2026-03-29",
            datetime(2026, 3, 27, 23, tzinfo=UTC),
            datetime(2026, 3, 29, 22, tzinfo=UTC),
        ),
        DstCase(
            datetime(2026, 11, 2, tzinfo=UTC),
            "2026-10-24",
            "2026-10-25",
            datetime(2026, 10, 23, 22, tzinfo=UTC),
            datetime(2026, 10, 25, 23, tzinfo=UTC),
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_berlin_range_across_dst_covers_the_local_days_and_names_them(
    api: Api, clock: Clock, workspace: Workspace, case: DstCase
) -> None:
    clock.now = case.now
    rows = api.csv_rows(body(case.first, case.last, "Europe/Berlin"))
    assert {(r["period_start"], r["period_end"]) for r in rows} == {(case.first, case.last)}
    assert csv_tuples(rows) == expected_rows(workspace, case.start, case.end)


def test_the_period_columns_are_each_points_local_date(api: Api) -> None:
    # 23:30 on 2 March in Berlin is 22:30 UTC; 00:30 on 3 March in Tokyo is 15:30 UTC on 2 March
    payload = body("2026-03-02T23:30:00.000", "2026-03-03T00:30:00.000", "Europe/Berlin")
    payload["to"]["timezone"] = "Asia/Tokyo"
    assert error(api.export(payload)) == (400, "Invalid date range")
    payload["to"]["date"] = "2026-03-04T00:30:00.000Z"
    rows = api.csv_rows(payload)
    assert {(r["period_start"], r["period_end"]) for r in rows} == {("2026-03-02", "2026-03-04")}


def test_the_same_wall_clock_range_in_two_zones_returns_different_data(api: Api) -> None:
    utc = api.csv_rows(body("2026-03-10", "2026-03-10", "UTC"))
    tokyo = api.csv_rows(body("2026-03-10", "2026-03-10", "Asia/Tokyo"))
    assert {r["period_start"] for r in utc} == {r["period_start"] for r in tokyo} == {"2026-03-10"}
    assert csv_tuples(utc) != csv_tuples(tokyo)


def test_without_group_by_there_is_one_row_per_key_summing_its_models(api: Api) -> None:
    by_model = api.csv_rows(MARCH)
    by_key = api.csv_rows(body("2026-03-01", "2026-03-31", group_by=None))
    assert "model" not in by_key[0]
    assert len({r["api_key_id"] for r in by_key}) == len(by_key)
    for row in by_key:
        parts = [r for r in by_model if r["api_key_id"] == row["api_key_id"]]
        assert int(row["requests"]) == sum(int(r["requests"]) for r in parts)
        assert micro(row["total_cost_usd"]) == sum(micro(r["total_cost_usd"]) for r in parts)


def test_usage_stops_at_the_clocks_now(api: Api, clock: Clock) -> None:
    to_end_of_month = api.csv_rows(body("2026-04-01", "2026-04-30"))
    to_now = api.csv_rows(body("2026-04-01", "2026-04-15T11:59:59.999"))
    assert csv_tuples(to_end_of_month) == csv_tuples(to_now)
    clock.now += timedelta(hours=6)
    later = api.csv_rows(body("2026-04-01", "2026-04-30"))
    assert sum(micro(r["total_cost_usd"]) for r in later) > sum(
        micro(r["total_cost_usd"]) for r in to_now
    )


def test_a_split_export_adds_up_to_the_whole(api: Api) -> None:
    whole = api.csv_rows(MARCH)
    halves = api.csv_rows(body("2026-03-01", "2026-03-15")) + api.csv_rows(
        body("2026-03-16", "2026-03-31")
    )
    totals: dict[tuple[str, str], list[int]] = {}
    for row in halves:
        total = totals.setdefault((row["api_key_id"], row["model"]), [0, 0])
        total[0] += int(row["requests"])
        total[1] += micro(row["total_cost_usd"])
    assert totals == {
        (r["api_key_id"], r["model"]): [int(r["requests"]), micro(r["total_cost_usd"])]
        for r in whole
    }


def test_the_dedicated_deployment_path_is_served_too(api: Api) -> None:
    response = api.client.post(
        api.sim.base_url + "/api/public/export/api-keys",
        json=MARCH,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 200
    assert api.sim.exports_made() == 1


def test_other_paths_are_404_and_other_methods_405(api: Api) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    for path in ("/export/users", "/export/api-keys/csv", "/"):
        response = api.client.post(api.sim.base_url + path, json=MARCH, headers=headers)
        assert error(response) == (404, "Not found")
    response = api.client.get(api.sim.base_url + "/export/api-keys", headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert api.sim.exports_made() == 0


# --- the download host ---------------------------------------------------------------------


@pytest.mark.parametrize("sim_options", [{"url_ttl_seconds": 60}])
def test_the_download_url_expires_after_its_ttl_by_the_simulator_clock(
    api: Api, clock: Clock
) -> None:
    url = api.export_ok(MARCH)["downloadUrl"]
    clock.now += timedelta(seconds=59)
    assert api.client.get(url).status_code == 200
    clock.now += timedelta(seconds=2)
    response = api.client.get(url)
    assert response.status_code == 403
    assert b"<Code>AccessDenied</Code>" in response.content
    assert b"expired" in response.content


def test_a_download_url_with_a_bad_signature_or_expiry_is_403(api: Api) -> None:
    url = urlsplit(api.export_ok(MARCH)["downloadUrl"])
    query = parse_qs(url.query)
    expires, signature = query["expires"][0], query["signature"][0]
    base = f"{api.sim.download_base_url}{url.path}"
    forged = "0" * len(signature)
    for target in (
        f"{base}?expires={expires}&signature={forged}",
        f"{base}?expires={int(expires) + 3600}&signature={signature}",
        f"{base}?expires={expires}",
        base,
    ):
        response = api.client.get(target)
        assert response.status_code == 403, target
        assert response.headers["content-type"] == "application/xml"


def test_the_download_host_refuses_the_langdock_key_and_never_receives_it(api: Api) -> None:
    url = api.export_ok(MARCH)["downloadUrl"]
    refused = api.client.get(url, headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 400
    assert b"InvalidArgument" in refused.content
    assert api.client.get(url).status_code == 200
    downloads = [r for r in api.sim.requests if r.host == "download"]
    assert len(downloads) == 2
    assert KEY not in downloads[1].headers.values()
    assert "authorization" not in downloads[1].headers


def test_requests_are_recorded_on_both_listeners_and_exports_counted(api: Api) -> None:
    api.client.get(api.export_ok(MARCH)["downloadUrl"])
    api.export(MARCH, key="wrong")
    recorded = api.sim.requests
    assert [(r.host, r.method) for r in recorded] == [
        ("api", "POST"),
        ("download", "GET"),
        ("api", "POST"),
    ]
    assert recorded[0].path == "/export/api-keys"
    assert recorded[0].headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(recorded[0].body) == MARCH
    assert parse_qs(recorded[1].query).keys() == {"expires", "signature"}
    assert api.sim.exports_made() == 2
    recorded.clear()
    assert len(api.sim.requests) == 3  # a snapshot, not the live list


# --- faults ----------------------------------------------------------------------------------


def test_fail_export_answers_429_n_times_with_the_platform_body_then_recovers(api: Api) -> None:
    api.sim.faults.fail_export(429, times=2, retry_after="7")
    for _ in range(2):
        response = api.export(MARCH)
        assert response.status_code == 429
        assert response.json() == {"message": "Rate limit for public API exceeded"}
        assert response.headers["retry-after"] == "7"
    assert api.export(MARCH).status_code == 200
    assert api.sim.exports_made() == 3


def test_fail_export_sends_gateway_html_for_502_to_504_or_the_given_body(api: Api) -> None:
    api.sim.faults.fail_export(503)
    api.sim.faults.fail_export(500, body=b"upstream exploded")
    gateway = api.export(MARCH)
    assert (gateway.status_code, _type(gateway)) == (503, "text/html")
    assert "retry-after" not in gateway.headers
    custom = api.export(MARCH)
    assert (custom.status_code, custom.content, _type(custom)) == (
        500,
        b"upstream exploded",
        "text/plain",
    )


def test_fail_export_applies_before_the_key_is_checked(api: Api) -> None:
    api.sim.faults.fail_export(500)
    assert api.export(MARCH, key="wrong").status_code == 500
    assert api.export(MARCH, key="wrong").status_code == 401


def test_delay_export_holds_the_answer_long_enough_for_a_client_timeout(api: Api) -> None:
    api.sim.faults.delay_export(2.0)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        api.client.post(
            api.sim.base_url + "/export/api-keys",
            json=MARCH,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=0.2,
        )
    assert time.monotonic() - started < 1.5
    assert api.export(MARCH).status_code == 200  # the delay counted down; stop() wakes the first


def test_reset_export_closes_the_connection_without_a_response(api: Api) -> None:
    api.sim.faults.reset_export()
    with pytest.raises(httpx.TransportError):
        api.client.post(
            api.sim.base_url + "/export/api-keys",
            json=MARCH,
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert api.export(MARCH).status_code == 200
    assert api.sim.exports_made() == 2


def test_export_body_answers_200_with_the_given_json(api: Api) -> None:
    odd = {"success": False, "error": "Export failed"}
    api.sim.faults.export_body(odd)
    api.sim.faults.export_body({"success": True, "data": {"downloadUrl": "ftp://elsewhere/x"}})
    response = api.client.post(
        api.sim.base_url + "/export/api-keys", json=MARCH, headers={"Authorization": "Bearer x"}
    )
    assert (response.status_code, response.json()) == (200, odd)
    with pytest.raises(OpenAPIError):  # the second shape breaks the description, on purpose
        api.export(MARCH)


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_fail_download_answers_the_status_like_object_storage(api: Api, status: int) -> None:
    url = api.export_ok(MARCH)["downloadUrl"]
    api.sim.faults.fail_download(status)
    failed = api.client.get(url)
    assert (failed.status_code, _type(failed)) == (status, "application/xml")
    assert failed.content.startswith(b"<?xml")
    assert api.client.get(url).status_code == 200


def test_truncate_download_breaks_off_after_part_of_the_announced_length(api: Api) -> None:
    url = api.export_ok(MARCH)["downloadUrl"]
    api.sim.faults.truncate_download()
    with pytest.raises(httpx.RemoteProtocolError):
        api.client.get(url)
    assert api.client.get(url).status_code == 200


def test_download_content_serves_the_given_bytes_instead_of_the_csv(api: Api) -> None:
    url = api.export_ok(MARCH)["downloadUrl"]
    api.sim.faults.download_content(b"<html>not a csv</html>", times=2)
    assert api.client.get(url).content == b"<html>not a csv</html>"
    assert api.client.get(url).content == b"<html>not a csv</html>"
    assert api.client.get(url).content.startswith(b"period_start,")


def test_export_faults_queue_in_order_and_clear_drops_them(api: Api) -> None:
    faults = api.sim.faults
    faults.fail_export(502)
    faults.fail_export(429)
    assert [api.export(MARCH).status_code for _ in range(3)] == [502, 429, 200]
    faults.fail_export(500, times=5)
    faults.delay_export(5.0, times=5)
    faults.fail_download(500)
    faults.clear()
    started = time.monotonic()
    assert api.client.get(api.export_ok(MARCH)["downloadUrl"]).status_code == 200
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "call",
    [
        lambda sim: sim.faults.fail_export(429, times=0),
        lambda sim: sim.faults.fail_export(42),
        lambda sim: sim.faults.fail_download(1000),
        lambda sim: sim.faults.truncate_download(times=-1),
    ],
)
def test_a_fault_with_no_count_or_no_http_status_is_refused(api: Api, call: Any) -> None:
    with pytest.raises(ValueError, match=r"times|status"):
        call(api.sim)


# --- the synthetic workspace ---------------------------------------------------------------

SPAN_START = datetime(2026, 2, 20, tzinfo=UTC)
SPAN_MINUTES = 60 * 24 * 40


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, SPAN_MINUTES * 60_000), min_size=3, max_size=3, unique=True),
    st.booleans(),
)
def test_usage_is_additive_over_adjacent_ranges(cuts: list[int], byok: bool) -> None:
    ws = Workspace(byok=byok)
    a, b, c = (SPAN_START + timedelta(milliseconds=cut) for cut in sorted(cuts))

    def totals(start: datetime, end: datetime) -> dict[tuple[str, str], tuple[int, ...]]:
        out: dict[tuple[str, str], tuple[int, ...]] = {}
        for row in ws.usage(start, end):
            out[(row.api_key_id, row.model)] = (
                row.requests,
                micro(row.total_cost_usd),
                row.sum_prompt_tokens,
                row.sum_completion_tokens,
                row.cached_prompt_tokens,
                row.cache_creation_tokens,
                row.no_cache_tokens,
            )
        return out

    left, right, whole = totals(a, b), totals(b, c), totals(a, c)
    zero = (0,) * 7
    for pair in left.keys() | right.keys() | whole.keys():
        summed = tuple(
            x + y for x, y in zip(left.get(pair, zero), right.get(pair, zero), strict=True)
        )
        assert summed == whole.get(pair, zero)


def test_usage_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    march = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    ws = Workspace()
    assert ws.key_ids()[0] == ("f5bda2ca-1ddc-40ae-ac4e-21a9e79f4122", "support-bot-prod")
    first = ws.usage(*march, by_model=False)[0]
    assert (first.requests, first.total_cost_usd) == (97951, 139.423265)
    assert Workspace(seed=7).usage(*march) == ws.usage(*march)
    other = Workspace(seed=8)
    assert other.key_ids() != ws.key_ids()
    assert [n for _, n in other.key_ids()] == [n for _, n in ws.key_ids()]
    assert other.usage(*march) != ws.usage(*march)


def test_key_ids_are_unique_and_adding_keys_keeps_the_existing_ones() -> None:
    small, big = Workspace(keys=12), Workspace(keys=40)
    assert big.key_ids()[:12] == small.key_ids()
    assert len({i for i, _ in big.key_ids()}) == len({n for _, n in big.key_ids()}) == 40


def test_some_keys_spend_many_times_what_others_do() -> None:
    ws = Workspace(models=("gpt-4o",), keys=2)
    quarter = ws.usage(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    top, bottom = (row.total_cost_usd / row_days(ws, row.api_key_id) for row in quarter)
    assert 40 < top / bottom < 60


def row_days(ws: Workspace, key_id: str) -> int:
    """Days in Q1 2026 on which a single-model key spent anything."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    days = (start + timedelta(days=d) for d in range(90))
    return sum(
        any(r.api_key_id == key_id for r in ws.usage(day, day + timedelta(days=1))) for day in days
    )


def test_growth_scales_spend() -> None:
    march = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    base = sum(r.total_cost_usd for r in Workspace().usage(*march))
    tripled = sum(r.total_cost_usd for r in Workspace(growth=3.0).usage(*march))
    assert tripled == pytest.approx(3 * base, rel=1e-6)


def test_a_pair_is_active_on_some_days_so_shorter_ranges_have_fewer_rows() -> None:
    ws = Workspace()
    day = len(ws.usage(datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC)))
    month = len(ws.usage(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)))
    assert 0 < day < 0.8 * month
    assert month <= ws.keys * len(ws.models)


def test_usage_before_created_or_in_an_empty_range_is_nothing() -> None:
    ws = Workspace(created=datetime(2026, 3, 15, tzinfo=UTC))
    march = ws.usage(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    second_half = ws.usage(datetime(2026, 3, 15, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert march == second_half != []
    assert ws.usage(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC)) == []
    assert ws.usage(datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)) == []
    with pytest.raises(ValueError, match="aware"):
        ws.usage(datetime(2026, 3, 1), datetime(2026, 3, 2))  # noqa: DTZ001


def test_a_large_workspace_month_is_computed_whole() -> None:
    """A month of 2,000 keys x 50 models: every row there (how fast is bench/'s business)."""
    ws = Workspace(keys=2000, models=tuple(f"model-{i}" for i in range(50)), seed=99)
    rows = ws.usage(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert len(rows) > 80_000


# --- late usage ------------------------------------------------------------------------------

LATE = Workspace(late_share=0.3, late_by=timedelta(hours=3), byok=True)
APRIL_14 = body("2026-04-14", "2026-04-14")


def tallies(rows: list[dict[str, str]]) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {
        (r["api_key_id"], r["model"]): (
            int(r["requests"]),
            micro(r["total_cost_usd"]),
            int(r.get("sum_prompt_tokens") or 0),
        )
        for r in rows
    }


def settled(
    ws: Workspace, start: datetime, end: datetime
) -> dict[tuple[str, str], tuple[int, int, int]]:
    """What happened over [start, end), late usage included (no `seen_at`)."""
    return {
        (r.api_key_id, r.model): (r.requests, micro(r.total_cost_usd), r.sum_prompt_tokens)
        for r in ws.usage(start, end)
    }


def total_cost(rows: list[dict[str, str]]) -> int:
    return sum(micro(r["total_cost_usd"]) for r in rows)


@pytest.mark.parametrize("workspace", [LATE])
def test_late_usage_keeps_arriving_after_midnight_until_the_day_has_settled(
    api: Api, clock: Clock, workspace: Workspace
) -> None:
    day = (datetime(2026, 4, 14, tzinfo=UTC), datetime(2026, 4, 15, tzinfo=UTC))
    truth = settled(workspace, *day)
    seen = []
    for minutes in (5, 60, 120, 179, 180, 600):
        clock.now = day[1] + timedelta(minutes=minutes)
        seen.append(api.csv_rows(APRIL_14))
    costs = [total_cost(rows) for rows in seen]
    assert costs[0] < costs[1] < costs[2] < costs[3] < costs[4] == costs[5]
    assert tallies(seen[4]) == tallies(seen[5]) == truth  # settled: exactly what happened
    # right after midnight, about 30 % of the day's last 3 hours is still missing
    tail = sum(r.total_cost_usd for r in workspace.usage(day[1] - timedelta(hours=3), day[1]))
    missing = (costs[4] - costs[0]) / 1e6
    assert missing == pytest.approx(0.3 * tail * 175 / 180, rel=0.05)
    # every pair only ever grows towards its settled counts, tokens consistent on the way
    for earlier in seen[:4]:
        for pair, counts in tallies(earlier).items():
            assert all(a <= b for a, b in zip(counts, truth[pair], strict=True))
        for row in earlier:
            assert int(row["sum_prompt_tokens"]) == int(row["cached_prompt_tokens"]) + int(
                row["no_cache_tokens"]
            )


@pytest.mark.parametrize("workspace", [LATE])
def test_late_usage_only_touches_the_last_hours_so_older_days_are_already_whole(
    api: Api, clock: Clock, workspace: Workspace
) -> None:
    clock.now = datetime(2026, 4, 15, 0, 5, tzinfo=UTC)
    april_13 = api.csv_rows(body("2026-04-13", "2026-04-13"))
    assert tallies(april_13) == settled(
        workspace, datetime(2026, 4, 13, tzinfo=UTC), datetime(2026, 4, 14, tzinfo=UTC)
    )
    # today's open day is short of its late share too: the export of now is not yet settled
    today = api.csv_rows(body("2026-04-15", "2026-04-15"))
    clock.now += timedelta(hours=3)
    assert total_cost(api.csv_rows(body("2026-04-15", "2026-04-15T00:04:59.999"))) > total_cost(
        today
    )


def test_without_the_late_knob_usage_is_the_same_whenever_it_is_seen() -> None:
    ws = Workspace()
    day = (datetime(2026, 4, 14, tzinfo=UTC), datetime(2026, 4, 15, tzinfo=UTC))
    assert ws.usage(*day, seen_at=day[1]) == ws.usage(*day)
    late = Workspace(late_share=0.5, late_by=timedelta(hours=2))
    assert late.usage(*day) == ws.usage(*day)  # the truth does not depend on the knob
    assert late.usage(*day, seen_at=day[1] + timedelta(hours=2)) == ws.usage(*day)
    assert late.usage(*day, seen_at=day[1]) != ws.usage(*day)


@pytest.mark.parametrize(
    "options", [{"late_share": -0.1}, {"late_share": 1.5}, {"late_by": timedelta(hours=-1)}]
)
def test_a_late_share_outside_0_to_1_or_a_negative_delay_is_refused(
    options: dict[str, Any],
) -> None:
    with pytest.raises(ValueError, match="late"):
        Workspace(**options)


# --- columns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workspace", [Workspace(byok=True)])
def test_byok_adds_the_five_token_columns(api: Api) -> None:
    rows = api.csv_rows(MARCH)
    assert list(rows[0])[-5:] == [
        "sum_prompt_tokens",
        "sum_completion_tokens",
        "cached_prompt_tokens",
        "cache_creation_tokens",
        "no_cache_tokens",
    ]
    for row in rows:
        prompt, completion, cached, creation, uncached = (
            int(row[name]) for name in list(rows[0])[-5:]
        )
        assert prompt == cached + uncached
        assert 0 <= creation <= uncached
        assert completion > 0 or int(row["requests"]) == 0


def test_without_byok_there_are_no_token_columns(api: Api) -> None:
    assert "sum_prompt_tokens" not in api.csv_rows(MARCH)[0]


@pytest.mark.parametrize("workspace", [Workspace(model_column="raw_model")])
def test_the_model_column_option_names_the_model_header(api: Api, workspace: Workspace) -> None:
    rows = api.csv_rows(MARCH)
    assert "model" not in rows[0]
    assert {r["raw_model"] for r in rows} == set(workspace.models)


# --- lifecycle -------------------------------------------------------------------------------


def test_the_simulator_stops_cleanly_even_with_a_delayed_answer_pending() -> None:
    sim = Simulator().start()
    base_url = sim.base_url
    sim.faults.delay_export(30.0)
    with httpx.Client() as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(base_url + "/export/api-keys", json=MARCH, timeout=0.1)
        started = time.monotonic()
        sim.stop()
        assert time.monotonic() - started < 2.0
        with pytest.raises(httpx.ConnectError):
            client.post(base_url + "/export/api-keys", json=MARCH)
    with pytest.raises(RuntimeError):
        sim.base_url  # noqa: B018 (the property raises)
    with pytest.raises(RuntimeError):
        sim.start()


def test_urls_are_unavailable_before_start() -> None:
    with pytest.raises(RuntimeError, match="start"):
        Simulator().download_base_url  # noqa: B018 (the property raises)
