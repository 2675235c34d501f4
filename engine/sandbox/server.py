"""The HTTP/1.1 plumbing on loopback: the threading server, writing answers (exact
``Content-Length``, cut on purpose for faults), and the server's lifecycle.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from engine.errors import InputError
from engine.sandbox.replies import Reply

# The simulator's logger, as before the split: log lines keep their name.
_log = logging.getLogger("engine.sandbox.simulator")

_MAX_BODY = 1 << 20
_WRITE_BATCH = 1 << 18


# --- HTTP plumbing --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Threading server that hands each request to its simulator and can cut its open connections."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], serve_request: Callable[[BaseHTTPRequestHandler], None]
    ) -> None:
        self.serve_request = serve_request
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                _log.debug("connection already closed")

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is normal here (timeouts, drops).
        _log.debug("error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flip-sim/1"
    timeout = 30  # seconds an idle keep-alive connection is kept

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        cast(_Server, self.server).serve_request(self)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


def read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request body, or ``None`` when it is too large to accept."""
    length = int(handler.headers.get("Content-Length") or 0)
    if length > _MAX_BODY:
        return None
    return handler.rfile.read(length) if length > 0 else b""


def write_reply(handler: BaseHTTPRequestHandler, reply: Reply, *, cut: bool = False) -> None:
    """Send ``reply``; with ``cut`` promise the whole body but send half, then hang up.

    The head goes out in the same write as the first body bytes: a separate small write
    would meet Nagle's algorithm and the peer's delayed ACK (40 ms per answer).
    """
    total = sum(len(p) for p in reply.parts)
    headers = [
        ("Server", handler.version_string()),
        ("Date", formatdate(reply.date, usegmt=True)),
        ("Content-Type", reply.content_type),
        ("Content-Length", str(total)),
        *reply.headers,
    ]
    if cut:
        headers.append(("Connection", "close"))
        handler.close_connection = True
    status = HTTPStatus(reply.status)
    lines = [f"{handler.protocol_version} {status.value} {status.phrase}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    budget = total // 2 if cut else total
    for chunk in _batches(reply.parts, budget, head):
        handler.wfile.write(chunk)


def _batches(parts: list[bytes], budget: int, head: bytes) -> Iterator[bytes]:
    """``head`` then the parts, joined into writes of ~256 kB, stopping after ``budget``
    body bytes."""
    batch: list[bytes] = [head]
    size = len(head)
    for part in parts:
        if budget <= 0:
            break
        piece = part[:budget]
        budget -= len(piece)
        batch.append(piece)
        size += len(piece)
        if size >= _WRITE_BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def hang_up(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        _log.debug("connection already closed")


class LoopbackServer:
    """The HTTP server's lifecycle: bind, serve (from a background thread or the calling
    one), stop. ``stopping`` is set while stopping, to wake requests that wait."""

    def __init__(self, host: str, port: int, serve_request: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self._address = (host, port)
        self._serve_request = serve_request
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the port and serve from a background thread."""
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Bind and serve in the calling thread until :meth:`stop` or KeyboardInterrupt."""
        server = self._bind()
        try:
            if on_ready is not None:
                on_ready()
            server.serve_forever(poll_interval=0.2)
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, cut open connections and wake hanging requests."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
        self._close()

    def _bind(self) -> _Server:
        if self._server is not None:
            raise InputError("the simulator is already running")
        self.stopping.clear()
        host, port = self._address
        try:
            self._server = _Server(self._address, self._serve_request)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}") from exc
        return self._server

    def _close(self) -> None:
        server, self._server, self._thread = self._server, None, None
        self.stopping.set()
        if server is not None:
            server.cut_connections()
            server.server_close()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise InputError("the simulator is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
