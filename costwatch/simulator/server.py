"""A built-in Langdock Usage Export server: the real HTTP contract on loopback.

Two listeners, as in production, where the API host and the storage host differ:

    api       POST /export/api-keys (also under /api/public, as a dedicated deployment)
              Bearer key, validates the body exactly as Langdock does (described in
              docs/langdock-export-api.yaml), answers 200 with a signed download URL, or a flat
              {"error", "message"} body: 400, 401, 404; 404 for other paths, 405 for other methods.
    download  GET /files/<token>?expires=<unix>&signature=<hmac>: the CSV, like object storage.
              No Langdock key: a request carrying an Authorization header is refused (400), and
              an expired or tampered URL is a 403 with an XML body.

The data comes from a `Workspace` (`workspace.py`); "now" from the injected clock, and
no data extends past it. Usage is reported as seen at that now: with the workspace's late
usage (`late_share`, `late_by`), a day exported right after its midnight lacks what has not
arrived yet. `Faults` scripts failures: each knob answers the next N matching
requests. Every request on both listeners is recorded for tests to inspect.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from costwatch.simulator.faults import Faults, Reply, error_reply, json_reply, storage_error
from costwatch.simulator.workspace import Workspace, export_csv

__all__ = ["EXPORT_PATHS", "RecordedRequest", "Simulator"]

log = logging.getLogger("costwatch.simulator")

EXPORT_PATHS = frozenset({"/export/api-keys", "/api/public/export/api-keys"})
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_FILE_PATH = re.compile(r"/files/([0-9a-f]{32})")
_MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as a listener received it; `host` is "api" or "download"."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    host: str


class _BadRequest(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.reply = error_reply(400, error, message)


@dataclass(frozen=True)
class _ExportRange:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive: the request's inclusive `to` plus a millisecond
    from_text: str
    to_text: str
    by_model: bool


def _parse_export(body: bytes, content_type: str, now: datetime) -> _ExportRange:
    """The export request as Langdock validates it; raises _BadRequest with its 400 body."""
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise _BadRequest("Invalid request body", "Content-Type must be application/json")
    try:
        payload = json.loads(body)
    except ValueError:
        raise _BadRequest("Invalid request body", "Request body must be valid JSON") from None
    if not isinstance(payload, dict):
        raise _BadRequest("Invalid request body", "Request body must be a JSON object")
    group_by = payload.get("group_by")
    if group_by not in (None, "model"):
        raise _BadRequest("Invalid group_by", "Unsupported group_by value. Supported: model")
    start, from_text = _parse_point(payload, "from")
    inclusive_end, to_text = _parse_point(payload, "to")
    if start > inclusive_end:
        raise _BadRequest("Invalid date range", "Invalid date range: from must not be after to")
    if start < _a_year_before(now):
        raise _BadRequest("Invalid date range", "Data older than 12 months cannot be exported")
    return _ExportRange(
        start, inclusive_end + _MILLISECOND, from_text, to_text, group_by == "model"
    )


def _parse_point(payload: dict[str, Any], name: str) -> tuple[datetime, str]:
    """`{"date": local wall-clock time + "Z", "timezone": IANA}` -> (UTC instant, date text)."""
    point = payload.get(name)
    if not isinstance(point, dict) or not {"date", "timezone"} <= point.keys():
        raise _BadRequest("Invalid request body", f"{name}.date and {name}.timezone are required")
    text, zone_name = point["date"], point["timezone"]
    bad_date = _BadRequest(
        "Invalid date format",
        f"Invalid date format in {name}.date: expected "
        "YYYY-MM-DDTHH:MM:SS.sssZ (local time in the given timezone)",
    )
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise bad_date
    try:
        local = datetime.fromisoformat(text[:-1])
    except ValueError:
        raise bad_date from None
    return local.replace(tzinfo=_zone(zone_name, name)).astimezone(UTC), text


def _zone(zone_name: object, name: str) -> ZoneInfo:
    if isinstance(zone_name, str) and zone_name:
        try:
            return ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise _BadRequest("Invalid timezone", f"Unknown timezone in {name}.timezone")


def _a_year_before(now: datetime) -> datetime:
    day = 28 if (now.month, now.day) == (2, 29) else now.day
    return now.replace(year=now.year - 1, day=day)


class _Storage:
    """Exported files behind signed, expiring URLs (HMAC over token and expiry)."""

    def __init__(self, ttl_seconds: float) -> None:
        self._secret = secrets.token_bytes(32)
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._files: dict[str, tuple[bytes, int]] = {}

    def put(self, content: bytes, now: datetime) -> str:
        """Store a file; returns the signed path and query for it."""
        token = secrets.token_hex(16)
        expires = int(now.timestamp() + self._ttl)
        with self._lock:
            self._files = {t: f for t, f in self._files.items() if f[1] >= now.timestamp()}
            self._files[token] = (content, expires)
        return f"/files/{token}?expires={expires}&signature={self._sign(token, expires)}"

    def get(self, path: str, query: str, now: datetime) -> Reply:
        """The file if the URL is valid, else the 403/404 object storage would answer."""
        match = _FILE_PATH.fullmatch(path)
        params = parse_qs(query)
        expires, signature = params.get("expires", [""])[0], params.get("signature", [""])[0]
        if not match or not expires.isdigit() or not signature:
            return storage_error(403, "AccessDenied", "Query-string authentication required")
        if not hmac.compare_digest(signature, self._sign(match[1], int(expires))):
            return storage_error(403, "SignatureDoesNotMatch", "Signature does not match")
        if now.timestamp() > int(expires):
            return storage_error(403, "AccessDenied", "Request has expired")
        with self._lock:
            stored = self._files.get(match[1])
        if stored is None:
            return storage_error(404, "NoSuchKey", "The specified key does not exist.")
        return Reply(200, stored[0], "text/csv")

    def _sign(self, token: str, expires: int) -> str:
        message = f"{token}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self, address: tuple[str, int], role: str, app: _App) -> None:
        super().__init__(address, _Handler)
        self.role = role
        self.app = app

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("simulator %s: connection error from %s", self.role, client_address)


_App = Callable[[RecordedRequest], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "costwatch-simulator"
    timeout = 5.0  # a silent client cannot hold stop() up for longer
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator %s: " + format, self.server.role, *args)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self._read_body()
        recorded = RecordedRequest(
            self.command, url.path, url.query, headers, body, self.server.role
        )
        try:
            reply = self.server.app(recorded)
        except Exception:
            log.exception("simulator %s: handler failed", self.server.role)
            reply = error_reply(500, "Internal Server Error", "Simulator failure")
        self._send(reply)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, reply: Reply) -> None:
        self.close_connection = True
        if reply.reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if reply.announce_length:
            self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.payload())


class Simulator:
    """The Langdock export API and its download host on two loopback ports.

    `workspace` and `max_rows` may be replaced while running (the demo raises `growth`): the
    next export uses them. Rates are constant, so a new `growth` rescales all of history.
    """

    def __init__(
        self,
        workspace: Workspace | None = None,
        *,
        api_key: str = "sim-local-key",
        host: str = "127.0.0.1",
        port: int = 0,
        max_rows: int = 1_000_000,
        url_ttl_seconds: float = 300.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.workspace = workspace or Workspace()
        self.api_key = api_key
        self.faults = Faults()
        self.max_rows = max_rows
        self._address = (host, port)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._storage = _Storage(url_ttl_seconds)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._exports = 0
        self._stopping = threading.Event()
        self._servers: list[tuple[_Server, threading.Thread]] = []

    @property
    def base_url(self) -> str:
        return self._url(0)

    @property
    def download_base_url(self) -> str:
        return self._url(1)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def exports_made(self) -> int:
        with self._lock:
            return self._exports

    def start(self) -> Simulator:
        if self._servers or self._stopping.is_set():
            raise RuntimeError("a simulator starts once")
        api = _Server(self._address, "api", self._api)
        try:
            download = _Server((self._address[0], 0), "download", self._download)
        except OSError:
            api.server_close()
            raise
        for server in (api, download):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            thread.start()
            self._servers.append((server, thread))
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in delay_export
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join()
        self._servers.clear()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _url(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._servers[index][0].server_address[:2]
        return f"http://{host!s}:{port}"

    def _record(self, request: RecordedRequest, *, export: bool = False) -> None:
        with self._lock:
            self._requests.append(request)
            self._exports += export

    def _api(self, request: RecordedRequest) -> Reply:
        is_export = request.path in EXPORT_PATHS
        self._record(request, export=is_export and request.method == "POST")
        if not is_export:
            return error_reply(404, "Not found", f"Cannot {request.method} {request.path}")
        if request.method != "POST":
            return json_reply(
                405, {"error": "Method not allowed", "message": "Use POST"}, {"Allow": "POST"}
            )
        delay, fault = self.faults.next_export()
        if delay:
            self._stopping.wait(delay)
        if fault is not None:
            return fault
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.encode(), self.api_key.encode()
        ):
            return error_reply(401, "Unauthorized", "Invalid or missing API key")
        return self._export(request)

    def _export(self, request: RecordedRequest) -> Reply:
        now = self._clock()
        try:
            wanted = _parse_export(request.body, request.headers.get("content-type", ""), now)
        except _BadRequest as bad:
            return bad.reply
        rows = self.workspace.usage(
            wanted.start, min(wanted.end, now), by_model=wanted.by_model, seen_at=now
        )
        if not rows:
            return error_reply(404, "No data found", "No usage data found for the selected period")
        if len(rows) > self.max_rows:
            message = (
                f"Export too large: {len(rows)} rows exceeds limit of {self.max_rows}. "
                "Please narrow the date range."
            )
            return error_reply(400, "Export too large", message)
        period = (wanted.from_text[:10], wanted.to_text[:10])
        signed = self._storage.put(
            export_csv(self.workspace, rows, period, grouped=wanted.by_model), now
        )
        name = f"api-keys-usage-{period[0]}-{period[1]}-{secrets.token_hex(4)}.csv"
        announced = self.faults.next_record_count()
        data = {
            "filePath": f"api-keys-usage/{self.workspace.org_id()}/{name}",
            "downloadUrl": self.download_base_url + signed,
            "dataType": "api_keys",
            "recordCount": len(rows) if announced is None else announced,
            "dateRange": {"from": wanted.from_text, "to": wanted.to_text},
        }
        return json_reply(200, {"success": True, "data": data})

    def _download(self, request: RecordedRequest) -> Reply:
        self._record(request)
        if request.method not in ("GET", "HEAD"):
            return storage_error(405, "MethodNotAllowed", "The specified method is not allowed")
        if "authorization" in request.headers:
            message = "Only one auth mechanism allowed; the URL is already signed"
            return storage_error(400, "InvalidArgument", message)
        reply = self._storage.get(request.path, request.query, self._clock())
        if reply.status != 200:
            return reply
        fault = self.faults.next_download()
        if fault is None:
            return reply
        if fault.rewrite is not None:
            return Reply(200, fault.rewrite(reply.body), "text/csv")
        if fault.truncate:
            return dataclasses.replace(fault, body=reply.body, content_type="text/csv")
        return fault
