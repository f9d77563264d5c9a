"""The simulator's canned answers and its fault knobs (`Faults`), for `costwatch.simulator`."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
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
    truncate: bool = False  # send half the body, then close
    whole_rows: bool = False  # with truncate: cut back to the last line end in that half
    announce_length: bool = True  # send Content-Length (of the whole body, even if truncated)
    rewrite: Callable[[bytes], bytes] | None = None  # a download: serve rewrite(the real file)

    def payload(self) -> bytes:
        """The bytes actually sent: the body, or for `truncate` a first part of it."""
        if not self.truncate:
            return self.body
        half = len(self.body) // 2
        if self.whole_rows:
            return self.body[: self.body.rfind(b"\n", 0, half) + 1]
        return self.body[:half]


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

    The export answers (`fail_export`, `reset_export`, `export_body`, `export_bytes`) queue in
    the order they were set, and so do the download answers; `delay_export` delays whatever
    answer comes next. Export faults apply to every POST /export/api-keys, before the key is
    checked; download faults replace the answer to a download whose URL is valid;
    `announce_records` changes the recordCount of the next real 200 answers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._export: deque[_Fault] = deque()
        self._delay: deque[_Fault] = deque()
        self._download: deque[_Fault] = deque()
        self._counts: deque[_Fault] = deque()

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

    def export_bytes(self, body: bytes, times: int = 1) -> None:
        """The next `times` exports answer 200 with exactly these bytes as application/json."""
        self._push(self._export, times, Reply(200, body))

    def announce_records(self, count: int, times: int = 1) -> None:
        """The next `times` real 200 answers say recordCount `count`, whatever the file holds."""
        self._push(self._counts, times, None, float(count))

    def fail_download(self, status: int, times: int = 1) -> None:
        """The next `times` valid downloads answer `status` with an object-storage XML body."""
        _check_status(status)
        codes = {403: "AccessDenied", 404: "NoSuchKey", 503: "SlowDown"}
        reply = storage_error(status, codes.get(status, "InternalError"), "Simulated failure")
        self._push(self._download, times, reply)

    def truncate_download(
        self, times: int = 1, *, announce_length: bool = True, whole_rows: bool = False
    ) -> None:
        """The next `times` valid downloads send half the file and close: after announcing the
        full Content-Length, or (`announce_length=False`) with none, delimited by the close;
        `whole_rows` cuts back to the last line end in that half."""
        reply = Reply(200, truncate=True, whole_rows=whole_rows, announce_length=announce_length)
        self._push(self._download, times, reply)

    def download_content(self, content: bytes, times: int = 1) -> None:
        """The next `times` valid downloads serve `content` instead of the export."""
        self._push(self._download, times, Reply(200, content, "text/csv"))

    def rewrite_download(self, change: Callable[[bytes], bytes], times: int = 1) -> None:
        """The next `times` valid downloads serve `change(the real file)`: a ragged row, a
        header naming a column twice, counts too large to add up, another period."""
        self._push(self._download, times, Reply(200, content_type="text/csv", rewrite=change))

    def clear(self) -> None:
        with self._lock:
            for queue in (self._export, self._delay, self._download, self._counts):
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

    def next_record_count(self) -> int | None:
        """The recordCount a real 200 answer announces instead of the true one, if any."""
        answer = self._take(self._counts)
        return int(answer.seconds) if answer else None

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
    except (ValueError, RecursionError):
        return "text/plain"
    return "application/json"
