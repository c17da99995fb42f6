"""A misbehaving HTTP server on 127.0.0.1 for the download tests (tests/test_hub.py, tests/test_fuzz.py).

Each request gets the answer of its path's route (or the default one): raw bytes, a drip until the test
releases it, an endless body. Every loop is bounded — by the client going away, by :attr:`release`, and
by a cap on bytes and seconds — so that a test whose client never gives up fails instead of hanging forever.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

# Caps on every answer: more than any test needs, far less than "forever".
MAX_SECONDS = 120.0
MAX_BYTES = 256 << 20

Answer = Callable[[socket.socket, "HostileServer"], None]


def raw(data: bytes) -> Answer:
    """Send ``data`` and close."""
    def answer(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(data)
    return answer


def head(status: str = "200 OK", length: int | None = None, extra: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def _until(server: HostileServer, pieces: Iterator[bytes], interval: float = 0.0) -> Callable[
        [socket.socket], None]:
    def send(conn: socket.socket) -> None:
        start, sent = time.monotonic(), 0
        for piece in pieces:
            if server.release.is_set() or time.monotonic() - start > MAX_SECONDS or sent > MAX_BYTES:
                return
            conn.sendall(piece)
            sent += len(piece)
            if interval:
                server.release.wait(interval)
    return send


def drip(prefix: bytes, interval: float = 0.05) -> Answer:
    """Send ``prefix``, then one byte (``x``) every ``interval`` seconds until released."""
    def answer(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(prefix)
        server.stalled.set()
        _until(server, iter(lambda: b"x", None), interval)(conn)
    return answer


def endless(prefix: bytes, piece: bytes = b"\0" * 65536) -> Answer:
    """Send ``prefix``, then ``piece`` over and over."""
    def answer(conn: socket.socket, server: HostileServer) -> None:
        conn.sendall(prefix)
        _until(server, iter(lambda: piece, None))(conn)
    return answer


def serve_file(data: bytes) -> Answer:
    """A correct answer: ``data`` with its length."""
    return raw(head(length=len(data)) + data)


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        conn = self.request
        conn.settimeout(10)
        request = b""
        try:
            while b"\r\n\r\n" not in request and len(request) < 65536:
                got = conn.recv(4096)
                if not got:
                    return
                request += got
        except OSError:
            return
        line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
        path = line[1] if len(line) > 1 else ""
        owner = self.server.owner
        owner.requests.append(path)
        answer = owner.routes.get(path, owner.default)
        try:
            answer(conn, owner)
        except OSError:  # the client went away: the answer ends
            pass


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HostileServer


class HostileServer:
    """``with HostileServer() as s: s.default = raw(...)``; ``s.url`` is its base URL."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.default: Answer = raw(b"")
        self.requests: list[str] = []
        self.release = threading.Event()
        self.stalled = threading.Event()
        self._server = _TCPServer(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
