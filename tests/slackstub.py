"""A local stand-in for Slack: the Web API (`chat.postMessage`, `auth.test`) and incoming
webhooks, on one loopback port, answering as Slack does.

- Web API: `POST /api/<method>`, form-encoded or JSON bodies, `Authorization: Bearer <token>`
  checked (`not_authed` without one, `invalid_auth` for another); always HTTP 200 with
  `{"ok": true, ...}` or `{"ok": false, "error": ...}`, except the programmed faults.
- Channels are known by name (`#name` or `name`) or id; each may be archived or lack the app
  (`is_archived`, `not_in_channel`); others are `channel_not_found`.
- Webhooks: `POST /services/T.../B.../<secret>`; 200 `ok`, or Slack's errors: 404 `no_service`
  (unknown path), 403 `invalid_token`, 410 `channel_is_archived`, 400 `invalid_payload`, as set
  by `webhook_error`.
- Faults, each for the next N requests, in the order set: an HTTP status (429 carries
  `Retry-After`), a delay before answering, a dropped connection (reset, no answer), or an
  exact answer (any status, body and headers: a proxy's login page, a redirect elsewhere).
- Any other method than POST gets 405, unless an exact answer is set (a redirect's target).
- Every request is recorded (method, path, headers, parsed body, status) for the tests to
  inspect; the stand-in logs nothing (a webhook path is a secret).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

TOKEN = "xoxb-1234-5678-s3cr3tT0kenValue"
WEBHOOK_SECRET = "T0STUB/B0STUB/w3bh00kS3cr3tPart"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]  # JSON or form fields, parsed
    status: int  # what the stand-in answered; 0 when it dropped the connection
    accepted: bool  # a message Slack would show

    @property
    def channel(self) -> str | None:
        channel = self.body.get("channel")
        return str(channel) if channel is not None else None

    @property
    def text(self) -> str:
        """Everything a person would read: the text and every string inside the blocks."""
        return " ".join([str(self.body.get("text") or ""), *_strings(self.body.get("blocks"))])


@dataclass
class Channel:
    id: str
    name: str
    archived: bool = False
    member: bool = True


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    accepted: bool = False  # a message posted


@dataclass(frozen=True)
class _Fault:
    status: int = 0  # 0: no answer of its own
    delay: float = 0.0
    drop: bool = False
    error: str = ""
    reply: _Reply | None = None  # exactly this answer


class SlackStub:
    """The stand-in; `start()`/`stop()` or a `with` block."""

    def __init__(self, *, token: str = TOKEN, retry_after: int | str = 1) -> None:
        self.token = token
        self.retry_after = retry_after  # seconds, on every 429 (a str is sent as it is)
        self.webhook_error: str | None = None  # "invalid_token", "channel_is_archived", ...
        self.channels: dict[str, Channel] = {}
        self._faults: deque[_Fault] = deque()
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- programming it ---------------------------------------------------------------------

    def add_channel(self, name: str, *, archived: bool = False, member: bool = True) -> Channel:
        channel = Channel(f"C{len(self.channels) + 1:08d}", name.lstrip("#"), archived, member)
        self.channels[channel.name] = channel
        return channel

    def fail_next(self, status: int, times: int = 1, error: str = "") -> None:
        """The next `times` requests answer `status` (429: with Retry-After)."""
        self._push(_Fault(status=status, error=error), times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """The next `times` requests are answered (normally) after `seconds`."""
        self._push(_Fault(delay=seconds), times)

    def drop_next(self, times: int = 1) -> None:
        """The next `times` requests get their connection reset instead of an answer."""
        self._push(_Fault(drop=True), times)

    def answer_next(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` requests, whatever their method, get exactly this answer."""
        reply = _Reply(status, body, content_type, dict(headers or {}))
        self._push(_Fault(reply=reply), times)

    def redirect_next(self, status: int, location: str, times: int = 1) -> None:
        """The next `times` requests are sent on to `location` (301, 302, 303, 307, 308)."""
        self.answer_next(status, b"Moved", headers={"Location": location}, times=times)

    def _push(self, fault: _Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    # -- what it saw ------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def posts(self, channel: str | None = None) -> list[Request]:
        """Messages accepted, optionally only those in `channel` (a name, `#name` or id)."""
        accepted = [r for r in self.requests if r.accepted]
        if channel is None:
            return accepted
        wanted = self._find(channel)
        return [r for r in accepted if r.channel and self._find(r.channel) == wanted]

    # -- addresses --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/services/{WEBHOOK_SECRET}"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> SlackStub:
        self._server = _Server(("127.0.0.1", 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers waiting in a delay
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()  # joins the handler threads
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> SlackStub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- answering ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        body = _parse(raw, headers.get("content-type", ""))
        with self._lock:
            fault = self._faults.popleft() if self._faults else _Fault()
        if fault.delay:
            self._stopping.wait(fault.delay)
        if fault.reply is not None:
            reply = fault.reply
        elif method != "POST":
            reply = _Reply(405, b"method_not_allowed", "text/plain")
        elif fault.drop:
            reply = _Reply(0, b"", drop=True)
        elif fault.status:
            reply = self._fault_reply(path, fault)
        elif path.startswith("/api/"):
            reply = self._api(path.removeprefix("/api/"), headers, body)
        else:
            reply = self._webhook(path, body)
        with self._lock:
            self._requests.append(
                Request(method, path, headers, body, reply.status, reply.accepted)
            )
        return reply

    def _fault_reply(self, path: str, fault: _Fault) -> _Reply:
        headers = {"Retry-After": str(self.retry_after)} if fault.status == 429 else {}
        if fault.status >= 500:
            return _Reply(fault.status, b"<html>Internal Server Error</html>", "text/html")
        if path.startswith("/api/"):
            error = fault.error or ("ratelimited" if fault.status == 429 else "fatal_error")
            return _Reply(fault.status, _json({"ok": False, "error": error}), headers=headers)
        error = fault.error or ("rate_limited" if fault.status == 429 else "invalid_payload")
        return _Reply(fault.status, error.encode(), "text/plain", headers)

    def _api(self, method: str, headers: dict[str, str], body: dict[str, Any]) -> _Reply:
        auth = headers.get("authorization", "")
        if not auth:
            return _ok_false("not_authed")
        if auth != f"Bearer {self.token}":
            return _ok_false("invalid_auth")
        if method == "auth.test":
            answer = {"ok": True, "team": "Stub", "user": "costwatch", "bot_id": "B0STUB"}
            return _Reply(200, _json({**answer, "team_id": "T0STUB", "user_id": "U0STUB"}))
        if method != "chat.postMessage":
            return _ok_false("unknown_method")
        return self._post_message(body)

    def _post_message(self, body: dict[str, Any]) -> _Reply:
        channel = self._find(str(body.get("channel") or ""))
        if channel is None:
            return _ok_false("channel_not_found")
        if channel.archived:
            return _ok_false("is_archived")
        if not channel.member:
            return _ok_false("not_in_channel")
        if not body.get("text") and not body.get("blocks"):
            return _ok_false("no_text")
        ts = f"{time.time():.6f}"
        message = {"text": body.get("text"), "ts": ts}
        answer = {"ok": True, "channel": channel.id, "ts": ts, "message": message}
        return _Reply(200, _json(answer), accepted=True)

    def _webhook(self, path: str, body: dict[str, Any]) -> _Reply:
        if path != f"/services/{WEBHOOK_SECRET}":
            return _Reply(404, b"no_service", "text/plain")
        status = {"invalid_token": 403, "channel_is_archived": 410, "no_service": 404}
        if self.webhook_error is not None:
            return _Reply(status.get(self.webhook_error, 400), self.webhook_error.encode())
        if not body.get("text") and not body.get("blocks"):
            return _Reply(400, b"invalid_payload", "text/plain")
        return _Reply(200, b"ok", "text/html", accepted=True)

    def _find(self, name: str) -> Channel | None:
        for channel in self.channels.values():
            if name in (channel.id, channel.name, f"#{channel.name}"):
                return channel
        return None


def _ok_false(error: str) -> _Reply:
    return _Reply(200, _json({"ok": False, "error": error}))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _parse(raw: bytes, content_type: str) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace")
    if "json" in content_type or text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    fields: dict[str, Any] = dict(parse_qsl(text))
    if isinstance(fields.get("blocks"), str):
        fields["blocks"] = json.loads(fields["blocks"])
    return fields


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, address: tuple[str, int], stub: SlackStub) -> None:
        super().__init__(address, _Handler)
        self.stub = stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) and closed its end: nothing to report


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5.0  # a silent client cannot hold stop() up for longer
    server: _Server

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        reply = self.server.stub.handle(self.command, self.path, headers, raw)
        self.close_connection = True
        if reply.drop:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line holds the webhook's secret path
