"""One httpx request with an end-to-end deadline that a shutdown can cut short, mid-read.

httpx's timeouts bound each socket operation, not the request: a peer that trickles a byte a
second never trips a 60 s read timeout, and a request blocked on a silent peer cannot be told
to stop. `bounded(seconds, stop)` gives one request both:

- the request's per-operation timeouts are capped at `seconds`, so a connect never outlasts
  the deadline and a silent peer ends in httpx's own timeout, which says what it was;
- the request's sockets, learnt through httpcore's `trace` extension as they connect, are shut
  down when `stop` is set, and when a peer that keeps sending is still at it `SLACK_SECONDS`
  after the deadline. A blocked read wakes at once; the request fails, and `bounded` raises
  `Stopping` or `DeadlineExceeded` in its place.

Pass `exchange.extensions` and `exchange.timeout(client.timeout)` to the request, and ask for
`Connection: close` so a kept-alive connection (whose socket the trace does not report) is never
reused. A connect in progress (and its DNS lookup) cannot be aborted: it is bounded by the
capped connect timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from costwatch.deadline import MIN_TIMEOUT, StopSignal
from costwatch.errors import Stopping

__all__ = ["DeadlineExceeded", "Exchange", "bounded"]

_CONNECTED = (".connect_tcp.complete", ".start_tls.complete")
SLACK_SECONDS = 1.0  # past the deadline, so the timeouts capped at it fire first when they can


class DeadlineExceeded(Exception):
    """The request did not finish within its `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"did not finish within {seconds:.1f}s")
        self.seconds = seconds


class Exchange:
    """The sockets of one request, and why (if at all) they were shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.stopped = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._over = False

    @property
    def extensions(self) -> dict[str, Any]:
        return {"trace": self._trace}

    def timeout(self, default: httpx.Timeout) -> httpx.Timeout:
        """`default` with every part capped at the time this request has."""

        def cap(value: float | None) -> float:
            return self.seconds if value is None else min(value, self.seconds)

        return httpx.Timeout(
            connect=cap(default.connect),
            read=cap(default.read),
            write=cap(default.write),
            pool=cap(default.pool),
        )

    def expire(self) -> None:
        self._abort("expired")

    def stop(self) -> None:
        self._abort("stopped")

    def close(self) -> None:
        """The request is over: its sockets are httpcore's to close, never to be touched."""
        with self._lock:
            self._over = True
            self._sockets.clear()

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith(_CONNECTED):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._over:
                return
            self._sockets.append(sock)
            aborted = self.expired or self.stopped
        if aborted:  # the deadline or the stop came while connecting
            _shut(sock)

    def _abort(self, why: str) -> None:
        with self._lock:
            if self._over:
                return
            setattr(self, why, True)
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Wake whatever is blocked on `sock`: shutdown, not close (a close leaves a blocked read
    waiting). The plain socket's method, so an SSL socket keeps its state for httpcore."""
    with contextlib.suppress(OSError):  # already closed, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextmanager
def bounded(seconds: float, stop: StopSignal) -> Iterator[Exchange]:
    """A request that ends within `seconds` or when `stop` is set (see the module docstring)."""
    exchange = Exchange(max(seconds, MIN_TIMEOUT))  # a 0 timeout means non-blocking
    timer = threading.Timer(exchange.seconds + SLACK_SECONDS, exchange.expire)
    timer.daemon = True
    timer.start()
    try:
        with stop.on_stop(exchange.stop):
            yield exchange
    except Exception as error:
        if exchange.stopped:
            raise Stopping("the daemon is shutting down") from error
        if exchange.expired:
            raise DeadlineExceeded(exchange.seconds) from error
        raise
    finally:
        timer.cancel()
        exchange.close()
