"""The HTTP endpoint: `/metrics`, `/healthz` and `/readyz`, with bounded threads and deadlines.

- Each request is answered by `http.py`'s handler (routes, probes, basic auth); the server
  serves what it is handed (a callable returning the exposition), never the metrics object.
- Optional TLS. The address family follows the host, so `::` listens on IPv6 (and IPv4 where
  the system maps it).

Bounds: one thread (the loop) accepts connections and reads each request head without
blocking, TLS handshake included; only a connection that has sent a whole head goes to one of
`workers` threads, which answers it and closes it (one request per connection). So idle,
half-open and slow ("slowloris") connections cost no thread: each has `timeout` seconds from
accept to its whole head (a deadline for the whole, not per recv), at most `max_pending` are
held (the oldest is closed for a new one), a head over 16 KiB is refused with 431, and at most
`4 * workers` complete requests wait for a worker (503 beyond). An answer is sent within
`timeout` seconds too. `stop()` closes every connection, the loop and the workers.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from costwatch.metrics.http import (
    MAX_HEAD_BYTES,
    App,
    Connection,
    Exposition,
    Handler,
    Limits,
    Probe,
)

log = logging.getLogger("costwatch.httpserver")

_TICK = 0.5  # seconds: how often the loop looks at deadlines and for stop()
_REFUSED = {
    431: b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n",
    503: b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
}


_LIMITS = Limits()  # frozen, so sharing it is safe


def _unbound() -> tuple[bool, str]:
    return False, "starting"


class MetricsServer:
    """`/metrics` and the probes on `host:port`, served from background threads.

    `exposition` returns the bytes `/metrics` serves (`Metrics.exposition_parts`), `gzipped`
    the same as one gzip stream for scrapers that accept it (`Metrics.exposition_gzip`). The probes
    may be given later, before `start()`, by whoever answers them (`bind_probes`: the daemon
    is made from a server it is given); until then both answer 503 "starting".
    """

    def __init__(
        self,
        exposition: Exposition,
        *,
        host: str,
        port: int,
        healthz: Probe = _unbound,
        readyz: Probe = _unbound,
        basic_auth: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        limits: Limits = _LIMITS,
        gzipped: Exposition | None = None,
    ) -> None:
        credentials = None
        if basic_auth is not None:
            credentials = f"{basic_auth[0]}:{basic_auth[1]}".encode()
        self._app = App(exposition, healthz, readyz, credentials, gzipped)
        self.host = host
        self.port = port  # the actual port once started (port=0 picks a free one)
        self._tls = tls
        self._limits = limits
        self._server: _Server | None = None

    def bind_probes(self, *, healthz: Probe, readyz: Probe) -> None:
        """Answer `/healthz` and `/readyz` with these (before `start()`)."""
        if self._server is not None:
            raise RuntimeError("the probes are bound before the server starts")
        self._app = replace(self._app, healthz=healthz, readyz=readyz)

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def start(self) -> MetricsServer:
        if self._server is not None:
            raise RuntimeError("the metrics server is already running")
        context = _tls_context(*self._tls) if self._tls is not None else None
        server = _Server((self.host, self.port), self._app, context, self._limits)
        self.port = server.port
        self._server = server.start()
        log.info("metrics on %s://%s:%d/metrics", self.scheme, _bracketed(self.host), self.port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(eq=False)
class _Server:
    """The listening socket, the loop reading request heads, and the workers answering them."""

    address: tuple[str, int]
    app: App
    tls: ssl.SSLContext | None
    limits: Limits
    port: int = 0
    _listener: socket.socket = field(init=False)
    _selector: selectors.BaseSelector = field(init=False, default_factory=selectors.DefaultSelector)
    _pending: dict[socket.socket, Connection] = field(init=False, default_factory=dict)
    _answering: set[Connection] = field(init=False, default_factory=set)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _queue: queue.Queue[Connection] = field(init=False)
    _stopping: threading.Event = field(init=False, default_factory=threading.Event)
    _threads: list[threading.Thread] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        host, port = self.address
        self._listener = socket.socket(_family(host, port), socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(self.limits.max_pending)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.port = int(self._listener.getsockname()[1])
        self._queue = queue.Queue(maxsize=4 * self.limits.workers)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)

    def start(self) -> _Server:
        self._spawn(self._loop, "costwatch-metrics")
        for number in range(self.limits.workers):
            self._spawn(self._work, f"costwatch-metrics-{number + 1}")
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Close the listener and every connection; the threads end within a tick."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        with self._lock:
            answering = list(self._answering)
        for connection in answering:  # a blocked send ends at once
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5 * _TICK)
        self._wake_writer.close()

    # -- the loop: accept, handshake, read heads -----------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, _events in self._selector.select(self._wait()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_reader:
                        continue
                    else:
                        self._advance(key.data)
                self._expire(time.monotonic())
        finally:
            for connection in list(self._pending.values()):
                self._drop(connection)
            self._selector.close()
            self._listener.close()
            self._wake_reader.close()

    def _wait(self) -> float:
        oldest = next(iter(self._pending.values()), None)
        if oldest is None:
            return _TICK
        return max(0.0, min(_TICK, oldest.deadline - time.monotonic()))

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of descriptors, say: the pending ones time out
                log.debug("cannot accept a metrics connection: %s", error.strerror or error)
                return
            if len(self._pending) >= self.limits.max_pending:
                self._drop(next(iter(self._pending.values())))  # the oldest gives way
            self._register(sock, address)

    def _register(self, sock: socket.socket, address: Any) -> None:
        sock.setblocking(False)
        connection = Connection(sock, address, time.monotonic() + self.limits.timeout)
        if self.tls is not None:
            try:
                connection.sock = self.tls.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ssl.SSLError):
                connection.close()
                return
            connection.handshaking = True
        self._pending[connection.sock] = connection
        self._selector.register(connection.sock, connection.events, connection)

    def _advance(self, connection: Connection) -> None:
        """Take what the connection has sent, without waiting; hand it on when whole."""
        try:
            if connection.handshaking:
                assert isinstance(connection.sock, ssl.SSLSocket)
                connection.sock.do_handshake()
                connection.handshaking = False
            while True:
                chunk = connection.sock.recv(MAX_HEAD_BYTES + 1 - len(connection.head))
                if not chunk:
                    self._drop(connection)
                    return
                connection.head += chunk
                if b"\r\n\r\n" in connection.head or b"\n\n" in connection.head:
                    self._hand_on(connection)
                    return
                if len(connection.head) > MAX_HEAD_BYTES:
                    self._refuse(connection, 431)
                    return
        except ssl.SSLWantWriteError:
            self._want(connection, selectors.EVENT_WRITE)
        except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            self._want(connection, selectors.EVENT_READ)
        except (OSError, ssl.SSLError, ValueError):  # reset, a bad handshake, plain text on TLS
            log.debug("metrics connection from %s failed", connection.address, exc_info=True)
            self._drop(connection)

    def _want(self, connection: Connection, events: int) -> None:
        if connection.events != events:
            connection.events = events
            self._selector.modify(connection.sock, events, connection)

    def _expire(self, now: float) -> None:
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.deadline > now:
                return
            log.debug("metrics connection from %s timed out", oldest.address)
            self._drop(oldest)

    def _forget(self, connection: Connection) -> None:
        if self._pending.pop(connection.sock, None) is not None:
            self._selector.unregister(connection.sock)

    def _drop(self, connection: Connection) -> None:
        self._forget(connection)
        connection.close()

    def _refuse(self, connection: Connection, status: int) -> None:
        self._forget(connection)
        with contextlib.suppress(OSError, ssl.SSLError, ValueError):
            connection.sock.send(_REFUSED[status])  # a few bytes: the socket buffer takes them
        connection.close()

    def _hand_on(self, connection: Connection) -> None:
        self._forget(connection)
        try:
            self._queue.put_nowait(connection)
        except queue.Full:
            self._refuse(connection, 503)

    # -- the workers: answer one request each --------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                connection = self._queue.get(timeout=_TICK)
            except queue.Empty:
                continue
            with self._lock:
                self._answering.add(connection)
            try:
                connection.sock.setblocking(True)
                # BaseRequestHandler only stores its request and server: these are ours.
                Handler(connection, connection.address, self)  # type: ignore[arg-type]
            except Exception:  # a client that hangs up or times out: not the server's problem
                log.debug("metrics request from %s failed", connection.address, exc_info=True)
            finally:
                with self._lock:
                    self._answering.discard(connection)
                connection.close()


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
