"""What the export API's answers mean: a download to fetch, no data, too large, or an error.

    200  -> the documented body, checked: a signed downloadUrl and its recordCount (`Ready`)
    404  "No data found" -> `NoData`: zero usage, not an error
    400  "Export too large" -> `TooLarge`: the caller splits the range
    401  -> ExportAuthError; other 4xx -> ExportRequestError (never retried)
    429, 5xx -> `Retryable` (with Retry-After); anything else -> ExportProtocolError

`check_complete` says what a download's shape means against the answer's recordCount. Text the
server sent is outside text: masked of the key (`Secret.scrub`) and quoted where it is shown.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import httpx

from costwatch.errors import ExportAuthError, ExportProtocolError, ExportRequestError, Retryable
from costwatch.quote import quote
from costwatch.retryafter import retry_after_seconds
from costwatch.usage.csvshape import CsvShape

log = logging.getLogger("costwatch.langdock")

_AUTH_MESSAGE = (
    "Langdock rejected the API key (401): check the key and that it has the USAGE_EXPORT_API scope"
)
_TOO_LARGE = "Export too large"
_NO_DATA = "No data found"


class Secret:
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
class Ready:
    download_url: httpx.URL
    record_count: int


@dataclass(frozen=True)
class NoData:
    pass


@dataclass(frozen=True)
class TooLarge:
    message: str


def check_complete(shape: CsvShape, announced: int, what: str) -> None:
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


def interpret(response: httpx.Response, key: Secret) -> Ready | NoData | TooLarge:
    """What an export POST's answer means; raises for answers that end the export."""
    status = response.status_code
    if response.is_success:
        return _parse_success(response, key)
    error, message = _error_fields(response, key)
    if status == 404 and error == _NO_DATA:
        return NoData()
    if status == 400 and (error == _TOO_LARGE or message.startswith(_TOO_LARGE)):
        return TooLarge(message or error)
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


def _error_fields(response: httpx.Response, key: Secret) -> tuple[str, str]:
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


def _parse_success(response: httpx.Response, key: Secret) -> Ready:
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
    return Ready(parsed, count)
