"""The simulator's canned answers and its fault knobs (`Faults`), for `costwatch.simulator`."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # close the connection without answering
    truncate: bool = False  # announce the full Content-Length, send half, close


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=headers or {})


def error_reply(status: int, error: str, message: str) -> Reply:
    return json_reply(status, {"error": error, "message": message})


def storage_error(status: int, code: str, message: str) -> Reply:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Reply(status, xml.encode(), content_type="application/xml")


def default_failure(status: int) -> Reply:
    """What the platform or its gateway sends for a status, when a test gives no body."""
    if status == 429:
        return json_reply(429, {"message": "Rate limit for public API exceeded"})
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status in (502, 503, 504):
        html = f"<html><head><title>{status} {phrase}</title></head><body>{phrase}</body></html>"
        return Reply(status, html.encode(), content_type="text/html")
    return error_reply(status, phrase, f"{phrase}: simulated failure")


@dataclass
class _Fault:
    remaining: int
    reply: Reply | None  # None: a delay only
    seconds: float = 0.0


class Faults:
    """Thread-safe failure knobs; each counts down once per matching request.

    The export answers (`fail_export`, `reset_export`, `export_body`) queue in the order they
    were set, and so do the download answers; `delay_export` delays whatever answer comes next.
    Export faults apply to every POST /export/api-keys, before the key is checked; download
    faults replace the answer to a download whose URL is valid.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._export: deque[_Fault] = deque()
        self._delay: deque[_Fault] = deque()
        self._download: deque[_Fault] = deque()

    def fail_export(
        self,
        status: int,
        times: int = 1,
        *,
        retry_after: str | None = None,
        body: bytes | None = None,
    ) -> None:
        """The next `times` exports answer `status` (default body: what the platform sends)."""
        _check_status(status)
        reply = default_failure(status) if body is None else Reply(status, body, _guess(body))
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._push(self._export, times, Reply(status, reply.body, reply.content_type, headers))

    def delay_export(self, seconds: float, times: int = 1) -> None:
        """The next `times` exports wait `seconds` before answering."""
        self._push(self._delay, times, None, seconds)

    def reset_export(self, times: int = 1) -> None:
        """The next `times` exports close the connection without a response."""
        self._push(self._export, times, Reply(0, reset=True))

    def export_body(self, body: Any, times: int = 1) -> None:
        """The next `times` exports answer 200 with `body` as JSON."""
        self._push(self._export, times, json_reply(200, body))

    def fail_download(self, status: int, times: int = 1) -> None:
        """The next `times` valid downloads answer `status` with an object-storage XML body."""
        _check_status(status)
        codes = {403: "AccessDenied", 404: "NoSuchKey", 503: "SlowDown"}
        reply = storage_error(status, codes.get(status, "InternalError"), "Simulated failure")
        self._push(self._download, times, reply)

    def truncate_download(self, times: int = 1) -> None:
        """The next `times` valid downloads announce the full length, send half, and close."""
        self._push(self._download, times, Reply(200, truncate=True))

    def download_content(self, content: bytes, times: int = 1) -> None:
        """The next `times` valid downloads serve `content` instead of the export."""
        self._push(self._download, times, Reply(200, content, "text/csv"))

    def clear(self) -> None:
        with self._lock:
            for queue in (self._export, self._delay, self._download):
                queue.clear()

    def _push(
        self, queue: deque[_Fault], times: int, reply: Reply | None, seconds: float = 0
    ) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            queue.append(_Fault(times, reply, seconds))

    def next_export(self) -> tuple[float, Reply | None]:
        """(seconds to wait, the answer to give instead of the real one) for one export."""
        delay = self._take(self._delay)
        answer = self._take(self._export)
        return (delay.seconds if delay else 0.0), (answer.reply if answer else None)

    def next_download(self) -> Reply | None:
        answer = self._take(self._download)
        return answer.reply if answer else None

    def _take(self, queue: deque[_Fault]) -> _Fault | None:
        with self._lock:
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.popleft()
            return fault


def _check_status(status: int) -> None:
    if not 200 <= status <= 599:
        raise ValueError(f"not an HTTP status a fault can answer: {status}")


def _guess(body: bytes) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain"
    return "application/json"
