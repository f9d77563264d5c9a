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

Deadlines: each request has one end to end, not only between bytes (`http.py`):
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
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import httpx

from costwatch.deadline import UNBOUNDED, Deadline
from costwatch.errors import (
    ExportDownloadError,
    ExportProtocolError,
    ExportRequestError,
    ExportUnavailableError,
    Retryable,
)
from costwatch.langdock.answers import NoData, Ready, Secret, TooLarge, check_complete, interpret
from costwatch.langdock.http import DeadlineExceeded, bounded
from costwatch.langdock.ranges import Range, checked_range
from costwatch.langdock.retry import Retrier, RetriesExhausted, RetryBudget, RetryPolicy
from costwatch.quote import quote
from costwatch.usage.csvshape import CsvShape

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["ExportPart", "ExportResult", "LangdockClient", "RetryPolicy"]

log = logging.getLogger("costwatch.langdock")

EXPORT_PATH = "/export/api-keys"


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


@dataclass
class _Tally:
    api_calls: int = 0
    bytes_downloaded: int = 0


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
        self._key = Secret(api_key)
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
        whole = checked_range(start, end)
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

    def _export(self, rng: Range, workdir: Path, tally: _Tally, parts: list[ExportPart]) -> None:
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
        self, rng: Range, workdir: Path, tally: _Tally
    ) -> ExportPart | TooLarge:
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
        self, rng: Range, workdir: Path, tally: _Tally, budget: RetryBudget
    ) -> ExportPart | TooLarge:
        self._deadline.check()  # no new request once the daemon stops
        tally.api_calls += 1
        seconds = min(self._request_timeout, budget.remaining())
        try:
            response = self._post(rng, seconds)
        except _UNSENDABLE as exc:
            raise ExportRequestError(
                f"cannot send the export request to {_host(self._export_url)}: {_why(exc)}"
            ) from None
        outcome = interpret(response, self._key)
        if isinstance(outcome, TooLarge):
            return outcome
        if isinstance(outcome, NoData):
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

    def _post(self, rng: Range, seconds: float) -> httpx.Response:
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
        self, ready: Ready, rng: Range, workdir: Path, seconds: float
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
            check_complete(shape, ready.record_count, f"download from {url.host}")
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


def _part(
    rng: Range, path: Path | None, record_count: int, shape: CsvShape | None = None
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
