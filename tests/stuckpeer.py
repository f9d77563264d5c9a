"""A peer that hangs: a loopback TCP server that accepts and then never finishes answering.

- `silent`: reads the request and never answers (the connection stays open).
- `trickle`: answers one byte every `interval` seconds, forever: a status line, then an endless
  header, so no read ever waits long enough for a read timeout and the response never ends.
- `trickle_download`: answers an export POST at once, with a download URL on itself, and then
  serves that download one byte every `interval` seconds (a Content-Length it never reaches).

Every connection is held until `stop()`; `connections` counts those accepted.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from types import TracebackType
from typing import Literal

Mode = Literal["silent", "trickle", "trickle_download"]


class StuckPeer:
    def __init__(self, mode: Mode, *, interval: float = 1.0) -> None:
        self.mode = mode
        self.interval = interval
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepted = 0

    @property
    def base_url(self) -> str:
        assert self._listener is not None, "start the peer first"
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return self._accepted

    def start(self) -> StuckPeer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=10)
        if self._listener is not None:
            self._listener.close()
        self._listener = None

    def __enter__(self) -> StuckPeer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            ready, _, _ = select.select([listener], [], [], 0.05)
            if not ready:
                continue
            connection, _ = listener.accept()
            with self._lock:
                self._accepted += 1
            self._spawn(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                request = _read_head(connection, self._stopping)
                if self.mode == "silent":
                    self._stopping.wait()
                elif self.mode == "trickle":
                    self._trickle(connection, b"HTTP/1.1 200 OK\r\nX-Slow: ")
                elif request.startswith(b"GET"):
                    head = "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: 1000000"
                    self._trickle(connection, head.encode() + b"\r\n\r\n")
                else:
                    connection.sendall(self._export_answer())
                    self._stopping.wait()
            except OSError:
                pass  # the client gave up and closed its end: what a deadline is for

    def _trickle(self, connection: socket.socket, head: bytes) -> None:
        """`head` at once, then one byte every `interval` until `stop()`."""
        connection.sendall(head)
        while not self._stopping.wait(self.interval):
            connection.sendall(b"a")

    def _export_answer(self) -> bytes:
        body = json.dumps(
            {
                "success": True,
                "data": {"downloadUrl": f"{self.base_url}/download.csv", "recordCount": 1},
            }
        ).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body


def _read_head(connection: socket.socket, stopping: threading.Event) -> bytes:
    """The request line and headers (and whatever body came with them)."""
    data = b""
    connection.settimeout(0.1)
    while b"\r\n\r\n" not in data and not stopping.is_set():
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data
