"""One request to `/metrics`, `/healthz` or `/readyz`, on a connection whose head the server's
loop has read: basic auth, the route, and the answer sent by the connection's deadline.

- `GET /metrics` serves what `App.exposition()` returns (`Metrics.exposition_parts`: stored
  bytes plus the small live registry) as `text/plain; version=0.0.4`; the server needs only
  that callable, not the metrics, so a scrape does no work proportional to the keys. To a
  scraper that accepts gzip (`Accept-Encoding`, as Prometheus sends it) it serves
  `App.gzipped()` instead (`Metrics.exposition_gzip`: the snapshot compressed once per cycle,
  only the live part per scrape), with `Content-Encoding: gzip`.
- `GET /healthz` and `GET /readyz` call their probe: `(True, text)` answers 200 with the text,
  `(False, reason)` 503 with the reason (a probe that raises counts as not ok). 404 elsewhere.
- Optional basic auth covers every path (401 with `WWW-Authenticate` when missing or wrong;
  compared with `hmac.compare_digest`). The password is never logged; request lines go to the
  server's logger at DEBUG, quoted (`costwatch.quote`), and never carry headers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import logging
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import urlsplit

from costwatch.quote import quote

log = logging.getLogger("costwatch.httpserver")

Probe = Callable[[], tuple[bool, str]]
Exposition = Callable[[], Sequence[bytes]]
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_TEXT = "text/plain; charset=utf-8"
TIMEOUT_SECONDS = 10.0  # per connection: TLS handshake and request head; then the answer
WORKERS = 4  # threads answering complete requests
MAX_PENDING = 128  # connections still sending their head
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class App:
    """What the handler serves."""

    exposition: Exposition
    healthz: Probe
    readyz: Probe
    credentials: bytes | None  # b"user:password" when basic auth is on
    gzipped: Exposition | None = None  # the same exposition as one gzip stream, when offered


@dataclass(frozen=True)
class Limits:
    """How much the server takes on at once, and how long a connection may take."""

    timeout: float = TIMEOUT_SECONDS
    workers: int = WORKERS
    max_pending: int = MAX_PENDING


@dataclass(eq=False)
class Connection:
    """An accepted connection, until its request head is complete."""

    sock: socket.socket
    address: Any
    deadline: float  # time.monotonic() by which the head (and later the answer) must be done
    handshaking: bool = False
    head: bytes = b""
    events: int = selectors.EVENT_READ

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Serving(Protocol):
    """What a request needs of the server: what it serves and how long it may take."""

    @property
    def app(self) -> App: ...

    @property
    def limits(self) -> Limits: ...


class _DeadlineWriter:
    """The answer's bytes, sent by the connection's deadline (the whole answer, not per send)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def write(self, data: bytes) -> int:
        remaining = self._connection.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer was not taken in time")
        self._connection.sock.settimeout(remaining)
        self._connection.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


class Handler(BaseHTTPRequestHandler):
    """One request, read from the head the loop collected; the answer goes out by deadline."""

    request: Connection
    server: Serving  # type: ignore[assignment]
    server_version = "costwatch"
    sys_version = ""

    def setup(self) -> None:
        connection = self.request
        connection.deadline = time.monotonic() + self.server.limits.timeout
        self.connection = connection.sock
        self.rfile = io.BytesIO(connection.head)
        self.wfile = _DeadlineWriter(connection)  # type: ignore[assignment]

    def handle(self) -> None:
        self.handle_one_request()

    def finish(self) -> None:
        pass

    def do_GET(self) -> None:
        app = self.server.app
        if app.credentials is not None and not authorized(
            self.headers.get("Authorization"), app.credentials
        ):
            self._send(401, b"unauthorized\n", extra={"WWW-Authenticate": _CHALLENGE})
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            if app.gzipped is not None and accepts_gzip(self.headers.get("Accept-Encoding")):
                gzip = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
                self._send_parts(200, tuple(app.gzipped()), CONTENT_TYPE_METRICS, gzip)
            else:
                self._send_parts(200, tuple(app.exposition()), CONTENT_TYPE_METRICS)
        elif path == "/healthz":
            self._probe(app.healthz)
        elif path == "/readyz":
            self._probe(app.readyz)
        else:
            self._send(404, b"not found\n")

    def _probe(self, probe: Probe) -> None:
        try:
            ok, text = probe()
        except Exception:
            log.exception("the %s probe failed", urlsplit(self.path).path)
            ok, text = False, "the probe failed"
        self._send(200 if ok else 503, f"{text}\n".encode())

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self._send_parts(status, (body,), CONTENT_TYPE_TEXT, extra)

    def _send_parts(
        self,
        status: int,
        parts: tuple[bytes, ...],
        content_type: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(part) for part in parts)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        for part in parts:
            self.wfile.write(part)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line is outside text: quoted, so it cannot forge a log line.
        log.debug("%s %s", self.address_string(), quote(format % args))


_CHALLENGE = 'Basic realm="costwatch", charset="UTF-8"'


def authorized(header: str | None, credentials: bytes) -> bool:
    """Whether an Authorization header carries exactly `credentials` (user:password)."""
    if header is None:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, credentials)


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding header accepts gzip (named, with a q-value above 0)."""
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        return quality > 0
    return False
