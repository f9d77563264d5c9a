"""The Langdock export client: request, retries, range splitting, signed-URL download.

`LangdockClient.export_api_keys(start, end, workdir)` exports API-key usage grouped by model
for the half-open range [start, end) and downloads the CSV into `workdir`:

    POST {base_url}/export/api-keys   (Bearer key; local wall-clock dates with a literal "Z")
      200  -> validate the body, GET the signed downloadUrl at once (no key), stream to a file
      404  "No data found" -> a part without a file: zero usage, not an error
      400  "Export too large" -> split at the local midnight nearest the middle, export both
      401  -> ExportAuthError; other 4xx -> ExportRequestError (never retried)
      429, 5xx, timeouts, connection errors, broken or expired downloads, and downloads
      holding fewer rows than the answer's recordCount or ending mid-row or inside quotes
      (cut off, with or without a Content-Length to tell)
           -> retried (a fresh export each time) under a RetryPolicy, then ExportUnavailableError
      a download with more rows than recordCount -> ExportProtocolError (not retried)
      a request that cannot be sent (a host name that is not one) -> ExportRequestError

Wall-clock times are ambiguous while a DST fall-back repeats an hour (and at a midnight in
zones that fall back at midnight), and the API reads wall-clock time: a part whose `from` or
`to` falls in a repeated hour is asked for in UTC instead, the exact same instants with no
second reading, and its days (for the CSV's period check) are then UTC days. Every other part
is asked for in its own zone, as documented.

Deadlines: each request has one end to end, not only between bytes (`costwatch.httpdeadline`):
the POST must finish within the request timeout, and the POST and its download within what is
left of the range's retry budget, so a peer that never answers or trickles a byte a second
costs one attempt, not the cycle. A stop (`deadline.stop`, set on shutdown) aborts the request
in flight and ends a retry sleep at once: `Stopping` propagates, never an ExportError, and the
files already downloaded are deleted.

The key lives in a `_Secret` that masks itself in `repr`/`str`/f-strings; the download URL is
signed, so only its host is ever logged. Checking the CSV's period against the range is the
loader's job (`costwatch.usage`), using each part's `first_day`/`last_day`.
"""

from __future__ import annotations

import io
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx

from costwatch.csvshape import CsvShape
from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.errors import (
    ExportAuthError,
    ExportDownloadError,
    ExportProtocolError,
    ExportRequestError,
    ExportUnavailableError,
)
from costwatch.httpdeadline import DeadlineExceeded, bounded
from costwatch.periods import local_midnight
from costwatch.quote import quote
from costwatch.retry import (
    Retrier,
    RetriesExhausted,
    Retryable,
    RetryBudget,
    RetryPolicy,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["ExportPart", "ExportResult", "LangdockClient", "RetryPolicy"]

log = logging.getLogger("costwatch.langdock")

EXPORT_PATH = "/export/api-keys"
_ONE_MS = timedelta(milliseconds=1)
_AUTH_MESSAGE = (
    "Langdock rejected the API key (401): check the key and that it has the USAGE_EXPORT_API scope"
)
_TOO_LARGE = "Export too large"
_NO_DATA = "No data found"
_UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class ExportPart:
    """One exported sub-range and its CSV file."""

    path: Path | None  # the downloaded CSV; None when the API said 404 "No data found"
    start: datetime  # the local, aware datetimes this part covered, [start, end)
    end: datetime
    first_day: date  # local date of start
    last_day: date  # local date of the inclusive end
    record_count: int  # as the API reported (0 for a 404)
    shape: CsvShape | None = None  # the file's records and fields, as checked; None for a 404


@dataclass(frozen=True)
class ExportResult:
    """Every part of one export, in time order, and what it cost."""

    parts: tuple[ExportPart, ...]
    api_calls: int  # POSTs made (including retries)
    bytes_downloaded: int  # bytes written to the part files


class _Secret:
    """A string that never shows itself in repr, str, f-strings, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of the secret masked (for server-provided messages)."""
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "<secret ***>"

    __str__ = __repr__


@dataclass(frozen=True)
class _Range:
    """A half-open local range [start, end) in one zone."""

    start: datetime
    end: datetime

    @property
    def zone(self) -> ZoneInfo:
        assert isinstance(self.start.tzinfo, ZoneInfo)
        return self.start.tzinfo

    @property
    def last_instant(self) -> datetime:
        """The inclusive end the API expects: one millisecond before `end`, in real time."""
        return (self.end.astimezone(UTC) - _ONE_MS).astimezone(self.zone)

    @property
    def request_zone(self) -> ZoneInfo:
        """The range's zone, or UTC when a bound's wall-clock time there occurs twice."""
        if _ambiguous(self.start) or _ambiguous(self.last_instant):
            return _UTC_ZONE
        return self.zone

    @property
    def first_day(self) -> date:
        """The first day as the request names it (and the CSV's period_start says)."""
        return self.start.astimezone(self.request_zone).date()

    @property
    def last_day(self) -> date:
        return self.last_instant.astimezone(self.request_zone).date()

    def describe(self) -> str:
        if self.first_day == self.last_day:
            return self.first_day.isoformat()
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()}"

    def request_body(self) -> dict[str, Any]:
        zone = self.request_zone
        return {
            "from": {"date": _wall_clock(self.start.astimezone(zone)), "timezone": zone.key},
            "to": {"date": _wall_clock(self.last_instant.astimezone(zone)), "timezone": zone.key},
            "group_by": "model",
        }

    def split(self) -> tuple[_Range, _Range] | None:
        """Both halves around the local midnight nearest the middle; None within one day.

        Real time, not wall-clock arithmetic: days are 23 or 25 hours long across DST.
        """
        start, end = self.start.astimezone(UTC), self.end.astimezone(UTC)
        middle = start + (end - start) / 2
        middle_day = middle.astimezone(self.zone).date()
        candidates = [
            local_midnight(middle_day, self.zone),
            local_midnight(middle_day + timedelta(days=1), self.zone),
        ]
        inside = [c for c in candidates if start < c.astimezone(UTC) < end]
        if not inside:
            return None
        cut = min(inside, key=lambda c: abs((c.astimezone(UTC) - middle).total_seconds()))
        return _Range(self.start, cut), _Range(cut, self.end)


def _ambiguous(moment: datetime) -> bool:
    """Whether `moment`'s local wall-clock time occurs twice in its zone (a DST fall-back).

    A real instant's wall time always exists, so two offsets for it mean two occurrences.
    """
    wall = moment.replace(tzinfo=None)
    zone = moment.tzinfo
    return (
        wall.replace(tzinfo=zone, fold=0).utcoffset()
        != wall.replace(tzinfo=zone, fold=1).utcoffset()
    )


def _wall_clock(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.sssZ` holding the local wall-clock time (the Z is literal)."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


@dataclass
class _Tally:
    api_calls: int = 0
    bytes_downloaded: int = 0


@dataclass(frozen=True)
class _Ready:
    download_url: httpx.URL
    record_count: int


@dataclass(frozen=True)
class _NoData:
    pass


@dataclass(frozen=True)
class _TooLarge:
    message: str


class LangdockClient:
    """Exports API-key usage from Langdock's Usage Export API (see the module docstring)."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        api_key: str,
        allow_insecure_download: bool = False,
        max_download_bytes: int = 512 * 1024 * 1024,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so sharing it is safe
        request_timeout: float | None = None,
        deadline: Deadline = UNBOUNDED,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`request_timeout`: the longest one export POST may take end to end (default: the
        client's read timeout). `deadline.stop` aborts requests and retry sleeps on shutdown;
        `sleep` defaults to `deadline.wait`."""
        if not api_key or not all("!" <= character <= "~" for character in api_key):
            raise ValueError(
                "api_key must be non-empty printable ASCII without whitespace: it is sent in an "
                "HTTP header"
            )
        if httpx.URL(base_url).userinfo:  # the URL is logged; the key goes in api_key
            raise ValueError("base_url must not contain a user or password")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._export_url = self._base_url + EXPORT_PATH
        self._key = _Secret(api_key)
        self._allow_insecure_download = allow_insecure_download
        self._max_download_bytes = max_download_bytes
        self._request_timeout = request_timeout or http.timeout.read or 120.0
        self._deadline = deadline
        self._monotonic = monotonic
        self._retrier = Retrier(
            retry, sleep=sleep or deadline.wait, monotonic=monotonic, jitter=jitter
        )

    def __repr__(self) -> str:
        return f"LangdockClient(base_url={self._base_url!r}, api_key=***)"

    def export_api_keys(self, start: datetime, end: datetime, workdir: Path) -> ExportResult:
        """Export [start, end) (aware, zoneinfo) into CSV files in `workdir`.

        On any failure the files already downloaded for this call are deleted.
        """
        whole = _checked_range(start, end)
        workdir.mkdir(parents=True, exist_ok=True)
        tally = _Tally()
        parts: list[ExportPart] = []
        try:
            self._export(whole, workdir, tally, parts)
        except BaseException:
            for part in parts:
                if part.path is not None:
                    part.path.unlink(missing_ok=True)
            raise
        log.debug(
            "exported %s (%s): %d part(s), %d record(s), %d byte(s), %d API call(s)",
            whole.describe(),
            whole.zone.key,
            len(parts),
            sum(p.record_count for p in parts),
            tally.bytes_downloaded,
            tally.api_calls,
        )
        return ExportResult(tuple(parts), tally.api_calls, tally.bytes_downloaded)

    def _export(self, rng: _Range, workdir: Path, tally: _Tally, parts: list[ExportPart]) -> None:
        outcome = self._export_with_retries(rng, workdir, tally)
        if isinstance(outcome, ExportPart):
            parts.append(outcome)
            return
        halves = rng.split()
        if halves is None:
            raise ExportRequestError(
                f"Langdock export of the single day {rng.describe()} ({rng.zone.key}) is too "
                f"large and cannot be split further: {quote(outcome.message)}",
                reason="too_large",
            )
        log.debug(
            "export of %s too large; splitting into %s and %s",
            rng.describe(),
            halves[0].describe(),
            halves[1].describe(),
        )
        for half in halves:
            self._export(half, workdir, tally, parts)

    def _export_with_retries(
        self, rng: _Range, workdir: Path, tally: _Tally
    ) -> ExportPart | _TooLarge:
        what = f"export of {rng.describe()}"
        try:
            return self._retrier.run(
                lambda budget: self._attempt(rng, workdir, tally, budget), what=what, log=log
            )
        except RetriesExhausted as gave_up:
            raise ExportUnavailableError(
                f"Langdock {what} failed after {gave_up.attempts} attempt(s) over "
                f"{gave_up.elapsed:.1f}s; last: {gave_up.last.description}",
                reason=gave_up.last.reason,
            ) from gave_up.last.__cause__

    def _attempt(
        self, rng: _Range, workdir: Path, tally: _Tally, budget: RetryBudget
    ) -> ExportPart | _TooLarge:
        self._deadline.check()  # no new request once the daemon stops
        tally.api_calls += 1
        seconds = min(self._request_timeout, budget.remaining())
        try:
            response = self._post(rng, seconds)
        except _UNSENDABLE as exc:
            raise ExportRequestError(
                f"cannot send the export request to {_host(self._export_url)}: {_why(exc)}"
            ) from None
        outcome = _interpret(response, self._key)
        if isinstance(outcome, _TooLarge):
            return outcome
        if isinstance(outcome, _NoData):
            log.debug("no usage in %s (404 No data found)", rng.describe())
            return _part(rng, None, 0)
        self._check_download_url(outcome.download_url)
        self._deadline.check()
        try:
            path, size, shape = self._download(outcome, rng, workdir, budget.remaining())
        except _UNSENDABLE as exc:
            raise ExportProtocolError(
                f"cannot download the export from {_host(str(outcome.download_url))}: {_why(exc)}"
            ) from None
        tally.bytes_downloaded += size
        return _part(rng, path, outcome.record_count, shape)

    def _post(self, rng: _Range, seconds: float) -> httpx.Response:
        """The export POST, within `seconds` end to end (a stop aborts it)."""
        body = rng.request_body()
        if rng.request_zone != rng.zone:
            log.info(
                "%s: a bound's local time occurs twice in %s (DST ends); asking in UTC",
                rng.describe(),
                rng.zone.key,
            )
        log.debug("POST %s %s", self._export_url, json.dumps(body))
        headers = {"Authorization": "Bearer " + self._key.reveal(), "Connection": "close"}
        try:
            with bounded(seconds, self._deadline.stop) as exchange:
                return self._http.post(
                    self._export_url,
                    json=body,
                    headers=headers,
                    timeout=exchange.timeout(self._http.timeout),
                    extensions=exchange.extensions,
                )
        except DeadlineExceeded as exc:
            raise Retryable(
                "timeout", f"export request took longer than its {exc.seconds:.1f}s deadline"
            ) from exc
        except httpx.TimeoutException as exc:
            raise Retryable("timeout", f"export request timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise Retryable("connection", f"export request failed ({type(exc).__name__})") from exc

    def _check_download_url(self, url: httpx.URL) -> None:
        allowed = {"https", "http"} if self._allow_insecure_download else {"https"}
        if url.scheme not in allowed or not url.host:
            raise ExportProtocolError(
                f"refusing to download the export from {url.scheme}://{url.host or '?'}: "
                "only https is allowed (set allow_insecure_download for a local simulator)"
            )

    def _download(
        self, ready: _Ready, rng: _Range, workdir: Path, seconds: float
    ) -> tuple[Path, int, CsvShape]:
        """Stream the signed URL into a new file in `workdir` within `seconds` end to end, and
        check it holds what the answer announced; delete it on any failure."""
        url = ready.download_url
        log.debug("downloading the export of %s from %s", rng.describe(), url.host)
        fd, name = tempfile.mkstemp(
            dir=workdir, prefix=f"api-keys-{rng.first_day}_{rng.last_day}-", suffix=".csv"
        )
        path = Path(name)
        shape = CsvShape()
        try:
            with _MeasuredFile(fd, shape) as sink:
                size = self._stream_into(url, sink, seconds)
            _check_complete(shape, ready.record_count, f"download from {url.host}")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, size, shape

    def _stream_into(self, url: httpx.URL, sink: BinaryIO, seconds: float) -> int:
        try:
            with bounded(seconds, self._deadline.stop) as exchange:
                request = self._http.build_request(
                    "GET",
                    url,
                    headers={"Connection": "close"},
                    timeout=exchange.timeout(self._http.timeout),
                    extensions=exchange.extensions,
                )
                request.headers.pop("Authorization", None)  # a client default must not leak
                return self._send_into(request, url.host, sink)
        except DeadlineExceeded as exc:
            raise Retryable(
                "download", f"download from {url.host} took longer than the {exc.seconds:.1f}s left"
            ) from exc

    def _send_into(self, request: httpx.Request, host: str, sink: BinaryIO) -> int:
        try:
            response = self._http.send(request, stream=True, auth=None, follow_redirects=False)
            try:
                return self._receive(response, host, sink)
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise Retryable(
                "download", f"download from {host} broke off ({type(exc).__name__})"
            ) from exc

    def _receive(self, response: httpx.Response, host: str, sink: BinaryIO) -> int:
        status = response.status_code
        if status == 403 or status >= 500:
            raise Retryable("download", f"download from {host} answered {status}")
        if status != 200:
            raise ExportDownloadError(f"download from {host} answered {status}")
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        limit = self._max_download_bytes
        if expected is not None and expected > limit:
            raise ExportDownloadError(
                f"export from {host} is {expected} bytes, over the {limit}-byte limit"
            )
        written = 0
        for chunk in response.iter_bytes():
            written += len(chunk)
            if written > limit:
                raise ExportDownloadError(f"export from {host} exceeds the {limit}-byte limit")
            sink.write(chunk)
        received = response.num_bytes_downloaded
        if expected is not None and received < expected:
            raise Retryable(
                "download", f"download from {host} broke off after {received} of {expected} bytes"
            )
        return written


# An exchange httpx cannot even make: a host name that is not one (idna: a DNS label empty or
# over 63 characters), text an HTTP header cannot carry, a URL httpx refuses. Retrying cannot
# help; the key itself is checked when the client is made.
_UNSENDABLE = (ValueError, httpx.InvalidURL)


def _why(exc: Exception) -> str:
    """What made the exchange impossible, never quoting what was sent (it may hold the key)."""
    if isinstance(exc, UnicodeError) and "idna" in str(exc):
        return "the host is not a valid host name (a DNS label is empty or over 63 characters)"
    if isinstance(exc, UnicodeEncodeError):
        return "a header holds a character that is not ASCII"
    return f"{type(exc).__name__} in the HTTP exchange"


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


def _checked_range(start: datetime, end: datetime) -> _Range:
    zone = start.tzinfo
    if not isinstance(zone, ZoneInfo):
        raise ValueError("start must be an aware datetime whose tzinfo is a zoneinfo.ZoneInfo")
    if end.tzinfo is None:
        raise ValueError("end must be an aware datetime")
    if end.astimezone(UTC) <= start.astimezone(UTC):
        raise ValueError(f"empty export range: end {end.isoformat()} <= start {start.isoformat()}")
    return _Range(start.astimezone(zone), end.astimezone(zone))


def _part(
    rng: _Range, path: Path | None, record_count: int, shape: CsvShape | None = None
) -> ExportPart:
    return ExportPart(path, rng.start, rng.end, rng.first_day, rng.last_day, record_count, shape)


class _MeasuredFile(io.BufferedWriter):
    """A file that measures the CSV shape of what is written to it, as it is written: the
    check of a download costs no second pass over it."""

    def __init__(self, fd: int, shape: CsvShape) -> None:
        super().__init__(io.FileIO(fd, "wb"))
        self._shape = shape

    def write(self, buffer: ReadableBuffer, /) -> int:
        self._shape.feed(bytes(buffer))
        return super().write(buffer)


def _check_complete(shape: CsvShape, announced: int, what: str) -> None:
    """The file holds the rows the answer announced (`recordCount`), and ends where a record
    does. A file cut off (a broken body without a Content-Length to tell, or one the storage
    host served short) is worth a fresh export; one with more rows than announced is not."""
    if shape.ends_in_quote:
        raise Retryable("incomplete", f"{what} ends inside a quoted value (cut off?)")
    if shape.cut_short:
        raise Retryable("incomplete", f"{what} ends in the middle of a row (cut off?)")
    if shape.rows < announced:
        raise Retryable(
            "incomplete", f"{what} holds {shape.rows} of the {announced} rows the export announced"
        )
    if shape.rows > announced:
        raise ExportProtocolError(
            f"{what} holds {shape.rows} rows, more than the {announced} the export announced"
        )
    if announced == 0:
        log.warning(
            "%s: the export answered 200 with recordCount 0 (Langdock answers 404 when there is "
            "no usage); read as no usage",
            what,
        )


def _interpret(response: httpx.Response, key: _Secret) -> _Ready | _NoData | _TooLarge:
    """What an export POST's answer means; raises for answers that end the export."""
    status = response.status_code
    if response.is_success:
        return _parse_success(response, key)
    error, message = _error_fields(response, key)
    if status == 404 and error == _NO_DATA:
        return _NoData()
    if status == 400 and (error == _TOO_LARGE or message.startswith(_TOO_LARGE)):
        return _TooLarge(message or error)
    if status == 401:
        raise ExportAuthError(_AUTH_MESSAGE)
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(response.headers)
        reason = "rate_limited" if status == 429 else "server_error"
        waited = "" if retry_after is None else f", Retry-After {retry_after:g}s"
        raise Retryable(reason, f"HTTP {status}{waited}", retry_after)
    detail = quote(message or error) if message or error else "(no message)"
    if 400 <= status < 500:
        hint = " (check base_url)" if status == 404 else ""
        raise ExportRequestError(f"Langdock rejected the export request ({status}){hint}: {detail}")
    raise ExportProtocolError(f"Langdock answered the export request with HTTP {status}")


def _error_fields(response: httpx.Response, key: _Secret) -> tuple[str, str]:
    """The flat error body's `error` and `message`, masked; the raw text when not JSON.

    Outside text: whoever puts either into a message quotes it (`costwatch.quote`).
    """
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return "", key.scrub(response.text[:200].strip())
    if not isinstance(body, dict):
        return "", ""
    error, message = body.get("error"), body.get("message")
    return (
        key.scrub(error) if isinstance(error, str) else "",
        key.scrub(message) if isinstance(message, str) else "",
    )


def _literal(value: object) -> str:
    """A JSON value from the server, shown briefly: `True`, `None`, or quoted and capped."""
    if value is None or isinstance(value, bool):
        return repr(value)
    return quote(json.dumps(value), 60)


def _parse_success(response: httpx.Response, key: _Secret) -> _Ready:
    """The documented 200 body, checked; anything else is an ExportProtocolError."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ExportProtocolError(
            f"Langdock answered {response.status_code} with a body that is not JSON it can read"
        ) from None
    if not isinstance(body, dict):
        raise ExportProtocolError("Langdock's export answer is not a JSON object")
    if body.get("success") is not True:
        _, message = _error_fields(response, key)
        raise ExportProtocolError(
            f"Langdock's export answer has success={_literal(body.get('success'))}"
            + (f": {quote(message)}" if message else "")
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise ExportProtocolError("Langdock's export answer has no 'data' object")
    url, count = data.get("downloadUrl"), data.get("recordCount")
    if not isinstance(url, str) or not url:
        raise ExportProtocolError("Langdock's export answer has no string 'data.downloadUrl'")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ExportProtocolError(
            "Langdock's export answer has no non-negative integer 'data.recordCount'"
        )
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise ExportProtocolError("Langdock's export answer has an invalid downloadUrl") from None
    return _Ready(parsed, count)
