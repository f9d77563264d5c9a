"""The HTTP endpoint: `/metrics`, `/healthz` and `/readyz` on one stdlib `ThreadingHTTPServer`.

- `GET /metrics` serves `Metrics.exposition_parts()` as `text/plain; version=0.0.4`: stored
  bytes plus the small live registry, so a scrape does no work proportional to the keys.
- `GET /healthz` and `GET /readyz` call their probe: `(True, text)` answers 200 with the text,
  `(False, reason)` 503 with the reason (a probe that raises counts as not ok). 404 elsewhere.
- Optional basic auth covers every path (401 with `WWW-Authenticate` when missing or wrong;
  compared with `hmac.compare_digest`). The password is never logged; request lines go to
  this module's logger at DEBUG and never carry headers.
- Optional TLS: the handshake runs in the connection's own thread, never in the accept loop,
  so a slow or plain-text client cannot stall other scrapes.
- The address family follows the host, so `::` listens on IPv6 (and IPv4 where the system
  maps it). Handler threads are daemon threads with a socket timeout; `stop()` shuts the loop
  down, closes the listening socket and joins the serving thread.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from costwatch.metrics import Metrics

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_TEXT = "text/plain; charset=utf-8"
_TIMEOUT_SECONDS = 30.0  # per connection: TLS handshake, request, response


@dataclass(frozen=True)
class _App:
    """What the handler serves."""

    metrics: Metrics
    healthz: Probe
    readyz: Probe
    credentials: bytes | None  # b"user:password" when basic auth is on


class MetricsServer:
    """`/metrics` and the probes on `host:port`, served from a background thread."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        healthz: Probe,
        readyz: Probe,
        basic_auth: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        credentials = None
        if basic_auth is not None:
            credentials = f"{basic_auth[0]}:{basic_auth[1]}".encode()
        self._app = _App(metrics, healthz, readyz, credentials)
        self.host = host
        self.port = port  # the actual port once started (port=0 picks a free one)
        self._tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def start(self) -> MetricsServer:
        if self._server is not None:
            raise RuntimeError("the metrics server is already running")
        context = _tls_context(*self._tls) if self._tls is not None else None
        server = _Server((self.host, self.port), self._app, context)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="costwatch-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on %s://%s:%d/metrics", self.scheme, _bracketed(self.host), self.port)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: _App, tls: ssl.SSLContext | None) -> None:
        self.address_family = _family(address[0], address[1])
        self.app = app
        self.tls = tls
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN (a DNS lookup) for nothing.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(_TIMEOUT_SECONDS)
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        with self.tls.wrap_socket(request, server_side=True) as secure:
            super().finish_request(secure, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up, time out or fail the TLS handshake: not the server's problem.
        log.debug("metrics request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "costwatch"
    sys_version = ""

    def do_GET(self) -> None:
        app = self.server.app
        if app.credentials is not None and not _authorized(
            self.headers.get("Authorization"), app.credentials
        ):
            self._send(401, b"unauthorized\n", extra={"WWW-Authenticate": _CHALLENGE})
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send_parts(200, app.metrics.exposition_parts(), CONTENT_TYPE_METRICS)
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
        log.debug("%s " + format, self.address_string(), *args)


_CHALLENGE = 'Basic realm="costwatch", charset="UTF-8"'


def _authorized(header: str | None, credentials: bytes) -> bool:
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


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


def _family(host: str, port: int) -> socket.AddressFamily:
    """The address family to listen on `host` with (IPv6 for `::`)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
